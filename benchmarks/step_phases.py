"""Where an RL step spends its time (the paper's Figures 1 and 2: an ASR-GRPO step, a TTS
step with flow decoding + vocoding in the loop), its real-time factor and peak memory,
from a real training run.

Runs ``speech-rl train experiment=asr_grpo_tiny`` (or the experiment and overrides
given, e.g. ``--experiment tts_rl``) in a subprocess into a fresh folder, reads the
``time/<phase>`` scalars the ``PhaseTimer`` callback logged to TensorBoard, and prints,
over the steps after the first (warm-up), the median seconds of each phase the run has
(ASR: encode, rollout, reward, policy, sync, handoff; TTS: rollout, flow, reward, policy,
sync, handoff), its share of the step, the share of hand-off + weight sync, the audio
seconds trained per step second (ASR), and the peak resident memory of the run. Writes
``phases.md`` and ``phases.png`` (a stacked bar per step; needs matplotlib, extra
``bench``) into ``--out``. A run folder already made (``--run DIR``) is read as it is,
e.g. the main job's; ``--skip N`` drops its first N steps instead of one.

    python benchmarks/step_phases.py --out bench_out
    python benchmarks/step_phases.py --out bench_out -- trainer.max_steps=30 algorithm.group_size=8
    python benchmarks/step_phases.py --out bench_tts --experiment tts_rl -- reward=tts_r123 rollout.needs_audio=true
    python benchmarks/step_phases.py --out bench_tts --run outputs/<tts rl run> --skip 10
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("encode", "rollout", "flow", "reward", "policy", "sync", "handoff", "other")


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every TensorBoard event file under ``run_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"no TensorBoard event files under {run_dir}")
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def summarise(scalars: dict[str, dict[int, float]], skip: int = 1
              ) -> tuple[dict[str, float], dict[str, list[float]], float]:
    """Median seconds per phase the run logged over the steps after the first ``skip``,
    per-step series, audio seconds / step (NaN when the run logs none)."""
    steps = sorted(scalars.get("time/step", {}))[skip:]
    if not steps:
        raise SystemExit(f"need more than {skip} logged steps of time/step")
    phases = [p for p in PHASES if f"time/{p}" in scalars]
    series = {p: [scalars.get(f"time/{p}", {}).get(s, 0.0) for s in steps] for p in (*phases, "step")}
    med = {p: statistics.median(v) for p, v in series.items()}
    audio = scalars.get("train/audio_seconds", {})
    audio_per_step = statistics.median(audio[s] for s in steps if s in audio) if audio else float("nan")
    return med, series, audio_per_step


def table(med: dict[str, float], audio_per_step: float, peak_mb: float | None) -> str:
    step = med["step"]
    lines = ["| phase | median s/step | share of step |", "|---|---|---|"]
    for p in (p for p in PHASES if p in med):
        lines.append(f"| {p} | {med[p]:.4f} | {100 * med[p] / step:.1f}% |")
    lines.append(f"| **step** | {step:.4f} | 100% |")
    hs = med.get("handoff", 0.0) + med.get("sync", 0.0)
    lines += ["", f"- hand-off + weight sync: {hs:.4f} s = {100 * hs / step:.2f}% of the step (target <= 5%)"]
    if not math.isnan(audio_per_step):        # the run logs train/audio_seconds (ASR)
        lines.append(f"- real-time factor: {audio_per_step:.1f} s of audio per step / {step:.3f} s = "
                     f"{audio_per_step / step:.1f} audio seconds per step second")
    if peak_mb is not None:
        lines.append(f"- peak resident memory of the training process: {peak_mb:.0f} MB")
    return "\n".join(lines)


def plot(series: dict[str, list[float]], path: Path, title: str = "RL step time by phase") -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no PNG written")
        return False
    n = len(series["step"])
    fig, ax = plt.subplots(figsize=(max(6, n * 0.25), 4))
    bottom = [0.0] * n
    for p in (p for p in PHASES if p in series):
        ax.bar(range(n), series[p], bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, series[p])]
    ax.set_xlabel("step (after warm-up)")
    ax.set_ylabel("seconds")
    ax.set_title(title)
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for phases.md / phases.png")
    ap.add_argument("--run", type=Path, help="read this run folder instead of training")
    ap.add_argument("--experiment", default="asr_grpo_tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip", type=int, default=1, help="warm-up steps left out of the medians")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the run (after --)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    peak_mb = None
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="step_phases_"))
        cli = shutil.which("speech-rl") or str(Path(sys.executable).with_name("speech-rl"))
        cmd = [cli, "train", f"experiment={args.experiment}", f"trainer.max_steps={args.steps}",
               f"hydra.run.dir={run}",
               *args.overrides]
        print("running:", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"run finished in {time.perf_counter() - t0:.1f} s: {run}")
    med, series, audio = summarise(read_scalars(run), args.skip)
    text = table(med, audio, peak_mb)
    print(text)
    (args.out / "phases.md").write_text(text + "\n")
    if plot(series, args.out / "phases.png", f"step time by phase: {run.name if args.run else args.experiment}"):
        print(f"wrote {args.out / 'phases.md'} and {args.out / 'phases.png'}")


if __name__ == "__main__":
    main()
