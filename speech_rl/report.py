"""`speech-rl report`: markdown tables in the shape of the paper's Table 1 (ASR) and
Table 2 (TTS) from runs' evaluation files.

A run is a folder with ``eval/<set>.json`` files written by ``speech-rl eval ... --save``
(ASR) or ``speech-rl eval-tts ... --save`` (TTS) and, for RL runs, ``.hydra/config.yaml``
(the algorithm, sample filter, reward terms and training manifests give the row's label).
Runs with the same label (seeds) are averaged; ``±`` gives the std.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

REWARD_NAMES = {"wer": "R1", "hallucination": "R2", "keyword": "R3"}
# Table 2's numbering: R1 recognition accuracy, R2 duration (eq. 7), R3 diversity (eq. 8);
# rewards outside the paper keep their registry names.
TTS_REWARD_NAMES = {"wer": "R1", "duration": "R2", "diversity": "R3"}
TTS_METHODS = {"grpo": "GRPO", "diffro": "DiffRO", "combined": "Combined"}


_TASK_OF_MODULE = {"ASRGRPOModule": "asr_grpo", "ASRSFTModule": "asr_sft", "TTSSFTModule": "tts_sft",
                   "TTSRLModule": "tts_rl"}


def run_task(cfg) -> str:
    """asr_grpo / asr_sft / tts_sft / tts_rl of a saved run config: from ``module._target_``
    (or the ``task`` key runs saved before ``configs/module/`` existed)."""
    if cfg.get("task"):
        return str(cfg.task)
    target = str((cfg.get("module") or {}).get("_target_", ""))
    return _TASK_OF_MODULE.get(target.rsplit(".", 1)[-1], "asr_grpo")


def run_label(run: Path) -> tuple[str, str]:
    """(reward, data) label of a run from its saved Hydra config; ("-", "-") for a run
    without one (the base model)."""
    cfg_path = run / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        return "-", "-"
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_path)
    if run_task(cfg) == "asr_sft":
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


def tts_run_label(run: Path) -> tuple[str, str]:
    """(method, reward) label of a TTS run, as in Table 2: method is GRPO, DiffRO or
    Combined, with ``+ filter`` when the sample filter is on (for DiffRO the filter
    only drops sequences without a stop token, and is shown the same way); ("-", "-")
    for the supervised base or a run without a saved config."""
    cfg_path = run / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        return "-", "-"
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_path)
    if run_task(cfg) != "tts_rl":
        return "-", "-"
    algo = cfg.get("algorithm", {})
    method = TTS_METHODS.get(algo.get("name"), str(algo.get("name")))
    if algo.get("sample_filter"):
        method += " + filter"
    terms = list((cfg.get("reward") or {}).get("terms") or {})
    if algo.get("name") == "diffro":
        terms = ["wer"]  # DiffRO's only signal is the token ASR's log P(text | tokens)
    names = sorted({TTS_REWARD_NAMES.get(t, t) for t in terms})
    return method, (",".join(names) if names else "-")


def make_tts_table(runs: list[Path], base: Path | None = None, test_set: str = "tts_test",
                   base_set: str | None = None) -> str:
    """Markdown table in Table 2's shape: method | reward | runs | WER | Sub | Ins | Del |
    SS | MOS | seconds | duration ratio (when the files hold the judge's figures: WER (judge)
    | Sub | Ins | Del by the judge | WER (own ASR) | ...), from ``eval/<test_set>.json`` files written by
    ``speech-rl eval-tts --save``; base first; ``runs`` counts the files averaged (and the
    sampling draws each pools, ``3 x 6 draws``, when they were written with several
    ``--seed``s; ± is then the std of the runs' pooled means); WER and SS in %, as the paper; the
    duration ratio is to the base row's mean seconds (over the base run and any other
    run labelled as a base, e.g. the base evaluated with other sampling seeds; n/a
    without ``base``). ``base_set``: the base runs' eval file when it has another name
    (e.g. RL runs evaluated at a given step, ``tts_test_step600``, against a base that
    has no steps); default ``test_set``."""
    rows: dict[tuple[str, str], list[dict]] = {}
    order: list[tuple[str, str]] = []
    for run in ([base] if base else []) + list(runs):
        evs = load_evals(run)
        label = ("-", "-") if base is not None and run == base else tts_run_label(run)
        name = (base_set or test_set) if label == ("-", "-") else test_set
        if name not in evs:
            raise FileNotFoundError(f"run {run} has no eval/{name}.json (found: {sorted(evs)})")
        if label not in rows:
            rows[label] = []
            order.append(label)
        rows[label].append(evs[name])
    base_runs = rows[("-", "-")] if base is not None else []
    base_seconds = sum(e["seconds"] for e in base_runs) / len(base_runs) if base_runs else None
    judged = any("judge_wer" in e for evs in rows.values() for e in evs)
    heads = ["WER (judge)", "Sub", "Ins", "Del", "WER (own ASR)"] if judged else ["WER", "Sub", "Ins", "Del"]
    keys = ["judge_wer", "judge_sub", "judge_ins", "judge_del", "wer"] if judged else ["wer", "sub", "ins", "del"]
    lines = ["| method | reward | runs | " + " | ".join(heads) + " | SS | MOS | seconds | duration ratio |",
             "|" + "---|" * (len(heads) + 7)]
    for label in order:
        evs = rows[label]
        cells = [_cell([e.get(k) for e in evs]) for k in (*keys, "speaker_sim")]
        cells.append(_cell([e.get("mos") for e in evs], scale=1.0))
        cells.append(_cell([e.get("seconds") for e in evs], scale=1.0))
        cells.append(_cell([e["seconds"] / base_seconds if base_seconds else None for e in evs], scale=1.0, digits=3))
        lines.append(f"| {label[0]} | {label[1]} | {_runs_cell(evs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runs_cell(evs: list[dict]) -> str:
    """How many runs a row averages and, for files written by ``eval-tts --seed S S ...``,
    how many sampling draws each pools: ``3``, ``3 x 6 draws``, ``3 x 6/10 draws``."""
    draws = sorted({len(e.get("seeds") or [0]) for e in evs})
    return str(len(evs)) if draws == [1] else f"{len(evs)} x {'/'.join(map(str, draws))} draws"


def load_evals(run: Path) -> dict[str, dict]:
    files = sorted((run / "eval").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"run {run} has no eval/*.json (write them with speech-rl eval ... --save)")
    return {f.stem: json.loads(f.read_text()) for f in files}


def _cell(vals: list[float | None], scale: float = 100.0, digits: int = 2) -> str:
    """mean (± sample std over runs) of the values that exist, times ``scale``."""
    vals = [scale * v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


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
