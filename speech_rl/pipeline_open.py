"""`speech-rl pipeline` (``--world open``, the default): the ASR half of the paper on the
open-vocabulary world, from a pretrained model, each stage cached in a work folder:

  1 synth   the main job's slice of the open corpus (``speech_rl.data.open_corpus``):
            test_short / test_long (held-out speakers, sentences and words; the first rows
            of the full corpus's sets of those names), an RL pool of the RL sentences read by
            the training voices (short, and long 20-30 s)
  2 base    ``base="pretrained"`` (default): Whisper tiny.en as it ships
            (``model=asr_whisper_tiny_xattn``), written once as a checkpoint for evaluation;
            or a speech-rl checkpoint (e.g. ``experiment=asr_sft_open_xattn``'s)
  3 select  D0 (random) and D2 (long audio) from the pool; neither needs hypotheses
  4 rl      GRPO from the base (``experiment``, default asr_rl_open_main, plus ``rl_overrides``)
  5 eval    base and RL model on test_short and test_long, after Whisper's English normaliser
  6 report  Table 1-shaped markdown table and an RL-vs-base line
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from speech_rl.checkpoint import atomic_torch_save
from speech_rl.pipeline import TEST_SETS, _done, _evaluate, check_work_base, resolve_base, rl_stage, summary_line

log = logging.getLogger(__name__)

# utterances per split of the main job (x ``scale``); the test rows are the first ones of the
# full corpus's test_short (300) and test_long (50): same sentences, voices and order
MAIN_SPLITS = {"test_short": 100, "test_long": 20, "rl_pool": 120, "rl_pool_long": 40}
MAIN_SIZES = "D0=120,D2=40"
PRETRAINED_MODEL = "asr_whisper_tiny_xattn"


def open_splits(scale: float = 1.0, counts: dict[str, int] | None = None) -> dict:
    """``OpenSplit``s of the open corpus's splits named in ``counts`` (default MAIN_SPLITS),
    their sizes x ``scale`` (at least 2)."""
    from speech_rl.data.open_corpus import DEFAULT_SPLITS

    return {k: replace(DEFAULT_SPLITS[k], n=max(2, int(round(n * scale)))) for k, n in (counts or MAIN_SPLITS).items()}


def write_pretrained_base(out: str | Path, model: str = PRETRAINED_MODEL, normalizer: str = "whisper") -> Path:
    """The pretrained model of ``configs/model/<model>.yaml`` as a speech-rl checkpoint
    (``hyper_parameters.model`` + the AudioLLM's ``policy.*`` weights, float32), so that
    ``speech-rl eval`` and ``model.init_from`` read it as they read a trained base;
    ``normalizer``: the text normaliser its output is scored with by default (tiny.en writes
    Whisper-style text). Written atomically; an existing file is kept."""
    import configs
    from speech_rl.models.audio_llm import build_audio_llm

    out = Path(out)
    if out.is_file():
        return out
    cfg_file = Path(configs.__file__).parent / "model" / f"{model}.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"model config {cfg_file} does not exist (base 'pretrained' takes a model= name)")
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
    policy = build_audio_llm(**cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"hyper_parameters": {"model": cfg, "normalizer": normalizer},
                       "state_dict": {f"policy.{k}": v for k, v in policy.state_dict().items()},
                       "speech_rl": {"pretrained": model}}, out)
    return out


def run_open_pipeline(work: str | Path, base: str | Path = "pretrained", rl_steps: int | None = None,
                      rl_overrides: list[str] | None = None, sizes: str = MAIN_SIZES, seed: int = 0,
                      scale: float = 1.0, experiment: str = "asr_rl_open_main", max_new_tokens: int = 160) -> str:
    """Run (or resume) the open-world pipeline in ``work``; returns the summary (also in
    ``WORK/report.md``). ``base``: "pretrained" or a checkpoint path; ``rl_steps``: None
    keeps the experiment's ``trainer.max_steps``; ``scale``: corpus and subset sizes x this."""
    from speech_rl.data.open_corpus import synth_open_corpus

    work = Path(work).resolve()
    data, timings = work / "data", {}
    corpus = data / "open"
    want = _subset_sizes(sizes, scale)
    given = None if str(base) == "pretrained" else resolve_base(base)
    pretrained = work / "base" / "pretrained.ckpt"
    if given is not None:
        check_work_base(work, given)
    elif (work / "base.json").is_file() and not pretrained.is_file():
        made = json.loads((work / "base.json").read_text())["path"]
        raise ValueError(f"work folder {work} holds stages made from base {made}, not the pretrained model: "
                         "use another --work")
    t = time.perf_counter()
    corpus_report = synth_open_corpus(corpus, open_splits(scale), seed=0, jobs=2)
    _done(timings, "synth", t, 6)

    t = time.perf_counter()
    base_ckpt = given or write_pretrained_base(pretrained)
    if given is None:                  # a given base was checked before synthesis
        check_work_base(work, base_ckpt)
    _done(timings, "base", t, 6)

    t = time.perf_counter()
    rl_dir = corpus / "rl"
    selection = _select(corpus, rl_dir, want, seed)
    _done(timings, "select", t, 6)

    t = time.perf_counter()
    rl_run = rl_stage(work, data, experiment, base_ckpt, rl_dir, rl_steps, seed, rl_overrides,
                      extra=("resume=auto",))      # a stopped run continues
    _done(timings, "rl", t, 6)

    t = time.perf_counter()
    base_eval = work / "runs" / "base_eval"
    _evaluate(corpus, ((base_eval, base_ckpt, None), (rl_run, rl_run / "checkpoints" / "last.ckpt", None)),
              max_new_tokens, TEST_SETS, "whisper")
    _done(timings, "eval", t, 6)
    summary = _summary(corpus, base_eval, rl_run, base_ckpt, timings, selection, corpus_report)
    (work / "report.md").write_text(summary + "\n")
    return summary


def _subset_sizes(sizes: str, scale: float) -> dict[str, int]:
    """``D0=N,D2=M`` x ``scale``; D1 and D3 are refused (they need a second system's hypotheses)."""
    from speech_rl.data.select import parse_sizes

    want = {k: max(1, int(round(v * scale))) for k, v in parse_sizes(sizes).items()}
    needs_systems = sorted(set(want) - {"D0", "D2"})
    if needs_systems:
        raise ValueError(f"sizes {sizes!r}: {', '.join(needs_systems)} need a second system's hypotheses; the "
                         "open-world main job selects D0 and D2 only (speech-rl data select builds the others)")
    return want


def _select(corpus: Path, rl_dir: Path, want: dict[str, int], seed: int) -> dict:
    """D0 and D2 (``data select``'s rules) from the RL pool, written to RL_DIR with
    ``selection.json``; an existing selection is kept."""
    from speech_rl.data.manifest import read_manifest, utterance_row, write_manifest
    from speech_rl.data.select import SelectionRules, select_subsets

    done = rl_dir / "selection.json"
    if done.is_file():
        return json.loads(done.read_text())
    pool = [u for p in ("rl_pool", "rl_pool_long")
            for u in read_manifest(corpus / f"{p}.jsonl", check_audio="header")[0]]
    subsets, report = select_subsets(pool, [], want, SelectionRules(), seed)
    rl_dir.mkdir(parents=True, exist_ok=True)
    for name, utts in subsets.items():
        write_manifest(rl_dir / f"{name}.jsonl", [utterance_row(u) for u in utts])
    done.write_text(json.dumps(report, indent=2) + "\n")
    return report


def hallucinated(corpus: Path, run: Path, split: str) -> list[str]:
    """Ids of RUN's test hypotheses (RUN/eval/SPLIT.hyps.jsonl) that R2's rule flags (a loop,
    or too long for the audio or the reference), after Whisper's normaliser: one looping
    hypothesis of a short utterance can add several points of WER to a 100-utterance set."""
    from rewards.asr import HallucinationReward

    rows = {r["id"]: r for r in map(json.loads, (corpus / f"{split}.jsonl").read_text().splitlines())}
    hyps = [json.loads(x) for x in (run / "eval" / f"{split}.hyps.jsonl").read_text().splitlines()]
    flags = HallucinationReward(normalizer="whisper")(hyp=[h["hyp"] for h in hyps],
                                                      ref=[rows[h["id"]]["text"] for h in hyps],
                                                      duration=[rows[h["id"]]["duration"] for h in hyps])
    return [h["id"] for h, f in zip(hyps, flags) if f < 0]


def _summary(corpus: Path, base_eval: Path, rl_run: Path, base_ckpt: Path, timings: dict, selection: dict,
             corpus_report: dict) -> str:
    from speech_rl.report import make_table

    metrics = {run: {x: json.loads((r / "eval" / f"{x}.json").read_text()) for x in TEST_SETS}
               for run, r in (("base", base_eval), ("rl", rl_run))}
    splits = corpus_report["splits"]
    speakers = "; ".join(f"{k} {len(v['speakers'])} ({', '.join(v['speakers'])})" for k, v in splits.items())
    missing = corpus_report.get("missing_engines") or {}
    lines = [make_table([rl_run], base=base_eval), "", summary_line(metrics["base"], metrics["rl"]),
             "WER after Whisper's English normaliser (both sides); test sets: held-out speakers and sentences, "
             f"{100 * corpus_report['oov_rate_test_vs_training_text']:.1f}% of their word types in no training text",
             "hypotheses R2's rule flags (loop / too long): " + "; ".join(
                 f"{name} {x} {', '.join(hallucinated(corpus, run, x)) or 'none'}"
                 for name, run in (("base", base_eval), ("RL", rl_run)) for x in TEST_SETS),
             f"speakers per split: {speakers}",
             f"base: {base_ckpt}; RL run: {rl_run}",
             f"RL subsets: {selection['selected']} from rl_pool, rl_pool_long",
             "stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    if missing:
        lines.append("voices skipped (engine not installed): " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    return "\n".join(lines)
