"""The one atomic-write helper: every file speech-rl replaces (checkpoints, manifests,
metrics, hypotheses, shipped bases) is written to a temp file beside it, flushed, fsynced
and renamed over it, so that a crash or a full disk leaves the old file or the new one,
never a partial one."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open`` a temp file next to ``path`` (folders created); on a clean exit fsync and
    rename it over ``path``; on any exception remove it and leave ``path`` as it was.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> with atomic_open(d / "a.txt") as f: _ = f.write("new")
    >>> try:
    ...     with atomic_open(d / "a.txt") as f: _ = f.write("half"); raise OSError("disk full")
    ... except OSError: pass
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('new', ['a.txt'])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open(mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
