"""Audio reading (soundfile) and resampling (soxr), with errors that say why."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the reason."""


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (or of a file-like object of encoded audio); raises
    AudioError for a missing, directory or non-audio path."""
    if not isinstance(path, (str, Path)):
        return _stream_info(path)
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


def _stream_info(f) -> sf._SoundFileInfo:
    name = getattr(f, "name", "embedded audio")
    try:
        f.seek(0)
        info = sf.info(f)
    except Exception as exc:
        raise AudioError(f"audio {name} is not readable audio: {exc}") from exc
    if info.frames <= 0:
        raise AudioError(f"audio {name} is empty (0 samples)")
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


def load_audio(path: str | Path, sample_rate: int, *, start: float = 0.0, duration: float | None = None,
               channel: int | None = None) -> np.ndarray:
    """Read ``path`` (a file, or a file-like object of encoded audio) as mono float32 at
    ``sample_rate``; returns shape (n,).

    ``start`` / ``duration`` (seconds; ``duration=None`` reads to the end) cut a span of the
    file (Kaldi segments, Lhotse supervisions); ``channel`` picks one channel, ``None``
    averages them. Other rates are resampled with soxr. Raises AudioError for unreadable,
    empty, truncated or non-finite audio, and for a span or channel the file does not have.
    """
    info = audio_info(path)
    name = path if isinstance(path, (str, Path)) else getattr(path, "name", "embedded audio")
    first = int(round(start * info.samplerate))
    count = -1 if duration is None else int(round(duration * info.samplerate))
    if start < 0 or first >= info.frames or (count >= 0 and first + count > info.frames + round(0.01 * info.samplerate)):
        end = "the end" if duration is None else f"{start + duration:.3f}s"
        raise AudioError(f"audio file {name}: span {start:.3f}s to {end} is outside its "
                         f"{info.frames / info.samplerate:.3f}s")
    if channel is not None and not 0 <= channel < info.channels:
        raise AudioError(f"audio file {name} has {info.channels} channel(s), channel {channel} asked")
    try:
        if not isinstance(path, (str, Path)):
            path.seek(0)
        wav, sr = sf.read(path if not isinstance(path, Path) else str(path), start=first,
                          frames=min(count, info.frames - first) if count >= 0 else -1, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"audio file {name} cannot be decoded (truncated or corrupt?): {exc}") from exc
    expected = (info.frames - first) if count < 0 else min(count, info.frames - first)
    if wav.shape[0] == 0:
        raise AudioError(f"audio file {name} is empty (0 samples)")
    if wav.shape[0] < expected * 0.99:
        raise AudioError(f"audio file {name} is truncated: header says {expected} samples, read {wav.shape[0]}")
    if not np.isfinite(wav).all():
        raise AudioError(f"audio file {name} contains NaN or infinite samples")
    mono = wav[:, channel] if channel is not None else (wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0])
    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)
