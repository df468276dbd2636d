"""Data sources besides the project's JSONL: Hugging Face ``datasets`` (``save_to_disk``
folders and parquet), Kaldi data directories and Lhotse manifests.

Every source is read into the same raw rows as a JSONL line (DESIGN.md data contract:
``id``, ``audio``, ``text``, ``duration``, ``keywords``, ``speaker``, plus ``offset`` /
``channel`` for a span of a longer recording), which ``speech_rl.data.manifest`` then
validates with the same bad-row handling as JSONL. A source is named by its path (its
format found from what the path is) or by a mapping::

    {path: data/train, format: kaldi}                    # jsonl | hf | kaldi | lhotse | auto
    {path: cv/, format: hf, split: test, fields: {text: sentence, speaker: client_id}}

``fields`` maps a contract key to the source's column (JSONL key, HF column, Lhotse
supervision ``custom`` key for ``keywords``). Kaldi and Lhotse are read here, Hugging Face
datasets in ``speech_rl.data.hf_source``; ``speech_rl.data.export`` writes Kaldi / Lhotse.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("jsonl", "hf", "kaldi", "lhotse")
CONTRACT_KEYS = ("id", "audio", "text", "duration", "keywords", "speaker", "offset", "channel")

Row = tuple[str, "dict | str"]      # (who: id or line, the raw row or why it is bad)


class SourceError(ValueError):
    """A data source cannot be read as a whole (not one bad row): the message says which and why."""


@dataclass(frozen=True)
class SourceSpec:
    """Where a data set is and how to read it (see the module docstring)."""

    path: Path
    format: str = "auto"
    split: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    def field(self, key: str) -> str:
        return self.fields.get(key, key)

    def __str__(self) -> str:
        return str(self.path)


def as_source(source: "str | Path | Mapping | SourceSpec") -> SourceSpec:
    """A path or a mapping ``{path, format?, split?, fields?}`` (a Hydra DictConfig too) ->
    SourceSpec, with the format resolved; raises SourceError naming what is wrong."""
    if isinstance(source, SourceSpec):
        spec = source
    elif isinstance(source, (str, Path)):
        spec = SourceSpec(Path(source).expanduser())
    elif isinstance(source, Mapping) or hasattr(source, "items"):
        raw = dict(source.items())
        unknown = set(raw) - {"path", "format", "split", "fields"}
        if "path" not in raw or unknown:
            raise SourceError(f"data source {raw!r}: expected keys path, format, split, fields"
                              + (f"; unknown {sorted(unknown)}" if unknown else "; 'path' missing"))
        fields = dict(raw.get("fields") or {})
        bad = set(fields) - set(CONTRACT_KEYS)
        if bad:
            raise SourceError(f"data source {raw['path']}: fields {sorted(bad)} are not row keys {list(CONTRACT_KEYS)}")
        spec = SourceSpec(Path(str(raw["path"])).expanduser(), str(raw.get("format") or "auto"),
                          raw.get("split"), fields)
    else:
        raise SourceError(f"data source must be a path or a mapping, got {type(source).__name__}")
    if spec.format not in FORMATS + ("auto",):
        raise SourceError(f"data source {spec.path}: format {spec.format!r} is not one of {FORMATS} or 'auto'")
    if not spec.path.exists():
        raise SourceError(f"data source {spec.path} does not exist")
    if spec.format == "auto":
        spec = SourceSpec(spec.path, detect_format(spec.path), spec.split, spec.fields)
    return spec


def source_path(source) -> Path:
    """The path of a data set argument (a path, a mapping with ``path``, or a SourceSpec)."""
    if isinstance(source, (str, Path)):
        return Path(source)
    if isinstance(source, SourceSpec):
        return source.path
    if hasattr(source, "get") and source.get("path") is not None:
        return Path(str(source.get("path")))
    raise SourceError(f"data source {source!r} names no path")


def is_single_source(x) -> bool:
    """True for one data set argument (a path or a ``{path: ...}`` mapping), False for a list of them."""
    return isinstance(x, (str, Path, SourceSpec)) or (hasattr(x, "keys") and "path" in x.keys())


def detect_format(path: Path) -> str:
    """The format of a data set from what its path is: a Kaldi directory has ``wav.scp``;
    a ``datasets`` folder has ``dataset_info.json`` / ``state.json`` / ``dataset_dict.json``
    or parquet files; Lhotse manifests are ``*.jsonl.gz`` or JSONL whose rows are cuts,
    recordings or supervisions; other JSONL is the project's."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "wav.scp" in names:
            return "kaldi"
        if names & {"dataset_info.json", "state.json", "dataset_dict.json"} or any(n.endswith(".parquet") for n in names):
            return "hf"
        if any(n.endswith((".jsonl.gz", ".jsonl")) and ("cuts" in n or "supervisions" in n) for n in names):
            return "lhotse"
        raise SourceError(f"data source {path} is a directory that is neither a Kaldi data directory (wav.scp), "
                          "a Hugging Face dataset (dataset_info.json, dataset_dict.json, *.parquet) nor a folder of "
                          "Lhotse manifests (*cuts*.jsonl.gz, *supervisions*.jsonl.gz); give format: explicitly")
    if path.suffix == ".parquet":
        return "hf"
    if path.name.endswith((".jsonl.gz", ".json.gz")):
        return "lhotse"
    first = _first_json_row(path)
    if isinstance(first, dict) and (first.get("type") in ("MonoCut", "MultiCut", "MixedCut")
                                    or {"recording", "supervisions"} & set(first)
                                    or {"recording_id", "start"} <= set(first) or "sources" in first):
        return "lhotse"
    return "jsonl"


