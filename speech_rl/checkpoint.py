"""Checkpoints that are never half-written, and ``resume=auto``.

``AtomicCheckpointIO`` writes to a temporary file in the same folder, flushes it to disk
and renames it over the target, so a crash (even SIGKILL) leaves either the old file or
the new one. ``find_resume_checkpoint`` picks the newest checkpoint that loads, skipping
corrupt or partial ones with a message.
"""
from __future__ import annotations

import errno as errno_mod
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from speech_rl.atomic import atomic_open

log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the file it would
    have replaced, and every other checkpoint, are untouched."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the target's folder, fsync, rename over the target:
    a crash leaves either the old file or the new one, never a partial one. A failed write
    (e.g. ENOSPC) removes the temp file and raises ``CheckpointWriteError`` naming the path
    and the reason."""
    target = Path(path)
    try:
        with atomic_open(target, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as exc:   # torch.save reports a failed write as RuntimeError
        errno = _errno_in(exc, target.parent)
        if isinstance(exc, RuntimeError) and not errno and "writ" not in str(exc).lower():
            raise                 # not a write failure (e.g. a DataLoader worker died meanwhile): as it is
        reason = os.strerror(errno) if errno else f"{type(exc).__name__}: {exc}"
        raise CheckpointWriteError(errno, f"could not write checkpoint {target}: {reason}; the previous "
                                   f"checkpoints in {target.parent} are untouched") from exc


def _errno_in(exc: BaseException, folder: Path) -> int | None:
    """The errno of the first OSError in ``exc``'s cause / context chain. torch.save reports
    a short write as a RuntimeError without one; then ENOSPC if ``folder``'s file system has
    under 1 MiB free (the partial temp file still fills it at this point)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    try:
        return errno_mod.ENOSPC if shutil.disk_usage(folder).free < 2**20 else None
    except OSError:
        return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: temp file + fsync + rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None if it loads and has what a resume needs."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, garbage, unpickling error...
        return f"does not load ({type(exc).__name__}: {str(exc)[:120]})"
    missing = [k for k in ("state_dict", "global_step", "loops", "optimizer_states") if k not in ck]
    return f"lacks {missing}" if missing else None


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest (by modification time) loadable ``*.ckpt`` in ``ckpt_dir``; None if there is none."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    candidates = sorted((p for p in d.glob("*.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in candidates:
        why = checkpoint_problem(p)
        if why is None:
            log.info("resume=auto: resuming from %s", p)
            return p
        log.warning("resume=auto: skipping checkpoint %s: %s", p, why)
    if candidates:
        log.warning("resume=auto: no usable checkpoint in %s; starting from scratch", d)
    return None


NOT_WEIGHT_SETTINGS = frozenset({"init_from", "init_parts", "lora", "gradient_checkpointing", "prompt", "eos"})


def config_differences(saved: Any, current: Any, prefix: str = "model") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts, as
    ``"key: saved -> current"`` (keys absent on one side count). Settings that do not shape
    the weights loaded are ignored: ``init_from``, ``lora`` (adapters go on after the base
    loads) and ``gradient_checkpointing``."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            if k in NOT_WEIGHT_SETTINGS:
                continue
            out += config_differences(saved.get(k), current.get(k), f"{prefix}.{k}")
        return out
    return [] if saved == current else [f"{prefix}: {saved!r} -> {current!r}"]


def load_module_weights(module: torch.nn.Module, path: str | Path, prefix: str, what: str = "model",
                        config: Mapping | None = None) -> None:
    """Load weights saved by speech-rl into ``module``: a Lightning checkpoint whose
    ``<prefix>.*`` keys are the module, or a plain state dict. A missing file, shape
    mismatches and missing / unexpected keys raise, naming ``what`` (a tied
    ``lm_head.weight`` may be absent). With ``config`` (the model config being built), a
    Lightning checkpoint's own ``hyper_parameters["model"]`` is compared with it and every
    difference is logged as a warning: weights load into a model whose non-weight settings
    (e.g. ``encoder.chunk_frames``) changed, which may be intended (fine-tuning) or not."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init_from checkpoint {p} does not exist")
    load_module_state(module, torch.load(p, map_location="cpu", weights_only=False), p, prefix, what, config)


def load_module_state(module: torch.nn.Module, sd: dict, p: str | Path, prefix: str, what: str = "model",
                      config: Mapping | None = None) -> None:
    """``load_module_weights`` on a checkpoint already read from ``p`` (a file read once
    for several parts, e.g. the policy and the CTC head)."""
    hp = sd.get("hyper_parameters")
    saved_cfg = hp.get("model") if isinstance(hp, Mapping) else None
    if config is not None and saved_cfg is not None:
        diff = config_differences(_plain(saved_cfg), _plain(config))
        if diff:
            log.warning("init_from %s: the %s config differs from the checkpoint's: %s", p, what, "; ".join(diff))
    sd = sd.get("state_dict", sd)
    if any(k.startswith(prefix + ".") for k in sd):
        sd = {k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}
    own = module.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"checkpoint {p} was saved from a {what} of another shape: " + "; ".join(bad[:5]))
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]    # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"checkpoint {p} does not match the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _plain(cfg: Any) -> Any:
    """A DictConfig / dict tree as plain Python containers."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    return cfg


def export_weights(src: str | Path, dst: str | Path, dtype: str = "float16",
                   prefixes: tuple[str, ...] = ("policy.", "ctc_head.")) -> dict:
    """Write a small, shippable copy of a speech-rl checkpoint: its ``hyper_parameters``
    and the ``state_dict`` entries under ``prefixes`` (the model and the CTC head; no
    optimiser, reference model or loop state) with floating tensors cast to ``dtype``.

    Every loader that reads a checkpoint (``model.init_from``, ``speech-rl eval``,
    ``load_ctc_head``) reads the copy; weights are cast back to the model's dtype on load.
    Returns {"tensors", "bytes", "source_step"}. ``dst`` is written atomically.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint {src} does not exist")
    if dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}")
    ck = torch.load(src, map_location="cpu", weights_only=False)
    if "hyper_parameters" not in ck or "state_dict" not in ck:
        raise ValueError(f"{src} is not a speech-rl (Lightning) checkpoint: no hyper_parameters / state_dict")
    cast = getattr(torch, dtype)
    sd = {k: (v.to(cast) if v.is_floating_point() else v).clone() for k, v in ck["state_dict"].items()
          if k.startswith(prefixes)}
    if not sd:
        raise ValueError(f"{src} has no weights under {prefixes}")
    out = {"hyper_parameters": ck["hyper_parameters"], "state_dict": sd,
           "speech_rl_export": {"source": str(src), "global_step": ck.get("global_step"), "dtype": dtype}}
    dropped = (ck.get("speech_rl") or {}).get("lora_base_dropped")
    if dropped:                  # adapters only: the loader rebuilds the LoRA base from model.init_from
        out["speech_rl"] = {"lora_base_dropped": dropped}
    atomic_torch_save(out, dst)
    return {"tensors": len(sd), "bytes": dst.stat().st_size, "source_step": ck.get("global_step")}
