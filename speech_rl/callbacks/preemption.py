"""Preemption: SIGTERM (SLURM / cloud, before SIGKILL) or SIGUSR1 (SLURM's ``--signal``
warning ahead of time) ends the run cleanly.

This callback's handler replaces Lightning's SIGTERM handler (which runs a collective inside
the handler) and only notes the signal. At the end of every step the note is all-reduced over
ranks (max), so under DDP every rank stops after the same step even when the signal reached
them at different moments; then it sets Lightning's ``received_sigterm``, and the training
loop raises ``SIGTERMException`` right after that step. SIGUSR1 takes the same path. At the
end of that step it writes ``checkpoints/preempted.ckpt`` atomically (every rank calls, the
strategy writes once); ``speech_rl.train.train`` then exits with ``EXIT_CODE`` and a message
naming the checkpoint and the resume command. DataLoader workers ignore both signals
(``datamodules.sampler.ignore_preemption_in_worker``). ``resume=auto`` picks that checkpoint
up (the newest loadable one), and the run continues with the same metric trajectory as one
never interrupted.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)

EXIT_CODE = 143            # 128 + SIGTERM: what a job killed by SIGTERM reports; schedulers requeue on it


class Preemption(Callback):
    """signals: signals treated like SIGTERM besides SIGTERM itself (default SIGUSR1);
    filename: the checkpoint written on preemption, beside the others."""

    def __init__(self, signals: tuple[str, ...] = ("SIGUSR1",), filename: str = "preempted.ckpt"):
        self.signals = [getattr(signal, s) for s in signals]
        self.filename = filename
        self._previous: dict[int, object] = {}
        self._flag = False
        self.saved: str | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        """After Lightning's own handlers (registered once fit has set up): ours replace its
        SIGTERM handler, which broadcasts from inside the handler (a collective at an
        arbitrary point of each rank's program, which can deadlock gloo); ours only set the
        flag and forward the signal to the launcher's child ranks, and the flag is agreed at
        the end of the step (``on_train_batch_end``)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in [signal.SIGTERM, *self.signals]:
            self._previous[sig] = signal.getsignal(sig)

            def handler(signum, frame, trainer=trainer):
                first = not self._flag
                log.warning("received %s: finishing this step, then checkpoint and exit", signal.Signals(signum).name)
                self._flag = True          # Lightning's flag is set at the step's end, on every rank at once
                launcher = trainer.strategy.launcher
                if first and launcher is not None and trainer.global_rank == 0:
                    launcher.kill(signum)              # child ranks started by the Trainer
            signal.signal(sig, handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Agree on the flag over ranks, and if it is set write the checkpoint here: the hook
        (and so the loop state) at which the periodic checkpoints, whose resume is exact, are
        written too. Lightning raises ``SIGTERMException`` right after this step."""
        stop = self._flag
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([1.0 if stop else 0.0], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = flag.item() > 0
        if stop and self.saved is None:
            ck = trainer.checkpoint_callback
            folder = Path(ck.dirpath) if isinstance(ck, ModelCheckpoint) and ck.dirpath else Path(
                trainer.default_root_dir) / "checkpoints"
            path = folder / self.filename
            trainer.save_checkpoint(str(path))            # every rank calls; the strategy writes once
            self.saved = str(path)
            trainer._signal_connector.received_sigterm = True   # Lightning raises SIGTERMException after this step

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self._previous.items():
                signal.signal(sig, prev)
        self._previous = {}
