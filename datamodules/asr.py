"""ASR data: manifest -> (log-mel features, text, keywords, duration) batches."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.sampler import EpochBatchSampler, ResumableDataLoader, ignore_preemption_in_worker
from speech_rl.data.dataset import ASRBatch, ManifestDataset, collate_asr  # noqa: F401 (re-exported)
from speech_rl.data.formats import is_single_source, source_path
from speech_rl.data.manifest import BadRows, Utterance, read_manifest

log = logging.getLogger(__name__)


def check_weights(weights: list[float] | None, paths: list) -> list[float]:
    """``weights`` (one per manifest, >= 0) or all ones; a clear error otherwise."""
    if weights is None:
        return [1.0] * len(paths)
    weights = [float(w) for w in weights]
    if len(weights) != len(paths):
        raise ValueError(f"train_weights has {len(weights)} entries for {len(paths)} train manifests {paths}")
    bad = [w for w in weights if not (w >= 0 and w != float("inf"))]
    if bad:
        raise ValueError(f"train_weights must be finite and >= 0, got {weights}")
    return weights


def weighted(items: list, weight: float, seed: str) -> list:
    """``items`` repeated ``floor(weight)`` times, plus a seeded share ``weight - floor(weight)``
    of them (the same share every call for the same seed).

    >>> len(weighted(list(range(10)), 2.5, "s")), weighted(list(range(4)), 0.0, "s")
    (25, [])
    """
    whole = int(weight)
    extra = round((weight - whole) * len(items))
    return items * whole + random.Random(seed).sample(items, extra)


def _is_empty(path) -> bool:
    """True for an existing JSONL manifest with no non-blank line (read up to the first one)."""
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return False
    with open(path, "rb") as f:
        return not any(line.strip() for line in f)


class ASRDataModule(L.LightningDataModule):
    """Train / val manifests -> ASRBatch loaders.

    Args:
        train_manifest / val_manifest: data sets (val optional; train may be a list of
            them, taken as a union: an id in several is used once). Each is a JSONL path, a
            Hugging Face dataset, a Kaldi data directory or Lhotse manifests, or a mapping
            ``{path, format, split, fields}`` (``speech_rl.data.formats``).
        batch_size: prompts per step for RL (each is sampled ``group_size`` times).
        on_bad_row / check_audio / max_duration: see ``read_manifest``.
        bucket_by_length: batch utterances of similar duration (less padding).
        train_weights: one weight per train manifest (default all 1): an epoch holds each
            of that manifest's utterances ``floor(w)`` times plus a seeded, fixed share
            ``w - floor(w)`` of them once more; 0 leaves the manifest out. Oversamples a
            small split (long audio) or thins a large one without writing new manifests.
        synth: if given (a dict of ``synth_corpus`` arguments: ``out_dir``, ``splits``,
            ``seed``), missing manifests are synthesised with eSpeak NG first — the
            embedded default; ``{preset: open, out_dir, seed, jobs}`` synthesises the
            open-vocabulary corpus instead (``speech_rl.data.open_corpus``).
        features: ``logmel`` (default; ``n_mels`` bins, Whisper's scaling) or ``waveform`` (the
            samples, (n, 1) per utterance) for an encoder that reads waveforms (s3prl upstreams).
        extra_val: more validation sets, ``{name: manifest}``, each its own loader whose
            metrics are logged as ``<name>/wer`` ... beside ``val/*`` (e.g. ``val_long``:
            held-out long pool audio, for picking an RL checkpoint on long audio).
    """

    def __init__(self, train_manifest: str | list[str], val_manifest: str | None = None, batch_size: int = 8,
                 val_batch_size: int | None = None, sample_rate: int = 16000, n_mels: int = 80,
                 num_workers: int = 0, on_bad_row: str = "skip", check_audio: str = "full",
                 max_duration: float | None = 30.0, shuffle: bool = True, seed: int = 0,
                 bucket_by_length: bool = False, synth: dict | None = None,
                 train_weights: list[float] | None = None, extra_val: dict[str, str] | None = None,
                 features: str = "logmel"):
        super().__init__()
        extra_val = dict(extra_val or {})
        for name in extra_val:
            if not str(name).isidentifier() or name == "val":
                raise ValueError(f"data.extra_val: {name!r} cannot name a validation set (an identifier other "
                                 f"than 'val' is needed: its metrics are logged as <name>/wer)")
        if extra_val and not val_manifest:
            raise ValueError(f"data.extra_val ({', '.join(extra_val)}) needs data.val_manifest: val/* stays the "
                             f"first validation set, the one early stopping and the collapse guard watch")
        self.save_hyperparameters(logger=False)
        self.train_set: ManifestDataset | None = None
        self.val_set: ManifestDataset | None = None
        self.extra_val_sets: dict[str, ManifestDataset] = {}
        self.bad_rows: dict[str, BadRows] = {}

    def prepare_data(self) -> None:
        s = self.hparams.synth
        if s and s.get("preset") == "open":
            from speech_rl.data.open_corpus import synth_open_corpus

            synth_open_corpus(s["out_dir"], seed=int(s.get("seed", 0)), jobs=int(s.get("jobs", 2)))
        elif s:
            from speech_rl.data.synth import synth_corpus

            synth_corpus(s["out_dir"], dict(s["splits"]), seed=int(s.get("seed", 0)))

    def _load(self, paths: str | list[str], weights: list[float] | None = None) -> ManifestDataset:
        h = self.hparams
        paths = [paths] if is_single_source(paths) else list(paths)
        weights = check_weights(weights, paths)
        utts, seen, repeated = [], set(), 0
        for path, w in zip(paths, weights):
            if len(paths) > 1 and _is_empty(path):
                # a union may hold an empty subset (e.g. no utterance qualified as D1)
                log.warning("manifest %s is empty; the union %s goes on without it", path, paths)
                continue
            u, bad = read_manifest(path, on_bad_row=h.on_bad_row, check_audio=h.check_audio,
                                   sample_rate=h.sample_rate, max_duration=h.max_duration)
            self.bad_rows[str(source_path(path))] = bad
            kept = []
            for x in u:                    # several manifests are a union (RL subsets overlap)
                if x.id in seen:
                    repeated += 1
                    continue
                seen.add(x.id)
                kept.append(x)
            utts.extend(weighted(kept, w, seed=f"{h.seed}-{source_path(path).name}"))
        if repeated:
            log.info("%d utterances listed in more than one of %s were kept once", repeated, paths)
        if not utts:
            raise ValueError(f"no utterances left in {paths} (weights {weights})")
        return self.make_dataset(utts, paths)

    def make_dataset(self, utts: list[Utterance], paths: str | list[str]) -> Dataset:
        """The Dataset over the kept utterances of ``paths`` (subclasses add fields)."""
        return ManifestDataset(utts, self.hparams.sample_rate, self.hparams.n_mels, self.hparams.features)

    collate = staticmethod(collate_asr)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self._load(self.hparams.train_manifest, self.hparams.train_weights)
        if self.val_set is None and self.hparams.val_manifest and stage in (None, "fit", "validate"):
            self.val_set = self._load(self.hparams.val_manifest)
            for name, path in (self.hparams.extra_val or {}).items():
                self.extra_val_sets[name] = self._load(path)

    @property
    def val_names(self) -> list[str]:
        """Log prefix of each validation loader, in ``val_dataloader`` order."""
        return (["val"] if self.val_set is not None else []) + list(self.extra_val_sets)

    @property
    def num_bad_rows(self) -> int:
        return sum(len(b) for b in self.bad_rows.values())

    def train_dataloader(self) -> DataLoader:
        """Deterministic per-epoch order (seed + epoch), sharded by rank, resumable mid-epoch.
        Lightning's own distributed sampler is off (``use_distributed_sampler: false``)."""
        h = self.hparams
        sampler = EpochBatchSampler([u.duration for u in self.train_set.utts], h.batch_size, seed=h.seed,
                                    drop_last=len(self.train_set) >= h.batch_size, shuffle=h.shuffle,
                                    bucket_by_length=h.bucket_by_length)
        if len(sampler) == 0:
            raise ValueError(f"{len(self.train_set)} training utterances give no batch of {h.batch_size} "
                             f"on each of {sampler.world} processes")
        return ResumableDataLoader(self.train_set, sampler, collate_fn=self.collate, num_workers=h.num_workers,
                                   persistent_workers=h.num_workers > 0, worker_init_fn=ignore_preemption_in_worker)

    def val_dataloader(self) -> DataLoader | list:
        """The ``val_manifest`` loader, or a list of it and one loader per ``extra_val`` set."""
        if self.val_set is None:
            return []
        loaders = [self._val_loader(d) for d in (self.val_set, *self.extra_val_sets.values())]
        return loaders[0] if len(loaders) == 1 else loaders

    def _val_loader(self, dataset: Dataset) -> DataLoader:
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = DistributedSampler(dataset, shuffle=False, drop_last=False)
        return DataLoader(dataset, batch_size=self.hparams.val_batch_size or self.hparams.batch_size,
                          sampler=sampler, shuffle=False, collate_fn=self.collate, num_workers=self.hparams.num_workers,
                          worker_init_fn=ignore_preemption_in_worker)
