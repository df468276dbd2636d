"""Length-bucketed batches: less padding when short and long utterances mix."""
from __future__ import annotations

import random
from typing import Iterator

from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into pools of ``pool_batches`` batches, sort each pool by duration,
    cut it into batches of ``batch_size`` and shuffle the batches. Epoch ``e`` uses seed
    ``seed + e`` (call ``set_epoch``; Lightning does), so an epoch's order is reproducible.

    >>> s = LengthBucketBatchSampler([1.0, 9.0, 1.1, 8.8], batch_size=2, pool_batches=2, seed=0)
    >>> sorted(sorted(b) for b in s)
    [[0, 2], [1, 3]]
    """

    def __init__(self, durations: list[float], batch_size: int, pool_batches: int = 50, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.durations, self.batch_size = list(durations), batch_size
        self.pool, self.seed, self.drop_last, self.epoch = pool_batches * batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.durations)))
        rng.shuffle(idx)
        batches = []
        for start in range(0, len(idx), self.pool):
            pool = sorted(idx[start:start + self.pool], key=self.durations.__getitem__)
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        if self.drop_last:
            return sum((min(self.pool, len(self.durations) - s)) // self.batch_size
                       for s in range(0, len(self.durations), self.pool))
        return sum(-(-min(self.pool, len(self.durations) - s) // self.batch_size)
                   for s in range(0, len(self.durations), self.pool))
