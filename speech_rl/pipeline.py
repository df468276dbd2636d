"""`speech-rl pipeline`: the ASR half of the paper end to end, each stage cached in a
work folder so that a rerun skips what exists:

  1 synth   the ASR corpus (configs/data/asr_corpus.yaml, scaled by ``scale``)
  2 base    supervised base model (experiment=asr_sft_base), reused if base.ckpt exists,
            or a given checkpoint (``base=``: the shipped one, see README)
  3 hyps    greedy transcripts of the RL pool by two systems: the base's LLM decoder and
            its encoder's CTC head (non-autoregressive: it cannot loop or invent sentences)
  4 select  D0-D3 (speech-rl data select rules)
  5 rl      GRPO from the base (experiment=asr_rl plus ``rl_overrides``)
  6 eval    base and RL model on the held-out-voice short and long test sets
  7 report  Table 1-shaped markdown table
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def _train(args: list[str], data_dir: Path, run_dir: Path) -> None:
    env = dict(os.environ, SPEECH_RL_DATA=str(data_dir))
    cmd = [sys.executable, "-m", "speech_rl.cli", "train", *args, f"hydra.run.dir={run_dir}",
           "trainer.enable_progress_bar=false"]
    log.info("running: speech-rl train %s", " ".join(args))
    with (run_dir.parent / f"{run_dir.name}.log").open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed: speech-rl train {' '.join(args)} (log: {run_dir.parent / run_dir.name}.log)")


def _done(timings: dict[str, float], stage: str, t0: float) -> None:
    """Record a stage's seconds since ``t0`` and log them as ``[i/7] stage: N s``."""
    timings[stage] = time.perf_counter() - t0
    log.info("[%d/7] %s: %.0f s", len(timings), stage, timings[stage])


EVAL_AND_RL_SPLITS = ("val", "test_short", "test_long", "rl_pool", "rl_pool_long")


def corpus_splits(scale: float) -> dict:
    import configs

    splits = OmegaConf.to_container(OmegaConf.load(Path(configs.__file__).parent / "data" / "asr_corpus.yaml").synth.splits)
    for spec in splits.values():
        spec["n"] = max(2, int(round(spec["n"] * scale)))
    return splits


def run_pipeline(work: str | Path, scale: float = 1.0, base_steps: int = 2000, rl_steps: int = 150,
                 rl_overrides: list[str] | None = None, sizes: str = "D0=200,D1=200,D2=150,D3=200",
                 seed: int = 0, max_new_tokens: int = 512, base: str | Path | None = None) -> str:
    from speech_rl.data.manifest import read_manifest, write_manifest
    from speech_rl.data.select import SelectionRules, select_subsets, utterance_row
    from speech_rl.data.synth import synth_corpus
    from speech_rl.evaluate import (ctc_transcribe_manifest, load_ctc_head, load_policy, score,
                                    transcribe_manifest, write_hyps)
    from speech_rl.report import make_table

    work = Path(work).resolve()
    data = work / "data"
    corpus = data / "asr"
    if base is not None and not Path(base).is_file():
        raise FileNotFoundError(f"base checkpoint {base} does not exist")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    splits = corpus_splits(scale)
    if base is not None:             # no base training: only what RL, selection and evaluation read
        splits = {k: v for k, v in splits.items() if k in EVAL_AND_RL_SPLITS}
    synth_corpus(corpus, splits, seed=0)
    _done(timings, "synth", t)

    t = time.perf_counter()
    base_dir = work / "base"
    base_ckpt = base_dir / "base.ckpt"
    if base is not None:
        base_ckpt = Path(base).resolve()
    elif not base_ckpt.exists():
        run = work / "runs" / "base"
        run.mkdir(parents=True, exist_ok=True)
        every = max(1, base_steps // 4)
        _train(["experiment=asr_sft_base", f"trainer.max_steps={base_steps}", f"trainer.val_check_interval={every}",
                f"callbacks.checkpoint.every_n_train_steps={every}", "callbacks.checkpoint.save_top_k=-1",
                "callbacks.checkpoint.monitor=null",
                f"seed={seed}"], data, run)
        base_dir.mkdir(exist_ok=True)
        shutil.copy(run / "checkpoints" / "last.ckpt", base_ckpt)
    _done(timings, "base", t)

    t = time.perf_counter()
    hyp_dir = work / "hyps"
    hyp_dir.mkdir(exist_ok=True)
    pools = [corpus / "rl_pool.jsonl", corpus / "rl_pool_long.jsonl"]
    systems, policy = [], None
    for name in ("llm", "ctc"):
        out = hyp_dir / f"{name}.jsonl"
        if not out.exists():
            policy = policy or load_policy(base_ckpt)
            if name == "ctc":
                head = load_ctc_head(base_ckpt, policy)
                rows = [r for p in pools for r in ctc_transcribe_manifest(policy, head, p, batch_size=32, progress=True)]
            else:
                rows = [r for p in pools for r in transcribe_manifest(policy, p, batch_size=32, progress=True,
                                                                      max_new_tokens=max_new_tokens)]
            write_hyps(rows, out)
        systems.append({json.loads(x)["id"]: json.loads(x)["hyp"] for x in out.read_text().splitlines()})
    _done(timings, "hyps", t)

    t = time.perf_counter()
    rl_dir = corpus / "rl"
    pool = [u for p in pools for u in read_manifest(p, check_audio="header")[0]]
    want = {k: int(v) for k, v in (x.split("=") for x in sizes.split(","))}
    want = {k: max(1, int(round(v * scale))) for k, v in want.items()}
    subsets, report = select_subsets(pool, systems, want, SelectionRules(), seed)
    rl_dir.mkdir(parents=True, exist_ok=True)
    for name, utts in subsets.items():
        write_manifest(rl_dir / f"{name}.jsonl", [utterance_row(u) for u in utts])
    (rl_dir / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    _done(timings, "select", t)

    t = time.perf_counter()
    rl_run = work / "runs" / "rl"
    if not (rl_run / "checkpoints" / "last.ckpt").exists():
        rl_run.mkdir(parents=True, exist_ok=True)
        _train(["experiment=asr_rl", f"model.init_from={base_ckpt}", f"paths.rl_dir={rl_dir}",
                f"trainer.max_steps={rl_steps}", f"seed={seed}", *(rl_overrides or [])], data, rl_run)
    _done(timings, "rl", t)

    t = time.perf_counter()
    base_eval = work / "runs" / "base_eval"
    for run, ckpt in ((base_eval, base_ckpt), (rl_run, rl_run / "checkpoints" / "last.ckpt")):
        policy = load_policy(ckpt)
        for s in ("test_short", "test_long"):
            out = run / "eval" / f"{s}.json"
            if out.exists():
                continue
            rows = transcribe_manifest(policy, corpus / f"{s}.jsonl", batch_size=32, max_new_tokens=max_new_tokens,
                                       progress=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(score(rows), manifest=str(corpus / f"{s}.jsonl"), checkpoint=str(ckpt)),
                                      indent=2) + "\n")
            write_hyps(rows, run / "eval" / f"{s}.hyps.jsonl")
    _done(timings, "eval", t)
    table = make_table([rl_run], base=base_eval)
    summary = "\n".join([table, "", "stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
                         f"RL subsets: {report['selected']} (qualified {report['qualified']})"])
    (work / "report.md").write_text(summary + "\n")
    return summary
