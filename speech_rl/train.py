"""Build everything from a composed config and run ``Trainer.fit``."""
from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from speech_rl.modules import ASRGRPOModule, ASRSFTModule

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


TASKS = ("asr_grpo", "asr_sft")


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The module for ``cfg.task`` (plain containers go into its hparams, so a checkpoint
    rebuilds itself): ``asr_grpo`` (RL: GRPO / MWER) or ``asr_sft`` (supervised base)."""
    task = cfg.get("task", "asr_grpo")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    if task == "asr_sft":
        return ASRSFTModule(model=_plain(cfg.model), optim=_plain(cfg.optim), seed=int(cfg.seed),
                            **_plain(cfg.get("sft") or {}))
    return ASRGRPOModule(model=_plain(cfg.model), algorithm=_plain(cfg.algorithm), reward=_plain(cfg.reward),
                         rollout=_plain(cfg.rollout), optim=_plain(cfg.optim),
                         freeze_encoder=bool(cfg.freeze_encoder), seed=int(cfg.seed))


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger)


def _quiet_duplicate_loggers() -> None:
    """Lightning attaches its own console handlers; under Hydra (which configures the root
    logger) every line would print twice."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        if logging.getLogger().handlers:
            lg.handlers.clear()
            lg.propagate = True
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")   # frozen ref / engine
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data / module / trainer from ``cfg``, fit; returns the last logged metrics."""
    _quiet_duplicate_loggers()
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    bad = datamodule.num_bad_rows
    if bad:
        log.warning("%d bad manifest rows were skipped: %s", bad,
                    "; ".join(b.summary(3) for b in datamodule.bad_rows.values() if len(b)))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