def _first_json_row(path: Path) -> object:
    """The first JSON row of a (gzipped) JSONL file; None when there is none or it is not JSON."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    return json.loads(line)
    except (OSError, ValueError):
        return None
    return None


def source_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
    """(folder that relative audio paths resolve against, raw rows) of a non-JSONL source."""
    if spec.format == "hf":
        from speech_rl.data.hf_source import hf_rows

        return hf_rows(spec)
    return {"kaldi": _kaldi_rows, "lhotse": _lhotse_rows}[spec.format](spec)


# ----------------------------------------------------------------------------- Kaldi
def _kaldi_table(path: Path, *, required: bool) -> dict[str, str]:
    """A Kaldi ``key value...`` table (``wav.scp``, ``text``, ``utt2spk``, ...) as key -> rest."""
    if not path.is_file():
        if required:
            raise SourceError(f"Kaldi data directory {path.parent} has no {path.name}")
        return {}
    table: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        if key in table:
            raise SourceError(f"{path}, line {lineno}: key {key!r} appears twice")
        table[key] = rest.strip()
    return table


def _kaldi_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
    d = spec.path
    wavs = _kaldi_table(d / "wav.scp", required=True)
    texts = _kaldi_table(d / "text", required=True)
    spk = _kaldi_table(d / "utt2spk", required=False)
    durs = _kaldi_table(d / "utt2dur", required=False)
    segs = _kaldi_table(d / "segments", required=False)

    def rows() -> Iterator[Row]:
        for uid, text in texts.items():
            row: dict = {"id": uid, "text": text}
            if segs:
                if uid not in segs:
                    yield f"id {uid!r}", "in text but not in segments"
                    continue
                parts = segs[uid].split()
                try:
                    rec, start, end = parts[0], float(parts[1]), float(parts[2])
                except (IndexError, ValueError):
                    yield f"id {uid!r}", f"segments line {segs[uid]!r} is not '<recording> <start> <end>'"
                    continue
                if end != -1 and end <= start:
                    yield f"id {uid!r}", f"segment ends at {end}s, not after its start {start}s"
                    continue
                row["offset"] = start
                if end != -1:
                    row["duration"] = end - start
            else:
                rec = uid
                if uid in durs:
                    row["duration"] = float(durs[uid])
            if rec not in wavs:
                yield f"id {uid!r}", f"no audio: recording {rec!r} is not in wav.scp"
                continue
            audio = wavs[rec]
            if audio.endswith("|") or ".ark:" in audio or audio.startswith("-"):
                yield f"id {uid!r}", (f"wav.scp entry {audio!r} is a pipe command or an archive offset; "
                                      "only plain audio file paths are read (extract the audio to files)")
                continue
            row["audio"] = audio
            if uid in spk:
                row["speaker"] = spk[uid]
            yield f"id {uid!r}", row

    return d, rows()


# ----------------------------------------------------------------------------- Lhotse
def require_lhotse():
    try:
        import lhotse
    except ImportError as exc:
        raise SourceError("reading Lhotse manifests needs lhotse: pip install -e '.[formats]'") from exc
    return lhotse


def _lhotse_files(path: Path) -> tuple[Path | None, Path | None, Path | None]:
    """(cuts, recordings, supervisions) manifests named by ``path`` (a file or a folder)."""
    if path.is_file():
        kind = _lhotse_kind(path)
        if kind == "cuts":
            return path, None, None
        if kind == "supervisions":
            rec = path.with_name(path.name.replace("supervisions", "recordings"))
            if rec == path or not rec.is_file():
                raise SourceError(f"Lhotse supervisions {path}: its recordings manifest {rec.name} is not beside it")
            return None, rec, path
        raise SourceError(f"Lhotse manifest {path} holds {kind}; give a cut set or a supervisions manifest")
    found = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl.gz", ".jsonl")))
    cuts = [p for p in found if "cuts" in p.name]
    sups = [p for p in found if "supervisions" in p.name]
    if len(cuts) == 1:
        return cuts[0], None, None
    if len(sups) == 1:
        return _lhotse_files(sups[0])
    raise SourceError(f"Lhotse folder {path}: expected one cut set or one supervisions manifest, found "
                      f"{[p.name for p in cuts + sups]}; name the file")


def _lhotse_kind(path: Path) -> str:
    first = _first_json_row(path)
    if not isinstance(first, dict):
        raise SourceError(f"Lhotse manifest {path} cannot be read: no JSON object in its first row")
    if "supervisions" in first or first.get("type", "").endswith("Cut"):
        return "cuts"
    if "sources" in first:
        return "recordings"
    if "recording_id" in first:
        return "supervisions"
    raise SourceError(f"Lhotse manifest {path}: its first row is neither a cut, a recording nor a supervision")


def _lhotse_audio(recording) -> str | tuple[str, str]:
    """A recording's audio file path, or ("", why) for sources speech-rl does not read."""
    if len(recording.sources) != 1 or recording.sources[0].type != "file":
        kinds = [s.type for s in recording.sources]
        return ("", f"recording {recording.id!r} has sources {kinds}; only one 'file' source is read")
    return recording.sources[0].source


