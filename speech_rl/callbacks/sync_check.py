"""Check that the rollout engine really mirrors the policy and that all data-parallel
replicas hold the same weights (a silent sync bug makes RL off-policy without a sign)."""
from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

from speech_rl.engines.base import full_named_parameters

log = logging.getLogger(__name__)


class WeightSyncCheck(Callback):
    """Every ``every_n_steps`` (and at the end of training) compare the engine's weights
    with the full policy weights, and the policy's checksum across ranks. Logs
    ``check/engine_max_diff`` and ``check/replica_spread``; raises if either exceeds ``atol``.

    Works for engines that expose their torch module as ``engine.lm`` (the torch engine);
    for others only the replica check runs.
    """

    def __init__(self, every_n_steps: int = 50, atol: float = 1e-6):
        self.every_n_steps, self.atol = every_n_steps, atol
        self.last: dict[str, float] = {}

    @torch.no_grad()
    def check(self, trainer, pl_module) -> dict[str, float]:
        src = pl_module.engine_source()
        full = dict(full_named_parameters(src))              # collective under FSDP2: all ranks
        eng = getattr(pl_module.engine, "lm", None)
        diff = 0.0
        if eng is not None:
            for name, p in eng.named_parameters():
                diff = max(diff, (p.detach().cpu().float() - full[name].cpu().float()).abs().max().item())
        checksum = torch.tensor(sum(float(t.double().sum()) for t in full.values()), dtype=torch.float64)
        gathered = trainer.strategy.all_gather(checksum.to(pl_module.device))
        spread = float(gathered.max() - gathered.min()) if gathered.dim() else 0.0
        self.last = {"check/engine_max_diff": diff, "check/replica_spread": spread}
        if diff > self.atol:
            raise RuntimeError(f"rollout engine weights differ from the policy by {diff:.3g} (> {self.atol}): "
                               "the weight sync is broken")
        if spread > self.atol * max(1.0, abs(float(checksum))):
            raise RuntimeError(f"data-parallel replicas disagree: weight checksums {gathered.tolist()}")
        return self.last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            pl_module.log_dict(self.check(trainer, pl_module), on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer, pl_module)
        log.info("weight sync check at step %d: %s", trainer.global_step, self.last)
