"""`speech-rl plot`: stability curves (the paper's Figure 3) from runs' TensorBoard files.

One panel per tag, one line per run (labelled by its folder name, or ``label=path``),
optionally smoothed by an exponential moving average as TensorBoard does. Written with
matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

from pathlib import Path


def read_scalars(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """tag -> (steps, values) from every event file under ``run`` (sorted by step; a step
    logged twice, e.g. after a resume, keeps its last value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run}")
    merged: dict[str, dict[int, float]] = {}
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            merged.setdefault(tag, {}).update({e.step: e.value for e in ea.Scalars(tag)})
    return {t: (sorted(d), [d[s] for s in sorted(d)]) for t, d in merged.items()}


def ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard-style smoothing with debiasing; weight 0 returns the values.

    >>> [round(x, 4) for x in ema([1.0, 3.0], 0.5)]
    [1.0, 2.3333]
    """
    out, last, n = [], 0.0, 0
    for v in values:
        n += 1
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight ** n) if weight else v)
    return out


def plot_runs(runs: list[str], tags: list[str], out: str | Path, smooth: float = 0.6) -> Path:
    """Runs (``path`` or ``label=path``) x tags -> one PNG; a tag no run has raises, naming
    the tags that exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    data = []
    for r in runs:
        label, _, path = r.rpartition("=") if "=" in r else (Path(r).name, "", r)
        data.append((label, read_scalars(Path(path))))
    known = sorted({t for _, d in data for t in d})
    missing = [t for t in tags if not any(t in d for _, d in data)]
    if missing:
        raise ValueError(f"no run logged {missing}; tags present: {', '.join(known)}")
    fig, axes = plt.subplots(len(tags), 1, figsize=(7, 2.6 * len(tags)), sharex=True, squeeze=False)
    for ax, tag in zip(axes[:, 0], tags):
        for label, d in data:
            if tag in d:
                steps, vals = d[tag]
                ax.plot(steps, ema(vals, smooth), label=label, linewidth=1.2)
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
