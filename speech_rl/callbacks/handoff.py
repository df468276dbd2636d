"""Hand one device set in turn to the components of an RL step.

Before each planned phase, the components it needs are placed on the compute
device; with ``offload_idle`` the others are moved to CPU (the rollout engine is
asked to ``release()`` its memory instead, and to ``resume()`` it later). The moves
run inside a phase of their own, ``handoff``, so their cost is timed. Device memory
(CUDA allocated, or process RSS on CPU) is logged per phase as ``mem/<phase>_mb``.

The FSDP-managed policy is placed by the Lightning strategy and is not moved here.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from speech_rl.callbacks.phases import PhaseAware, run_phase

DEFAULT_PLAN = {"encode": ["encoder"], "rollout": ["engine"], "reward": ["reward_models"],
                "policy": ["reference"], "sync": ["engine"], "validate": ["encoder", "engine"]}


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


class DeviceHandoff(Callback, PhaseAware):
    """Args:
        plan: phase -> names of components that phase needs (see ``handoff_components``
            of the module: encoder, engine, reference, reward_models).
        offload_idle: move components not needed by the phase to CPU.
        log_memory: log ``mem/<phase>_mb`` at the end of each planned phase.
    """

    def __init__(self, plan: dict[str, list[str]] | None = None, offload_idle: bool = True,
                 log_memory: bool = True):
        self.plan = {k: list(v) for k, v in (plan or DEFAULT_PLAN).items()}
        self.offload_idle, self.log_memory = offload_idle, log_memory
        self.moves = 0
        self.memory: dict[str, float] = {}
        self._where: dict[str, str] = {}

    def _move(self, name: str, comp: Any, device: torch.device) -> None:
        key = str(device)
        if self._where.get(name) == key:
            return
        if hasattr(comp, "release") and hasattr(comp, "resume"):       # a rollout engine
            if device.type == "cpu" and comp_device(comp).type != "cpu":
                comp.release()
            else:
                comp.resume()
        elif comp is not None:
            for c in comp if isinstance(comp, (list, tuple)) else [comp]:
                if hasattr(c, "to"):
                    c.to(device)
        self._where[name] = key
        self.moves += 1

    def on_phase_start(self, trainer, pl_module, phase) -> None:
        if phase not in self.plan:
            return
        comps = pl_module.handoff_components()
        unknown = set(self.plan[phase]) - set(comps)
        if unknown:
            raise ValueError(f"handoff plan for phase {phase!r} names unknown components {sorted(unknown)}; "
                             f"the module has {sorted(comps)}")
        with run_phase(pl_module, "handoff"):
            if self.offload_idle and pl_module.device.type != "cpu":
                for name, comp in comps.items():
                    if name not in self.plan[phase]:
                        self._move(name, comp, torch.device("cpu"))
            for name in self.plan[phase]:
                self._move(name, comps[name], pl_module.device)

    def on_phase_end(self, trainer, pl_module, phase) -> None:
        if phase not in self.plan or not self.log_memory:
            return
        dev = pl_module.device
        mb = torch.cuda.memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb()
        self.memory[phase] = mb
        if trainer.training and getattr(pl_module, "_current_fx_name", None) == "training_step":
            pl_module.log(f"mem/{phase}_mb", mb, on_step=True, on_epoch=False)


def comp_device(comp: Any) -> torch.device:
    return getattr(comp, "device", torch.device("cpu"))
