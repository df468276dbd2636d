"""Build everything from a composed config and run ``Trainer.fit``."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from speech_rl.callbacks.preemption import EXIT_CODE as PREEMPTED_EXIT, Preemption
from speech_rl.checkpoint import AtomicCheckpointIO, find_resume_checkpoint

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule ``cfg.module`` names by ``_target_`` (``configs/module/``: asr_grpo,
    asr_sft, tts_sft, tts_rl), its arguments resolved to plain containers so that they go
    into the checkpoint's hparams and the checkpoint rebuilds itself."""
    spec = _plain(cfg.get("module"))
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ValueError("config has no module._target_: pick one with module=asr_grpo|asr_sft|tts_sft|tts_rl "
                         "(or an experiment that does)")
    target = spec.pop("_target_")
    try:
        cls = get_class(target)
    except Exception as exc:                                  # hydra wraps the import error
        raise ValueError(f"module._target_={target!r} is not an importable class: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"module._target_={target!r} is not a LightningModule")
    return cls(**spec)


def check_features(datamodule: Any, module: L.LightningModule) -> None:
    """The data's features must be what the policy's audio encoder reads: ``data.features``
    (log-mel, or waveforms for s3prl upstreams) and, for log-mel, ``data.n_mels`` (Whisper
    large / Qwen2-Audio / Qwen3-ASR read 128, the tiny models and Whisper tiny 80)."""
    from speech_rl.data.dataset import encoder_input

    encoder = getattr(getattr(module, "policy", None), "encoder", None)
    hp = getattr(datamodule, "hparams", None) or {}
    kind, have_kind = encoder_input(encoder), hp.get("features", "logmel")
    if encoder is not None and "features" in hp and kind != have_kind:
        raise ValueError(f"data.features={have_kind}, but the model's audio encoder reads {kind}: "
                         f"set data.features={kind}")
    want = getattr(encoder, "n_mels", None) if kind == "logmel" else None
    have = hp.get("n_mels")
    if want is not None and have is not None and int(want) != int(have):
        raise ValueError(f"data.n_mels={have}, but the model's audio encoder reads {want} mel bins: "
                         f"set data.n_mels={want}")


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):       # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    plugins = [] if _sharded_checkpoints(cfg.trainer.get("strategy")) else [AtomicCheckpointIO()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=plugins)


def _sharded_checkpoints(strategy: Any) -> bool:
    """Whether the strategy writes checkpoints as folders of shards (its own writer)."""
    if not isinstance(strategy, DictConfig):
        return False
    target = str(strategy.get("_target_", ""))
    if target.endswith("ModelParallelStrategy"):
        return bool(strategy.get("save_distributed_checkpoint", True))
    return target.endswith("FSDPStrategy") and strategy.get("state_dict_type", "full") == "sharded"


def resume_path(cfg: DictConfig) -> str | None:
    """``ckpt_path`` if given; with ``resume=auto`` the newest loadable checkpoint of this
    run folder (``paths.output_dir``), corrupt ones skipped."""
    resume = cfg.get("resume")
    if resume not in (None, "auto", "never"):
        raise ValueError(f"resume must be 'auto' or 'never', got {resume!r} (give a path with ckpt_path=...)")
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    if resume == "auto":
        found = find_resume_checkpoint(Path(cfg.paths.output_dir) / "checkpoints")
        return str(found) if found else None
    return None


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
    # The RL modules optimise manually; Lightning then warns that an every_n_train_steps
    # checkpoint holds the weights *after* the step. That is the state we want: global_step
    # counts that step, and resume from it is exact (tests/modules/test_resume.py).
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization")


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data / module / trainer from ``cfg``, fit; returns the last logged metrics."""
    _quiet_duplicate_loggers()
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")      # plain containers: checkpoints load weights_only
    module = build_module(cfg)
    check_features(datamodule, module)
    trainer = build_trainer(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg))
    except SIGTERMException:
        saved = next((c.saved for c in trainer.callbacks if isinstance(c, Preemption)), None)
        log.error("preempted (SIGTERM / SIGUSR1) at step %d; %s. Continue with the same command and resume=auto "
                  "(same hydra.run.dir): it resumes from the newest loadable checkpoint. Exit code %d.",
                  trainer.global_step, f"checkpoint {saved}" if saved else "no preemption checkpoint was written "
                  "(add callbacks.preemption)", PREEMPTED_EXIT)
        raise SystemExit(PREEMPTED_EXIT) from None
    bad = datamodule.num_bad_rows
    if bad:
        log.warning("%d bad manifest rows were skipped: %s", bad,
                    "; ".join(b.summary(3) for b in datamodule.bad_rows.values() if len(b)))
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    log.info("finished at step %d%s", trainer.global_step, f"; final checkpoint {ckpt}" if ckpt.is_file() else "")
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
