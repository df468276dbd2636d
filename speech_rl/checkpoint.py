"""Checkpoints that are never half-written, and ``resume=auto``.

``AtomicCheckpointIO`` writes to a temporary file in the same folder, flushes it to disk
and renames it over the target, so a crash (even SIGKILL) leaves either the old file or
the new one. ``find_resume_checkpoint`` picks the newest checkpoint that loads, skipping
corrupt or partial ones with a message.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the target's folder, fsync, rename over the target:
    a crash leaves either the old file or the new one, never a partial one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


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
