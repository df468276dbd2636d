"""Phases of an RL step (encode, rollout, reward, policy, sync, handoff, ...).

A module wraps each phase in ``with run_phase(self, "rollout"):``; every callback
that implements ``on_phase_start`` / ``on_phase_end`` (``PhaseAware``) is told, in
order on start and in reverse order on end. ``PhaseTimer`` turns that into
exclusive wall-clock times per phase (a nested phase's time is not counted in its
parent) logged as ``time/<phase>`` and ``time/step`` each step.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class PhaseAware:
    """Mixin for callbacks that want phase events."""

    def on_phase_start(self, trainer: L.Trainer, pl_module: L.LightningModule, phase: str) -> None: ...

    def on_phase_end(self, trainer: L.Trainer, pl_module: L.LightningModule, phase: str) -> None: ...


@contextmanager
def run_phase(module: L.LightningModule, phase: str) -> Iterator[None]:
    """Tell the trainer's PhaseAware callbacks that ``phase`` starts / ends around the block.
    Without a trainer (a module used on its own) it only runs the block."""
    trainer = getattr(module, "_trainer", None)
    hooks = [cb for cb in (trainer.callbacks if trainer is not None else []) if isinstance(cb, PhaseAware)]
    for h in hooks:
        h.on_phase_start(trainer, module, phase)
    try:
        yield
    finally:
        for h in reversed(hooks):
            h.on_phase_end(trainer, module, phase)


def _sync(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class PhaseTimer(Callback, PhaseAware):
    """Exclusive wall time of each phase of a training step, logged as ``time/<phase>``
    (seconds) plus ``time/step``; ``time/other`` is the step time outside any phase
    (data loading excluded). The last step's times are kept in ``last``."""

    def __init__(self) -> None:
        self._stack: list[list] = []          # [phase, start_time]
        self._acc: dict[str, float] = defaultdict(float)
        self._step_start = 0.0
        self.last: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._acc.clear()
        self._stack.clear()
        _sync(pl_module)
        self._step_start = time.perf_counter()

    def on_phase_start(self, trainer, pl_module, phase) -> None:
        _sync(pl_module)
        now = time.perf_counter()
        if self._stack:                       # pause the parent
            parent = self._stack[-1]
            self._acc[parent[0]] += now - parent[1]
        self._stack.append([phase, now])

    def on_phase_end(self, trainer, pl_module, phase) -> None:
        _sync(pl_module)
        now = time.perf_counter()
        name, start = self._stack.pop()
        assert name == phase, f"phase {phase!r} ended while {name!r} was open"
        self._acc[name] += now - start
        if self._stack:                       # resume the parent
            self._stack[-1][1] = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(pl_module)
        total = time.perf_counter() - self._step_start
        times = dict(self._acc)
        times["other"] = max(total - sum(times.values()), 0.0)
        times["step"] = total
        self.last = times
        if trainer.training:
            pl_module.log_dict({f"time/{k}": v for k, v in times.items()}, on_step=True, on_epoch=False)
