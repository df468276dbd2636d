"""Preemption: SIGTERM (SLURM / cloud, before SIGKILL) or SIGUSR1 (SLURM's ``--signal``
warning ahead of time) ends the run cleanly.

Lightning's own SIGTERM handler sets ``trainer.received_sigterm``; the training loop then
finishes the current step (rollout, update, weight sync, logging) and raises
``SIGTERMException``. Under DDP a signal can reach the ranks at different moments, so at the
end of every step this callback all-reduces the flag (max over ranks): every rank then stops
after the same step. It adds SIGUSR1 to the same path, and on that exception writes
``checkpoints/preempted.ckpt`` atomically (every rank calls, the strategy writes once);
``speech_rl.train.train`` then exits with ``EXIT_CODE`` and a message naming the checkpoint and the
resume command. ``resume=auto`` picks that checkpoint up (the newest loadable one), and the
run continues with the same metric trajectory as one never interrupted.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

EXIT_CODE = 143            # 128 + SIGTERM: what a job killed by SIGTERM reports; schedulers requeue on it


class Preemption(Callback):
    """signals: extra signals treated like SIGTERM (default SIGUSR1); SIGTERM itself is
    Lightning's. filename: the checkpoint written on preemption, beside the others."""

    def __init__(self, signals: tuple[str, ...] = ("SIGUSR1",), filename: str = "preempted.ckpt"):
        self.signals = [getattr(signal, s) for s in signals]
        self.filename = filename
        self._previous: dict[int, object] = {}
        self.saved: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            prev = signal.getsignal(sig)
            self._previous[sig] = prev

            def handler(signum, frame, prev=prev, trainer=trainer):
                log.info("received %s: finishing this step, then checkpoint and exit", signal.Signals(signum).name)
                trainer._signal_connector.received_sigterm = True
                if callable(prev) and prev not in (signal.SIG_IGN, signal.SIG_DFL):
                    prev(signum, frame)                 # e.g. Lightning's SLURM auto-requeue
            signal.signal(sig, handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return
        flag = torch.tensor([1.0 if trainer.received_sigterm else 0.0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            trainer._signal_connector.received_sigterm = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self._previous.items():
                signal.signal(sig, prev)
        self._previous = {}

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        ck = trainer.checkpoint_callback
        folder = Path(ck.dirpath) if isinstance(ck, ModelCheckpoint) and ck.dirpath else Path(
            trainer.default_root_dir) / "checkpoints"
        path = folder / self.filename
        trainer.save_checkpoint(str(path))
        self.saved = str(path)
