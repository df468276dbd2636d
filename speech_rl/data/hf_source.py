"""Hugging Face ``datasets`` as a data source (``speech_rl.data.formats``): ``save_to_disk``
folders (one split of a DatasetDict) and parquet files, read as Arrow tables; audio cells stay
encoded and are decoded by soundfile when an utterance is loaded."""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from speech_rl.data.formats import Row, SourceError, SourceSpec


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
        value = _hf_table(self.source, self.split).column(self.column)[self.index].as_py()
        where = f"{self.source} row {self.index}"
        out = _audio_value(value, where)
        if isinstance(out, str) and not Path(out).is_absolute() and not Path(out).exists():
            base = Path(self.source) if Path(self.source).is_dir() else Path(self.source).parent
            out = str(base / out)
        return out

    def __str__(self) -> str:
        return f"{self.source}[{self.index}].{self.column}"


_OPEN: dict[tuple[str, str | None], object] = {}


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


def hf_rows(spec: SourceSpec) -> tuple[Path, Iterator[Row]]:
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