def _lhotse_row(uid: str, recording, start: float, duration: float, channel, supervisions,
                spec: SourceSpec) -> Row:
    audio = _lhotse_audio(recording)
    if isinstance(audio, tuple):
        return f"id {uid!r}", audio[1]
    if isinstance(channel, list):
        if len(channel) != 1:
            return f"id {uid!r}", f"spans channels {channel}; only one channel (or a mono recording) is read"
        channel = channel[0]
    text = " ".join((s.text or "").strip() for s in supervisions).strip()
    row: dict = {"id": uid, "audio": audio, "text": text, "offset": float(start), "duration": float(duration)}
    if recording.num_channels > 1 and channel is not None:
        row["channel"] = int(channel)
    speakers = {s.speaker for s in supervisions if s.speaker}
    if len(speakers) == 1:
        row["speaker"] = speakers.pop()
    kw_key = spec.field("keywords")
    kws = [k for s in supervisions for k in ((s.custom or {}).get(kw_key) or [])]
    if any((s.custom or {}).get(kw_key) is not None for s in supervisions):
        row["keywords"] = kws
    return f"id {uid!r}", row


def _lhotse_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
    lhotse = require_lhotse()
    cuts_path, rec_path, sup_path = _lhotse_files(spec.path)
    base = (cuts_path or sup_path).resolve().parent

    def from_cuts() -> Iterator[Row]:
        for cut in lhotse.CutSet.from_file(cuts_path):
            if not hasattr(cut, "recording") or cut.recording is None:
                yield f"id {cut.id!r}", f"a {type(cut).__name__} without one recording is not read"
                continue
            sups = [s for s in cut.supervisions]
            yield _lhotse_row(cut.id, cut.recording, cut.start, cut.duration, getattr(cut, "channel", None),
                              sups, spec)

    def from_supervisions() -> Iterator[Row]:
        recordings = {r.id: r for r in lhotse.RecordingSet.from_file(rec_path)}
        for sup in lhotse.SupervisionSet.from_file(sup_path):
            if sup.recording_id not in recordings:
                yield f"id {sup.id!r}", f"no audio: recording {sup.recording_id!r} is not in {rec_path.name}"
                continue
            yield _lhotse_row(sup.id, recordings[sup.recording_id], sup.start, sup.duration, sup.channel, [sup],
                              spec)

    return base, (from_cuts() if cuts_path else from_supervisions())
