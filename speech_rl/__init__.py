"""speech-rl: reinforcement-learning post-training of LLM-based speech systems."""
from speech_rl.torchaudio_compat import ensure_importable as _torchaudio_importable

_torchaudio_importable()       # a CUDA-linked torchaudio wheel must not break the import (extra ssl)
