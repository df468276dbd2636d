"""`speech-rl report`: a markdown table in the shape of the paper's Table 1 from runs'
evaluation files.

A run is a folder with ``eval/<set>.json`` files written by ``speech-rl eval ... --save``
and, for RL runs, ``.hydra/config.yaml`` (the reward terms and training manifests give
the row's label). Runs with the same label (seeds) are averaged; ``±`` gives the std.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

REWARD_NAMES = {"wer": "R1", "hallucination": "R2", "keyword": "R3"}


def run_label(run: Path) -> tuple[str, str]:
    """(reward, data) label of a run from its saved Hydra config; ("-", "-") for a run
    without one (the base model)."""
    cfg_path = run / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        return "-", "-"
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_path)
    if cfg.get("task") == "asr_sft":
        return "-", "-"
    terms = list((cfg.get("reward") or {}).get("terms") or {})
    names = sorted({REWARD_NAMES.get(t, t) for t in terms})
    rewards = ",".join(names) if names else "-"
    if cfg.get("algorithm", {}).get("name") == "mwer":
        rewards = "MWER"
    manifests = cfg.get("data", {}).get("train_manifest")
    manifests = [manifests] if isinstance(manifests, str) else list(manifests or [])
    data = ",".join(sorted(Path(str(m)).stem for m in manifests)) or "-"
    return rewards, data


def load_evals(run: Path) -> dict[str, dict]:
    files = sorted((run / "eval").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"run {run} has no eval/*.json (write them with speech-rl eval ... --save)")
    return {f.stem: json.loads(f.read_text()) for f in files}


def _cell(vals: list[float]) -> str:
    vals = [100 * v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.2f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.2f} ± {sd:.2f}"


def make_table(runs: list[Path], base: Path | None = None, sets: tuple[str, str] = ("test_short", "test_long")
               ) -> str:
    """Markdown table: reward | data | seeds | short WER Ins Del | long WER Ins Del; base first."""
    rows: dict[tuple[str, str], list[dict[str, dict]]] = {}
    order: list[tuple[str, str]] = []
    for run in ([base] if base else []) + list(runs):
        label = ("-", "-") if base is not None and run == base else run_label(run)
        if label not in rows:
            rows[label] = []
            order.append(label)
        rows[label].append(load_evals(run))
    head = (f"| reward | data | runs | {sets[0]} WER | Ins | Del | {sets[1]} WER | Ins | Del |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for label in order:
        evs = rows[label]
        cells = []
        for s in sets:
            for k in ("wer", "ins", "del"):
                cells.append(_cell([e[s][k] if s in e else None for e in evs]))
        lines.append(f"| {label[0]} | {label[1]} | {len(evs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
