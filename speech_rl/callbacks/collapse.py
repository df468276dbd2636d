"""Collapse detection (the paper's Figure 3: GRPO deteriorates after ~1500 steps).

``CollapseRules.check`` is the pure part: given the history of a few metrics it says
whether the run has collapsed and why. ``CollapseGuard`` watches the logged metrics,
keeps the policy weights of the best validation in memory, and on a collapse either
stops the run (``action=stop``) or restores those best weights into the policy and the
rollout engine first (``action=rollback``); the reason is logged and kept in
``CollapseGuard.reason``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


@dataclass
class CollapseRules:
    """Thresholds (None disables a rule).

    val_wer_rise: relative rise of val/wer over its best for ``patience`` validations in a row.
    kl_max: EMA of train/kl above this.
    reward_drop: EMA of train/reward/mean this far below its best EMA.
    repetition_max: EMA of train/hallucination_rate above this.
    ema: smoothing of the per-step metrics; warmup_steps: no step rule fires before.
    """

    val_wer_rise: float | None = 0.10
    patience: int = 2
    kl_max: float | None = 1.0
    reward_drop: float | None = None
    repetition_max: float | None = 0.5
    ema: float = 0.9
    warmup_steps: int = 20
    _ema: dict[str, float] = field(default_factory=dict)
    _best_ema: dict[str, float] = field(default_factory=dict)
    _best_wer: float = math.inf
    _worse: int = 0
    _steps: int = 0

    def step(self, metrics: dict[str, float]) -> str | None:
        """Feed one training step's metrics; the collapse reason or None."""
        self._steps += 1
        for k in ("train/kl", "train/reward/mean", "train/hallucination_rate"):
            v = metrics.get(k)
            if v is None or not math.isfinite(v):
                continue
            self._ema[k] = v if k not in self._ema else self.ema * self._ema[k] + (1 - self.ema) * v
            if k == "train/reward/mean":
                self._best_ema[k] = max(self._best_ema.get(k, -math.inf), self._ema[k])
        if self._steps < self.warmup_steps:
            return None
        kl, rep, rew = (self._ema.get(k) for k in ("train/kl", "train/hallucination_rate", "train/reward/mean"))
        if self.kl_max is not None and kl is not None and kl > self.kl_max:
            return f"KL to the reference (EMA {kl:.3f}) above kl_max {self.kl_max}"
        if self.repetition_max is not None and rep is not None and rep > self.repetition_max:
            return f"hallucination/repetition rate (EMA {rep:.2f}) above repetition_max {self.repetition_max}"
        if self.reward_drop is not None and rew is not None and \
                rew < self._best_ema["train/reward/mean"] - self.reward_drop:
            return (f"reward (EMA {rew:.3f}) fell more than {self.reward_drop} below its best "
                    f"{self._best_ema['train/reward/mean']:.3f}")
        return None

    def validation(self, wer: float) -> tuple[bool, str | None]:
        """Feed one val/wer; (is it the best so far, collapse reason or None)."""
        if not math.isfinite(wer):
            return False, None
        if wer < self._best_wer:
            self._best_wer, self._worse = wer, 0
            return True, None
        if self.val_wer_rise is not None and wer > self._best_wer * (1 + self.val_wer_rise):
            self._worse += 1
            if self._worse >= self.patience:
                return False, (f"val/wer {wer:.4f} more than {100 * self.val_wer_rise:.0f}% above its best "
                               f"{self._best_wer:.4f} for {self._worse} validations")
        else:
            self._worse = 0
        return False, None


class CollapseGuard(Callback):
    """Args: action ``stop`` or ``rollback``; the rest are ``CollapseRules`` thresholds."""

    def __init__(self, action: str = "rollback", **rules):
        if action not in ("stop", "rollback"):
            raise ValueError(f"CollapseGuard action must be 'stop' or 'rollback', got {action!r}")
        self.action, self.rules = action, CollapseRules(**rules)
        self.best_state: dict | None = None
        self.best_step: int | None = None
        self.reason: str | None = None

    def _collapse(self, trainer, pl_module, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = f"collapse at step {trainer.global_step}: {reason}"
        if self.action == "rollback" and self.best_state is not None:
            pl_module.policy.load_state_dict(self.best_state)
            pl_module.sync_engine()
            self.reason += f"; rolled back to the weights of step {self.best_step} (best val/wer)"
        log.warning("%s; stopping", self.reason)
        trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        why = self.rules.step(metrics)
        if why:
            self._collapse(trainer, pl_module, why)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/wer" not in trainer.callback_metrics:
            return
        best, why = self.rules.validation(float(trainer.callback_metrics["val/wer"]))
        if best:
            self.best_state = {k: v.detach().cpu().clone() for k, v in copy.copy(pl_module.policy.state_dict()).items()}
            self.best_step = trainer.global_step
        elif why:
            self._collapse(trainer, pl_module, why)

    def state_dict(self) -> dict:
        return {"reason": self.reason, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.reason, self.best_step = state.get("reason"), state.get("best_step")
