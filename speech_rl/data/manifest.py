"""JSONL manifests (DESIGN.md data contract) with row validation.

One utterance a line: ``{"id": str, "audio": path, "text": str, "duration": float,
"keywords": [str, ...] (optional), "speaker": str (optional)}``; paths are relative to
the manifest's folder unless absolute. A row may name a span of a longer recording with
``"offset"`` (seconds; ``duration`` is then the span's length) and one channel of it with
``"channel"``. Every bad row is reported by id (or line number) with the reason;
``on_bad_row="skip"`` drops and counts them, ``"error"`` stops.

``read_manifest`` reads Hugging Face datasets, Kaldi data directories and Lhotse manifests
through the same rows and checks (``speech_rl.data.formats``).
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
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
    audio: Path            # resolved path, or a DatasetAudio (audio inside a Hugging Face dataset)
    text: str
    duration: float        # seconds, from the audio header (of the span when ``offset`` is given)
    keywords: tuple[str, ...] | None = None
    speaker: str | None = None
    offset: float | None = None  # a span of its recording: start in seconds (then ``duration`` long); None: whole file
    channel: int | None = None   # one channel of a multi-channel recording; None: their mean


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
        if not isinstance(row[key], typ) and not (key == "audio" and hasattr(row[key], "open")):
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
    off = row.get("offset")
    if off is not None:
        if isinstance(off, bool) or not isinstance(off, (int, float)) or not math.isfinite(off) or off < 0:
            return f"field 'offset' must be a number >= 0, got {off!r}"
    ch = row.get("channel")
    if ch is not None and (isinstance(ch, bool) or not isinstance(ch, int) or ch < 0):
        return f"field 'channel' must be an integer >= 0, got {ch!r}"
    return None


def read_manifest(path, *, on_bad_row: str = "error", check_audio: str = "header",
                  sample_rate: int = 16000, max_duration: float | None = None,
                  min_duration: float = 0.05) -> tuple[list[Utterance], BadRows]:
    """Read and validate a data set: a JSONL manifest, or any source ``formats.as_source``
    takes (a Hugging Face dataset, a Kaldi data directory, Lhotse manifests, or a mapping
    ``{path, format, split, fields}``).

    Args:
        on_bad_row: ``"error"`` raises ManifestError at the first bad row; ``"skip"``
            drops bad rows and reports them in the returned BadRows.
        check_audio: ``"header"`` opens each file's header; ``"full"`` also decodes it
            (finds truncated and NaN audio up front); ``"none"`` only checks the fields.
        max_duration / min_duration: bounds in seconds; rows outside are bad rows.

    Returns the good utterances and the bad rows.
    """
    from speech_rl.data.formats import SourceError, as_source, source_rows

    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    if check_audio not in ("none", "header", "full"):
        raise ValueError(f"check_audio must be 'none', 'header' or 'full', got {check_audio!r}")
    try:
        spec = as_source(path)
        mpath = spec.path
        if spec.format == "jsonl":
            if not mpath.is_file():
                raise ManifestError(f"manifest {mpath} is not a file")
            base, rows = mpath.resolve().parent, _jsonl_rows(mpath, spec.fields)
        else:
            base, rows = source_rows(spec)
        bad = BadRows(mpath)
        good: list[Utterance] = []
        seen: Counter[str] = Counter()
        for who, row in rows:
            utt = (who, row) if isinstance(row, str) else _utterance(row, who, base, seen, check_audio,
                                                                      sample_rate, min_duration, max_duration)
            if isinstance(utt, Utterance):
                good.append(utt)
            elif on_bad_row == "error":
                raise ManifestError(f"manifest {mpath}, {utt[0]}: {utt[1]}")
            else:
                bad.rows.append(utt)
    except SourceError as exc:
        raise ManifestError(str(exc)) from exc
    if bad.rows:
        log.warning(bad.summary())
    if not good:
        raise ManifestError(f"manifest {mpath} has no usable rows" + (f"; {bad.summary()}" if bad.rows else ""))
    return good, bad


def _jsonl_rows(mpath: Path, fields) -> "Iterator[tuple[str, dict | str]]":
    """(who, row or why it is bad) for each line of a JSONL manifest; ``fields`` renames
    the contract keys (``{"text": "sentence"}`` reads each row's ``sentence`` as its text)."""
    try:
        lines = mpath.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {mpath} is not UTF-8 text: {exc}") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {lineno}", f"malformed JSON ({exc.msg} at column {exc.colno})"
            continue
        if fields and isinstance(row, dict):
            row = {**row, **{key: row[src] for key, src in fields.items() if src in row}}
        uid = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), str) else None
        yield (f"id {uid!r}" if uid is not None else f"line {lineno}"), row


