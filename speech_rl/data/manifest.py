"""JSONL manifests (DESIGN.md data contract) with row validation.

One utterance a line: ``{"id": str, "audio": path, "text": str, "duration": float,
"keywords": [str, ...] (optional), "speaker": str (optional)}``; paths are relative to
the manifest's folder unless absolute. Every bad row is reported by id (or line
number) with the reason; ``on_bad_row="skip"`` drops and counts them, ``"error"`` stops.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speech_rl.data.audio import AudioError, audio_info, load_audio

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A manifest (or one of its rows) cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path            # resolved path
    text: str
    duration: float        # seconds, from the audio header
    keywords: tuple[str, ...] | None = None
    speaker: str | None = None


@dataclass
class BadRows:
    """Rows dropped from a manifest, with reasons."""

    manifest: Path
    rows: list[tuple[str, str]] = field(default_factory=list)     # (id or "line N", reason)

    def __len__(self) -> int:
        return len(self.rows)

    def summary(self, limit: int = 10) -> str:
        head = "; ".join(f"{who}: {why}" for who, why in self.rows[:limit])
        more = f" (+{len(self.rows) - limit} more)" if len(self.rows) > limit else ""
        return f"{len(self.rows)} bad row(s) in {self.manifest}: {head}{more}"


def _check_fields(row: object) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    for key, typ in (("id", str), ("audio", str), ("text", str)):
        if key not in row:
            return f"missing field {key!r}"
        if not isinstance(row[key], typ):
            return f"field {key!r} must be {typ.__name__}, got {type(row[key]).__name__}"
    if not row["id"].strip():
        return "empty id"
    if not row["text"].strip():
        return "empty text"
    if "duration" in row and (isinstance(row["duration"], bool) or not isinstance(row["duration"], (int, float))
                              or not math.isfinite(row["duration"]) or row["duration"] <= 0):
        return f"field 'duration' must be a positive number, got {row['duration']!r}"
    kw = row.get("keywords")
    if kw is not None and (not isinstance(kw, list) or not all(isinstance(k, str) for k in kw)):
        return f"field 'keywords' must be a list of strings, got {kw!r}"
    if row.get("speaker") is not None and not isinstance(row["speaker"], str):
        return f"field 'speaker' must be str, got {type(row['speaker']).__name__}"
    return None


def read_manifest(path: str | Path, *, on_bad_row: str = "error", check_audio: str = "header",
                  sample_rate: int = 16000, max_duration: float | None = None,
                  min_duration: float = 0.05) -> tuple[list[Utterance], BadRows]:
    """Read and validate a manifest.

    Args:
        on_bad_row: ``"error"`` raises ManifestError at the first bad row; ``"skip"``
            drops bad rows and reports them in the returned BadRows.
        check_audio: ``"header"`` opens each file's header; ``"full"`` also decodes it
            (finds truncated and NaN audio up front); ``"none"`` only checks the fields.
        max_duration / min_duration: bounds in seconds; rows outside are bad rows.

    Returns the good utterances and the bad rows.
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if check_audio not in ("none", "header", "full"):
        raise ValueError(f"check_audio must be 'none', 'header' or 'full', got {check_audio!r}")
    mpath = Path(path)
    if not mpath.is_file():
        raise ManifestError(f"manifest {mpath} does not exist" if not mpath.exists() else
                            f"manifest {mpath} is not a file")
    base = mpath.resolve().parent
    bad = BadRows(mpath)
    good: list[Utterance] = []
    seen: Counter[str] = Counter()

    def reject(who: str, why: str) -> None:
        if on_bad_row == "error":
            raise ManifestError(f"manifest {mpath}, {who}: {why}")
        bad.rows.append((who, why))

    try:
        lines = mpath.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {mpath} is not UTF-8 text: {exc}") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        utt = _utterance(line, lineno, base, seen, check_audio, sample_rate, min_duration, max_duration)
        if isinstance(utt, Utterance):
            good.append(utt)
        else:
            reject(*utt)
    if bad.rows:
        log.warning(bad.summary())
    if not good:
        raise ManifestError(f"manifest {mpath} has no usable rows" + (f"; {bad.summary()}" if bad.rows else ""))
    return good, bad


def _utterance(line: str, lineno: int, base: Path, seen: Counter, check_audio: str, sample_rate: int,
               min_duration: float, max_duration: float | None) -> Utterance | tuple[str, str]:
    """One manifest line -> its Utterance, or (who, why) naming the row and what is wrong
    with it. ``seen`` counts ids across the manifest (duplicates are bad rows)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"line {lineno}", f"malformed JSON ({exc.msg} at column {exc.colno})"
    why = _check_fields(row)
    if why:
        uid = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), str) else None
        return (f"id {uid!r}" if uid is not None else f"line {lineno}"), why
    uid = row["id"]
    seen[uid] += 1
    if seen[uid] > 1:
        return f"id {uid!r} (line {lineno})", "duplicate id"
    audio = Path(row["audio"]).expanduser()
    audio = audio if audio.is_absolute() else base / audio
    duration = float(row.get("duration") or 0.0)
    try:
        if check_audio != "none":
            info = audio_info(audio)
            duration = info.frames / info.samplerate
        if check_audio == "full":
            duration = len(load_audio(audio, sample_rate)) / sample_rate
    except AudioError as exc:
        return f"id {uid!r}", str(exc)
    if duration <= 0:
        return f"id {uid!r}", "no duration: give 'duration' or let the audio be checked"
    if duration < min_duration:
        return f"id {uid!r}", f"audio is {duration:.3f}s, shorter than min_duration {min_duration}s"
    if max_duration is not None and duration > max_duration:
        return f"id {uid!r}", f"audio is {duration:.1f}s, longer than max_duration {max_duration}s"
    return Utterance(uid, audio, row["text"], duration,
                     tuple(row["keywords"]) if row.get("keywords") is not None else None, row.get("speaker"))


def write_manifest(path: str | Path, rows: list[dict]) -> Path:
    """Write rows as JSONL atomically (temp file + rename): an existing manifest is
    never left half-written."""
    from speech_rl.atomic import atomic_open

    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return Path(path)


def utterance_audio(utt: Utterance, sample_rate: int) -> np.ndarray:
    """Load an utterance's audio, naming the utterance if it fails."""
    try:
        return load_audio(utt.audio, sample_rate)
    except AudioError as exc:
        raise ManifestError(f"utterance {utt.id!r}: {exc}") from exc
