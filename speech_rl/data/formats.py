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
supervision ``custom`` key for ``keywords``).
"""
from __future__ import annotations

import bisect
import gzip
import io
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
    try:
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    return json.loads(line)
    except (OSError, ValueError):
        return None
    return None


def source_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
    """(folder that relative audio paths resolve against, raw rows) of a non-JSONL source."""
    readers = {"hf": _hf_rows, "kaldi": _kaldi_rows, "lhotse": _lhotse_rows}
    return readers[spec.format](spec)


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
def _lhotse():
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
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            first = json.loads(next(line for line in f if line.strip()))
    except (OSError, ValueError, StopIteration) as exc:
        raise SourceError(f"Lhotse manifest {path} cannot be read: {exc!r}") from exc
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
    lhotse = _lhotse()
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


# ----------------------------------------------------------------------------- Hugging Face datasets
@dataclass(frozen=True)
class DatasetAudio:
    """Audio held inside a Hugging Face dataset: row ``index`` of the dataset ``source``
    (a ``save_to_disk`` folder or parquet files), column ``column``. Picklable; each
    process opens the (memory-mapped) Arrow table once and reads one cell per call."""

    source: str
    split: str | None
    index: int
    column: str

    def open(self) -> "io.BytesIO | str":
        """The encoded audio as a seekable stream, or the path of its file."""
        value = _hf_cell(self.source, self.split, self.column, self.index)
        where = f"{self.source} row {self.index}"
        out = _audio_value(value, where)
        if isinstance(out, str) and not Path(out).is_absolute() and not Path(out).exists():
            base = Path(self.source) if Path(self.source).is_dir() else Path(self.source).parent
            out = str(base / out)
        return out

    def __str__(self) -> str:
        return f"{self.source}[{self.index}].{self.column}"


_OPEN: dict[tuple[str, str | None], object] = {}
_CHUNKS: dict[tuple[str, str | None, str], tuple[object, list[int]]] = {}


def _hf_cell(source: str, split: str | None, column: str, index: int):
    """One cell of a dataset's Arrow table as a Python value; the column's chunk offsets are
    kept, so a row costs a bisect, not a walk over the table's record batches."""
    key = (source, split, column)
    if key not in _CHUNKS:
        col = _hf_table(source, split).column(column)
        starts = [0]
        for chunk in col.chunks:
            starts.append(starts[-1] + len(chunk))
        _CHUNKS[key] = (col, starts)
    col, starts = _CHUNKS[key]
    k = bisect.bisect_right(starts, index) - 1
    return col.chunk(k)[index - starts[k]].as_py()


def _hf_table(source: str, split: str | None):
    """The Arrow table (``pyarrow.Table``) of the dataset at ``source``: parquet files are
    memory-mapped by pyarrow; a ``save_to_disk`` folder is opened by ``datasets`` (its own
    memory map). Audio cells stay encoded (``{bytes, path}``): speech-rl decodes them with
    soundfile, which needs neither torchcodec nor torchaudio."""
    key = (source, split)
    if key not in _OPEN:
        path = Path(source)
        names = {p.name for p in path.iterdir()} if path.is_dir() else set()
        try:
            if path.is_file() or not names & {"dataset_info.json", "state.json", "dataset_dict.json"}:
                import pyarrow.parquet as pq

                files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
                _OPEN[key] = pq.read_table([str(f) for f in files] if len(files) > 1 else str(files[0]),
                                           memory_map=True)
            else:
                _OPEN[key] = _saved_dataset(path, split).data.table
        except SourceError:
            raise
        except ImportError as exc:
            raise SourceError("reading Hugging Face datasets needs datasets: pip install -e '.[formats]'") from exc
        except Exception as exc:
            raise SourceError(f"Hugging Face dataset {source} cannot be opened: {exc}") from exc
    return _OPEN[key]


