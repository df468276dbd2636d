"""Deterministic, resumable, rank-sharded batch orders.

``EpochBatchSampler`` fixes the order of epoch ``e`` from ``seed + e`` (shuffled, or
length-bucketed to cut padding), deals whole batches to data-parallel ranks, and can
start an epoch part-way. ``ResumableDataLoader`` counts the batches it has handed out
and exposes ``state_dict`` / ``load_state_dict``, which Lightning stores in its
checkpoints, so a resumed run continues with the very next batch.
``ignore_preemption_in_worker`` keeps scheduler signals away from the workers.
"""
from __future__ import annotations

import random
import signal
from typing import Any, Iterator

import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Args:
        durations: one per dataset item (used when ``bucket_by_length``).
        batch_size, seed, drop_last, shuffle: as usual.
        bucket_by_length: shuffle, cut into pools of ``pool_batches`` batches, sort each
            pool by duration, cut into batches, shuffle the batches.
        rank / world_size: this process' share (whole batches, the same count on every
            rank); default from ``torch.distributed`` when it is initialised.

    >>> s = EpochBatchSampler([1.0, 9.0, 1.1, 8.8], batch_size=2, bucket_by_length=True, pool_batches=2)
    >>> sorted(sorted(b) for b in s)
    [[0, 2], [1, 3]]
    """

    def __init__(self, durations: list[float], batch_size: int, seed: int = 0, drop_last: bool = False,
                 shuffle: bool = True, bucket_by_length: bool = False, pool_batches: int = 50,
                 rank: int | None = None, world_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.durations, self.batch_size, self.seed = list(durations), batch_size, seed
        self.drop_last, self.shuffle, self.bucket = drop_last, shuffle, bucket_by_length
        self.pool = pool_batches * batch_size
        ddp = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if ddp else 0)
        self.world = world_size if world_size is not None else (dist.get_world_size() if ddp else 1)
        self.epoch = 0
        self.resume_at: tuple[int, int] | None = None     # (epoch, batches of it already consumed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> "EpochBatchSampler":
        """Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler``: that is us."""
        return self

    def epoch_batches(self) -> list[list[int]]:
        """All of this rank's batches of the current epoch, in order."""
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.durations)))
        if self.shuffle:
            rng.shuffle(idx)
        if self.bucket:
            batches = []
            for s in range(0, len(idx), self.pool):
                pool = sorted(idx[s:s + self.pool], key=self.durations.__getitem__)
                batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            if self.shuffle:
                rng.shuffle(batches)
        else:
            batches = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        per_rank = len(batches) // self.world if self.world > 1 else len(batches)
        return batches[self.rank::self.world][:per_rank]

    @property
    def start(self) -> int:
        """Batches of the current epoch to skip: the resume offset if it is for this epoch.
        (Resuming from a checkpoint taken at an epoch's last batch, Lightning may or may
        not move to the next epoch itself; the offset applies only to the epoch it was
        saved in, so either way no batch is repeated or skipped.)"""
        return self.resume_at[1] if self.resume_at and self.resume_at[0] == self.epoch else 0

    def __iter__(self) -> Iterator[list[int]]:
        start, self.resume_at = self.start, None     # a resume offset applies to one epoch only
        return iter(self.epoch_batches()[start:])

    def __len__(self) -> int:
        return len(self.epoch_batches())


PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")


def ignore_preemption_in_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader workers: they ignore SIGTERM and SIGUSR1.

    SLURM (``scancel``, ``--signal`` without ``B:``) and ``kill -- -PGID`` signal every process
    of the job, DataLoader workers included; a worker killed that way makes the main process
    fail mid-step ("DataLoader worker ... is killed by signal: Terminated") before it can
    write ``preempted.ckpt``. Ignoring them leaves the stop to the main process, which shuts
    its workers down as usual (a worker also exits when its parent dies)."""
    for name in PREEMPTION_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


class ResumableDataLoader(DataLoader):
    """A DataLoader over an ``EpochBatchSampler`` whose position is checkpointable."""

    def __init__(self, dataset, batch_sampler: EpochBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._consumed = 0

    def __iter__(self):
        self._consumed = self.batch_sampler.start
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.batch_sampler.epoch, "consumed": self._consumed, "seed": self.batch_sampler.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        s = self.batch_sampler
        if state.get("seed", s.seed) != s.seed:
            raise ValueError(f"checkpoint was written with data seed {state['seed']}, this run uses {s.seed}")
        s.epoch = int(state["epoch"])
        s.resume_at = (s.epoch, int(state["consumed"]))
