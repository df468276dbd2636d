"""The Hydra training app behind ``speech-rl train``.

Runnable as a script on purpose: for ``trainer.devices>1`` Lightning starts the other
ranks by re-running ``sys.argv[0]`` with the same overrides, so ``speech-rl train``
points ``sys.argv[0]`` here.
"""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="pkg://configs", config_name="train", version_base="1.3")
def app(cfg: DictConfig) -> None:
    from speech_rl.train import train

    metrics = train(cfg)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val/")}
    if shown:   # on the run's own validation manifest, not a held-out test set
        logging.getLogger("speech_rl").info("last validation (data.val_manifest): %s", shown)


if __name__ == "__main__":
    app()