def _resolve(audio, base: Path):
    """A row's audio -> a resolved Path (relative to the manifest's folder, else to the
    working directory when it exists only there), or the DatasetAudio as it is."""
    if not isinstance(audio, str):
        return audio
    p = Path(audio).expanduser()
    if p.is_absolute():
        return p
    return base / p if (base / p).exists() or not p.exists() else p.resolve()


def _utterance(row: object, who: str, base: Path, seen: Counter, check_audio: str, sample_rate: int,
               min_duration: float, max_duration: float | None) -> Utterance | tuple[str, str]:
    """One raw row -> its Utterance, or (who, why) naming the row and what is wrong with it.
    ``seen`` counts ids across the data set (duplicates are bad rows)."""
    why = _check_fields(row)
    if why:
        return who, why
    uid = row["id"]
    seen[uid] += 1
    if seen[uid] > 1:
        return f"{who} (again)", "duplicate id"
    audio = _resolve(row["audio"], base)
    offset = float(row["offset"]) if row.get("offset") is not None else None
    start = offset or 0.0
    channel = row.get("channel")
    duration = float(row.get("duration") or 0.0)
    try:
        src = audio if isinstance(audio, Path) or check_audio == "none" else audio.open()   # a dataset cell: read once
        if check_audio != "none":
            info = audio_info(src)
            total = info.frames / info.samplerate
            if start >= total or (offset is not None and duration and start + duration > total + 0.01):
                end = f"{start + duration:.3f}s" if duration else "its end"
                return who, f"span {start:.3f}s to {end} is past the end of its recording ({total:.3f}s)"
            if channel is not None and channel >= info.channels:
                return who, f"channel {channel} asked, the recording has {info.channels}"
            duration = duration if (duration and offset is not None) else total - start
        if check_audio == "full":
            span = duration if offset is not None else None
            duration = len(load_audio(src, sample_rate, start=start, duration=span, channel=channel)) / sample_rate
    except (AudioError, ValueError) as exc:
        return who, str(exc)
    if duration <= 0:
        return who, "no duration: give 'duration' or let the audio be checked"
    if duration < min_duration:
        return who, f"audio is {duration:.3f}s, shorter than min_duration {min_duration}s"
    if max_duration is not None and duration > max_duration:
        return who, f"audio is {duration:.1f}s, longer than max_duration {max_duration}s"
    return Utterance(uid, audio, row["text"], duration,
                     tuple(row["keywords"]) if row.get("keywords") is not None else None, row.get("speaker"),
                     offset, channel)


def write_manifest(path: str | Path, rows: list[dict]) -> Path:
    """Write rows as JSONL atomically (temp file + rename): an existing manifest is
    never left half-written."""
    from speech_rl.atomic import atomic_open

    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return Path(path)


def utterance_audio(utt: Utterance, sample_rate: int) -> np.ndarray:
    """Load an utterance's audio (its span and channel), naming the utterance if it fails.
    Returns shape (n,) float32 at ``sample_rate``."""
    try:
        src = utt.audio if isinstance(utt.audio, Path) else utt.audio.open()
        span = utt.duration if utt.offset is not None else None
        return load_audio(src, sample_rate, start=utt.offset or 0.0, duration=span, channel=utt.channel)
    except (AudioError, ValueError) as exc:
        raise ManifestError(f"utterance {utt.id!r}: {exc}") from exc


def utterance_row(u: Utterance, audio_dir: str | Path | None = None) -> dict:
    """The JSONL row of an utterance, with an absolute audio path (and its ``offset`` /
    ``channel`` when it is a span of a recording). Audio that is no file of its own (inside
    a Hugging Face dataset) is written to ``audio_dir/<id>.wav`` (16-bit PCM at its own rate)."""
    if isinstance(u.audio, Path):
        audio = str(u.audio)
    else:
        if audio_dir is None:
            raise ManifestError(f"utterance {u.id!r}: its audio ({u.audio}) is inside a dataset; "
                                "give an audio folder to write it to")
        audio = str(_write_embedded(u, Path(audio_dir)))
    row = {"id": u.id, "audio": audio, "text": u.text, "duration": round(u.duration, 3)}
    if isinstance(u.audio, Path):          # a written file is the span itself, in one channel
        if u.offset is not None:
            row["offset"] = round(u.offset, 4)
            row["duration"] = round(u.duration, 4)
        if u.channel is not None:
            row["channel"] = u.channel
    if u.keywords is not None:
        row["keywords"] = list(u.keywords)
    if u.speaker is not None:
        row["speaker"] = u.speaker
    return row


def _write_embedded(u: Utterance, audio_dir: Path) -> Path:
    """Write a dataset-held utterance's audio (its span and channel) as a WAV file, atomically."""
    import soundfile as sf

    src = u.audio.open()
    rate = audio_info(src).samplerate
    wav = utterance_audio(u, rate)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in u.id)
    out = (audio_dir / f"{safe}.wav").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    sf.write(str(tmp), wav, rate, subtype="PCM_16", format="WAV")
    tmp.replace(out)
    return out
