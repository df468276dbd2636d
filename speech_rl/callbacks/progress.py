"""One progress bar over a run's optimiser steps.

Lightning's bars count batches per epoch and title them "Epoch E/max_epochs - 1", which
reads "Epoch 0/-2" for the step-bounded runs speech-rl makes (``max_epochs=-1``,
``max_steps=N``). This bar shows ``step global_step/max_steps`` across epochs and
resumes (a resumed run starts at its checkpoint's step). It is a tqdm bar, which also
writes its updates through a pipe (``speech-rl pipeline`` runs training as a child
process), where Rich's live display stays silent until the end.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n


class StepProgressBar(TQDMProgressBar):
    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.initial = 0
        bar.set_description("step")
        _update_n(bar, trainer.global_step)

    def on_train_epoch_start(self, trainer, *_) -> None:
        """One bar for the whole run: no per-epoch reset."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        n = trainer.global_step
        if bar is not None and self._should_update(n, bar.total):
            _update_n(bar, n)
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
