"""The optimiser and learning-rate schedule every module uses (SFT and RL).

``optim`` config keys read here: lr, weight_decay, betas, warmup_steps, total_steps (the RL
modules also read grad_clip and max_consecutive_skips). Their one home is
``configs/optim/adamw.yaml``: this module holds no defaults; code that builds a module
without Hydra takes them from that file with ``load_optim``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

ADAMW_KEYS = ("lr", "weight_decay", "betas", "warmup_steps", "total_steps")
RL_KEYS = ADAMW_KEYS + ("grad_clip", "max_consecutive_skips")


def require_optim_keys(o: Mapping[str, Any], keys: Sequence[str] = ADAMW_KEYS) -> None:
    """ValueError naming the ``optim`` keys of ``keys`` that ``o`` lacks."""
    from speech_rl.config_files import require_keys

    require_keys(o, keys, "optim config", "see configs/optim/adamw.yaml; without Hydra start from "
                 "speech_rl.modules.optim.load_optim()")


def load_optim(**overrides: Any) -> dict[str, Any]:
    """``configs/optim/adamw.yaml`` as a dict with ``overrides`` applied (unknown keys refused)."""
    from speech_rl.config_files import load_config_group

    return load_config_group("optim", "adamw", **overrides)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The lr multiplier at optimiser step ``step``: linear warm-up over ``warmup_steps``,
    then constant when ``total_steps`` is 0, else a cosine decay to 10 % at ``total_steps``
    (and 10 % after it).

    >>> [round(warmup_cosine_factor(s, 2, 0), 2) for s in (0, 1, 5)]
    [0.5, 1.0, 1.0]
    >>> [round(warmup_cosine_factor(s, 0, 10), 3) for s in (0, 5, 10, 20)]
    [1.0, 0.55, 0.1, 0.1]
    """
    w = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if total_steps > 0:
        frac = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
        return w * (0.1 + 0.9 * 0.5 * (1 + math.cos(frac * math.pi)))
    return w


def adamw_warmup_cosine(params, o: dict) -> dict:
    """AdamW (lr, weight_decay, betas) with ``warmup_cosine_factor`` as a per-step
    LambdaLR: a Lightning ``configure_optimizers`` return value."""
    require_optim_keys(o)
    opt = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"], betas=tuple(o["betas"]))
    warm, total = int(o["warmup_steps"]), int(o["total_steps"] or 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine_factor(s, warm, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
