"""Audio reading (soundfile) and resampling (soxr), with errors that say why."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the reason."""


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file; raises AudioError for a missing, directory or non-audio path."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file {p} does not exist")
    if p.is_dir():
        raise AudioError(f"audio path {p} is a directory, not a file")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"audio file {p} is not readable audio: {exc}") from exc
    if info.frames <= 0:
        raise AudioError(f"audio file {p} is empty (0 samples)")
    if info.format == "WAV":
        _check_riff_size(p)
    return info


def _check_riff_size(p: Path) -> None:
    """libsndfile silently reads a cut WAV file as a shorter one; its RIFF header still
    gives the full size, so compare."""
    with p.open("rb") as f:
        head = f.read(8)
    if head[:4] == b"RIFF":
        declared = int.from_bytes(head[4:8], "little") + 8
        actual = p.stat().st_size
        if declared > actual:
            raise AudioError(f"audio file {p} is truncated: its header declares {declared} bytes, "
                             f"the file has {actual}")


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate``; returns shape (n,).

    Multi-channel audio is averaged to mono; other rates are resampled with soxr.
    Raises AudioError for unreadable, empty, truncated or non-finite audio.
    """
    info = audio_info(path)
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"audio file {path} cannot be decoded (truncated or corrupt?): {exc}") from exc
    if wav.shape[0] == 0:
        raise AudioError(f"audio file {path} is empty (0 samples)")
    if wav.shape[0] < info.frames * 0.99:
        raise AudioError(f"audio file {path} is truncated: header says {info.frames} samples, read {wav.shape[0]}")
    if not np.isfinite(wav).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)
