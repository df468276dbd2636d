"""Save ``last.ckpt`` when training ends, if the run's final step has not been saved.

Lightning's ModelCheckpoint writes at its own triggers (every N steps, or after a
validation when the monitored metric improves); a run whose ``max_steps`` is not on a
trigger, or whose metric stopped improving, would otherwise end with ``last.ckpt``
behind the weights it trained (seen: 800 steps behind). Runs that end by an exception
save nothing here: the last regular checkpoint stays the one to resume from.
"""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint


class FinalCheckpoint(Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        ck = trainer.checkpoint_callback
        if not isinstance(ck, ModelCheckpoint) or not ck.save_last or ck.dirpath is None:
            return
        if getattr(ck, "_last_global_step_saved", None) == trainer.global_step and ck.last_model_path:
            return
        path = Path(ck.dirpath) / f"{ck.CHECKPOINT_NAME_LAST}{ck.FILE_EXTENSION}"
        trainer.save_checkpoint(str(path))           # every rank calls; the strategy writes once
        ck.last_model_path = str(path)
