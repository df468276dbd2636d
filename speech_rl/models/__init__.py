"""Models: audio encoders, projector, causal LM builder, and the AudioLLM that joins them."""
from speech_rl.models.audio_llm import AudioLLM, build_audio_llm
from speech_rl.models.encoder import ConvTransformerEncoder, WhisperAudioEncoder
from speech_rl.models.llm import build_causal_lm
from speech_rl.models.projector import Projector

__all__ = ["AudioLLM", "build_audio_llm", "ConvTransformerEncoder", "WhisperAudioEncoder", "build_causal_lm",
           "Projector"]