def _saved_dataset(path: Path, split: str | None):
    """A ``save_to_disk`` folder as a ``datasets.Dataset`` (one split of a DatasetDict)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceError(f"Hugging Face dataset {path} has splits {list(ds)}; "
                              + ("choose one with split:" if split is None else f"split {split!r} is not one"))
        ds = ds[split]
    return ds.flatten_indices() if ds._indices is not None else ds


def _audio_value(value, where: str) -> "io.BytesIO | str":
    """One HF audio cell -> a stream or a path: ``{bytes, path}`` (an ``Audio`` column left
    encoded), ``{array, sampling_rate}``, a path string, or raw bytes."""
    if isinstance(value, dict):
        if value.get("bytes"):
            buf = io.BytesIO(value["bytes"])
            buf.name = where
            return buf
        if value.get("array") is not None and value.get("sampling_rate"):
            import numpy as np
            import soundfile as sf

            buf = io.BytesIO()
            sf.write(buf, np.asarray(value["array"], dtype="float32"), int(value["sampling_rate"]), format="WAV")
            buf.name = where
            return buf
        if value.get("path"):
            return value["path"]
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        buf = io.BytesIO(value)
        buf.name = where
        return buf
    raise ValueError(f"{where}: audio cell is {type(value).__name__}, not encoded audio, a path or an array")


def _hf_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
    table = _hf_table(str(spec.path), spec.split)
    cols = set(table.column_names)
    names = {k: spec.field(k) for k in ("id", "audio", "text", "duration", "keywords", "speaker")}
    for key in ("audio", "text"):
        if names[key] not in cols:
            raise SourceError(f"Hugging Face dataset {spec.path}: no {key} column {names[key]!r} (columns: "
                              f"{sorted(cols)}); map it with fields: {{{key}: COLUMN}}")
    meta_cols = [c for k, c in names.items() if k != "audio" and c in cols]
    base = spec.path.resolve() if spec.path.is_dir() else spec.path.resolve().parent

    def rows() -> Iterator[Row]:
        for i, r in enumerate(table.select(meta_cols).to_pylist()):
            uid = str(r[names["id"]]) if names["id"] in r and r[names["id"]] is not None else f"{i:08d}"
            row: dict = {"id": uid, "audio": DatasetAudio(str(spec.path), spec.split, i, names["audio"]),
                         "text": r[names["text"]]}
            for key in ("duration", "keywords", "speaker"):
                if names[key] in r and r[names[key]] is not None:
                    row[key] = r[names[key]]
            yield f"id {uid!r}", row

    return base, rows()


# ----------------------------------------------------------------------------- export
def export_kaldi(utts, out_dir: str | Path) -> Path:
    """Write utterances as a Kaldi data directory: ``wav.scp`` (recording -> absolute path),
    ``text``, ``utt2spk`` / ``spk2utt`` (the utterance id as speaker where none is known),
    ``utt2dur``, and ``segments`` when any utterance is a span of its recording. Sorted by
    id, as Kaldi's ``utils/validate_data_dir.sh`` wants. Audio inside a dataset cannot be
    named by wav.scp: convert it to JSONL (which writes it to files) first."""
    from speech_rl.atomic import atomic_open

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    for u in utts:
        if not isinstance(u.audio, Path):
            raise SourceError(f"utterance {u.id!r}: its audio is inside a dataset ({u.audio}); "
                              "run `speech-rl data convert` to JSONL first, which writes it to files")
        if any(c.isspace() for c in u.id + (u.speaker or "")):
            raise SourceError(f"utterance {u.id!r}: Kaldi ids and speakers cannot hold whitespace")
    spans = any(u.offset is not None or u.channel is not None for u in utts)
    recordings: dict[Path, str] = {}
    for u in utts:
        recordings.setdefault(u.audio, f"rec_{len(recordings):07d}" if spans else u.id)
    spk = {u.id: (u.speaker or u.id) for u in utts}
    tables = {
        "wav.scp": sorted(f"{rid} {path}" for path, rid in recordings.items()),
        "text": [f"{u.id} {' '.join(u.text.split())}" for u in utts],
        "utt2spk": [f"{u.id} {spk[u.id]}" for u in utts],
        "utt2dur": [f"{u.id} {u.duration:.3f}" for u in utts],
    }
    by_spk: dict[str, list[str]] = {}
    for uid, s in sorted(spk.items(), key=lambda kv: (kv[1], kv[0])):
        by_spk.setdefault(s, []).append(uid)
    tables["spk2utt"] = [f"{s} {' '.join(ids)}" for s, ids in sorted(by_spk.items())]
    if spans:
        if any(u.channel is not None for u in utts):
            raise SourceError("a channel of a multi-channel recording cannot be written to wav.scp as a "
                              "plain path; export the channel to files first")
        tables["segments"] = [f"{u.id} {recordings[u.audio]} {u.offset or 0.0:.4f} "
                              f"{(u.offset or 0.0) + u.duration:.4f}" for u in utts]
    for name, lines in tables.items():
        with atomic_open(out / name) as f:
            f.write("".join(line + "\n" for line in lines))
    return out


def export_lhotse(utts, out_path: str | Path) -> Path:
    """Write utterances as a Lhotse cut set (``*.jsonl.gz``), built with lhotse itself: one
    ``Recording`` per audio file (read from its header), one ``MonoCut`` with one
    ``SupervisionSegment`` per utterance (keywords in the supervision's ``custom``)."""
    lhotse = _lhotse()
    out = Path(out_path)
    if not out.name.endswith(".jsonl.gz"):
        raise SourceError(f"Lhotse cut set {out}: name it *.jsonl.gz")
    recordings = {}
    cuts = []
    for u in sorted(utts, key=lambda u: u.id):
        if not isinstance(u.audio, Path):
            raise SourceError(f"utterance {u.id!r}: its audio is inside a dataset ({u.audio}); "
                              "run `speech-rl data convert` to JSONL first")
        if u.audio not in recordings:
            recordings[u.audio] = lhotse.Recording.from_file(u.audio, recording_id=f"rec_{len(recordings):07d}")
        rec = recordings[u.audio]
        start = u.offset or 0.0
        channel = u.channel if u.channel is not None else 0
        sup = lhotse.SupervisionSegment(id=u.id, recording_id=rec.id, start=0.0, duration=u.duration,
                                        channel=channel, text=u.text, speaker=u.speaker,
                                        custom={"keywords": list(u.keywords)} if u.keywords is not None else None)
        cuts.append(lhotse.MonoCut(id=u.id, start=start, duration=u.duration, channel=channel, recording=rec,
                                   supervisions=[sup]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name[: -len(".jsonl.gz")] + ".tmp.jsonl.gz")
    lhotse.CutSet.from_cuts(cuts).to_file(tmp)
    tmp.replace(out)
    return out
