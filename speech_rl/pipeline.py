"""`speech-rl pipeline`: the ASR half of the paper end to end, each stage cached in a
work folder so that a rerun skips what exists:

  1 synth   the ASR corpus (configs/data/asr_corpus.yaml, scaled by ``scale``); with a
            given base only the splits RL, selection and evaluation read
  2 base    ``base="shipped"`` (default): the base shipped in speech_rl/assets (its
            provenance in speech_rl/assets/README.md); a path: that checkpoint;
            ``"train"``: train one here, experiment=asr_sft_base then
            experiment=asr_sft_long, each reused if its checkpoint exists
  3 hyps    greedy transcripts of the RL pool by two systems: the base's LLM decoder and
            its encoder's CTC head (non-autoregressive: it cannot loop or invent sentences);
            the pool (``pools``, default the ``*_heldout`` splits) has no sentence of the
            test sets
  4 select  D0-D3 (speech-rl data select rules); counts the RL utterances that share a
            sentence with the test sets (0 for the default pools)
  5 rl      GRPO from the base (``experiment``, default asr_rl_best, plus ``rl_overrides``)
  6 eval    base and RL model on the held-out-voice short and long test sets, and on
            val_long (held-out long audio of the training voices, as the RL pool)
  7 report  Table 1-shaped markdown table
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from speech_rl.atomic import atomic_open

log = logging.getLogger(__name__)


PIPELINE_SIZES = "D0=200,D1=200,D2=150,D3=200"     # RL subsets of the main job (measured with these)
SHIPPED_BASE = Path(__file__).parent / "assets" / "asr_base.pt"


def _train(args: list[str], data_dir: Path, run_dir: Path) -> None:
    """``speech-rl train ARGS`` in a child process with its output (progress bar
    included) both shown on stderr and kept in ``RUN_DIR.log``."""
    env = dict(os.environ, SPEECH_RL_DATA=str(data_dir), PYTHONUNBUFFERED="1")   # a pipe: no block buffering
    cmd = [sys.executable, "-m", "speech_rl.cli", "train", *args, f"hydra.run.dir={run_dir}"]
    log_path = run_dir.parent / f"{run_dir.name}.log"
    log.info("running: speech-rl train %s (log: %s)", " ".join(args), log_path)
    with log_path.open("wb") as f, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT) as proc:
        while chunk := proc.stdout.read1(65536):
            f.write(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed: speech-rl train {' '.join(args)} (log: {log_path})")


def resolve_base(base: str | Path | None) -> Path | None:
    """The base checkpoint a pipeline starts from: ``"shipped"`` -> the packaged one,
    ``"train"`` or None -> None (train it), anything else must be an existing file."""
    if base is None or str(base) == "train":
        return None
    if str(base) == "shipped":
        if not SHIPPED_BASE.is_file():
            raise FileNotFoundError(f"the shipped base {SHIPPED_BASE} is missing from this install; "
                                    "reinstall speech-rl or pass --base CKPT / --base train")
        return SHIPPED_BASE
    if not Path(base).is_file():
        raise FileNotFoundError(f"base checkpoint {base} does not exist")
    return Path(base).resolve()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def check_work_base(work: Path, base_ckpt: Path | None) -> None:
    """Tie a work folder to one base: hypotheses, RL subsets, RL run and evaluations made
    from another base must not be reused. The first call records the base's sha256 in
    ``WORK/base.json``; a later call with a different base (None: one still to be
    trained) raises, naming both."""
    record = work / "base.json"
    digest = _sha256(base_ckpt) if base_ckpt is not None else None
    if record.is_file():
        old = json.loads(record.read_text())
        if old["sha256"] != digest:
            new = f"{base_ckpt} (sha256 {digest[:12]})" if digest else "one trained with --base train"
            raise ValueError(f"work folder {work} holds stages made from base {old['path']} (sha256 "
                             f"{old['sha256'][:12]}), not {new}: use another --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"path": str(base_ckpt), "sha256": digest}, indent=2) + "\n")


def summary_line(base: dict, rl: dict, sets: tuple[str, ...] = ("test_long", "test_short"),
                 label: str = "RL vs base") -> str:
    """One line comparing the RL model with its base from their ``eval/<set>.json``
    metrics (fractions, as ``speech-rl eval --save`` writes them): relative change of
    WER and the changes of insertions and deletions, in %."""
    parts = []
    for s in sets:
        b, r = base[s], rl[s]
        rel = 100.0 * (r["wer"] - b["wer"]) / b["wer"] if b["wer"] else float("nan")
        parts.append(f"{s} WER {100 * b['wer']:.2f} -> {100 * r['wer']:.2f} ({rel:+.1f}% rel), "
                     f"Ins {100 * b['ins']:.2f} -> {100 * r['ins']:.2f}, "
                     f"Del {100 * b['del']:.2f} -> {100 * r['del']:.2f}")
    return f"{label}: " + "; ".join(parts)


def _done(timings: dict[str, float], stage: str, t0: float, stages: int = 7) -> None:
    """Record a stage's seconds since ``t0`` and log them as ``[i/stages] stage: N s``."""
    timings[stage] = time.perf_counter() - t0
    log.info("[%d/%d] %s: %.0f s", len(timings), stages, stage, timings[stage])


EVAL_SETS = ("test_short", "test_long", "val_long")   # test_*: held-out voices; val_long: training voices
TEST_SETS = ("test_short", "test_long")
RL_POOLS = ("rl_pool_heldout", "rl_pool_long_heldout")   # no sentence of TEST_SETS (asr_corpus.yaml)
LEGACY_POOLS = ("rl_pool", "rl_pool_long")               # the pools before 2026-11-23: they share sentences
# the old pools stay synthesised even when unused: eSpeak NG's samples depend on the calls made
# before in the process, so dropping them would change val_long's audio
EVAL_AND_RL_SPLITS = ("val", "val_long", *TEST_SETS, *LEGACY_POOLS, *RL_POOLS)


def check_work_pools(work: Path, pools: tuple[str, ...]) -> None:
    """Tie a work folder to one RL pool, as ``check_work_base`` ties it to one base: the
    first call records ``pools`` in ``WORK/pools.json``; a later call with other pools
    raises. A folder with hypotheses and no record was made from ``LEGACY_POOLS``."""
    record = work / "pools.json"
    if record.is_file():
        old = tuple(json.loads(record.read_text())["pools"])
    elif (work / "hyps").is_dir():
        old = LEGACY_POOLS
    else:
        work.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"pools": list(pools)}, indent=2) + "\n")
        return
    if old != tuple(pools):
        raise ValueError(f"work folder {work} holds hypotheses and RL data of the pools {', '.join(old)}, "
                         f"not {', '.join(pools)}: use another --work")


def shared_sentence_count(utts, sentences: set[str]) -> int:
    """How many distinct utterances (by id) contain one of ``sentences``."""
    from speech_rl.data.synth import split_sentences

    return len({u.id for u in utts if sentences.intersection(split_sentences(u.text))})


def corpus_splits(scale: float) -> dict:
    import configs

    splits = OmegaConf.to_container(OmegaConf.load(Path(configs.__file__).parent / "data" / "asr_corpus.yaml").synth.splits)
    for spec in splits.values():
        spec["n"] = max(2, int(round(spec["n"] * scale)))
    return splits


def run_pipeline(work: str | Path, scale: float = 1.0, base_steps: int = 2000, rl_steps: int | None = None,
                 rl_overrides: list[str] | None = None, sizes: str = PIPELINE_SIZES,
                 seed: int = 0, max_new_tokens: int = 512, base: str | Path | None = "shipped",
                 base_long_steps: int = 400, experiment: str = "asr_rl_best",
                 pools: tuple[str, ...] = RL_POOLS) -> str:
    """Run (or resume) the pipeline in ``work``; returns the summary (also in
    ``WORK/report.md``). ``base``: "shipped", "train" or a checkpoint path; ``pools``:
    the corpus splits RL data is selected from;
    ``base_steps`` / ``base_long_steps``: the two base stages' steps when training
    (0 skips stage 2); ``rl_steps``: None keeps the experiment's ``trainer.max_steps``."""
    from speech_rl.data.synth import synth_corpus

    work = Path(work).resolve()
    data = work / "data"
    corpus = data / "asr"
    pools = tuple(pools)
    splits = corpus_splits(scale)
    given = _check_inputs(work, pools, splits, base)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if given is not None:            # no base training: only what RL, selection and evaluation read
        splits = {k: v for k, v in splits.items() if k in EVAL_AND_RL_SPLITS or k in pools}
    synth_corpus(corpus, splits, seed=0)
    _done(timings, "synth", t)

    t = time.perf_counter()
    base_ckpt = given
    if given is None:
        base_ckpt = _train_base(work, data, base_steps, base_long_steps, seed)
        check_work_base(work, base_ckpt)
    _done(timings, "base", t)

    t = time.perf_counter()
    pool_files = [corpus / f"{p}.jsonl" for p in pools]
    systems, policy = _base_hypotheses(work / "hyps", base_ckpt, pool_files, max_new_tokens)
    _done(timings, "hyps", t)

    t = time.perf_counter()
    rl_dir = corpus / "rl"
    report = _select_rl_data(corpus, rl_dir, pool_files, systems, sizes, scale, seed)
    report["pools"] = list(pools)
    (rl_dir / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    _done(timings, "select", t)

    t = time.perf_counter()
    rl_run = rl_stage(work, data, experiment, base_ckpt, rl_dir, rl_steps, seed, rl_overrides)
    _done(timings, "rl", t)

    t = time.perf_counter()
    base_eval = work / "runs" / "base_eval"
    _evaluate(corpus, ((base_eval, base_ckpt, policy), (rl_run, rl_run / "checkpoints" / "last.ckpt", None)),
              max_new_tokens)
    _done(timings, "eval", t)
    summary = _summary(base_eval, rl_run, base_ckpt, timings, report, pools)
    (work / "report.md").write_text(summary + "\n")
    return summary


def rl_stage(work: Path, data: Path, experiment: str, base_ckpt: Path, rl_dir: Path, rl_steps: int | None,
             seed: int, rl_overrides: list[str] | None, extra: tuple[str, ...] = ()) -> Path:
    """The RL stage of a pipeline: ``speech-rl train experiment=EXPERIMENT`` from ``base_ckpt``
    on the subsets in ``rl_dir`` into WORK/runs/rl (``rl_steps``: None keeps the experiment's
    ``trainer.max_steps``; ``extra`` overrides go before the user's); skipped when its
    ``last.ckpt`` exists. Returns the run folder."""
    rl_run = work / "runs" / "rl"
    if not (rl_run / "checkpoints" / "last.ckpt").exists():
        rl_run.mkdir(parents=True, exist_ok=True)
        steps = [] if rl_steps is None else [f"trainer.max_steps={rl_steps}"]
        _train([f"experiment={experiment}", f"model.init_from={base_ckpt}", f"paths.rl_dir={rl_dir}",
                *steps, f"seed={seed}", *extra, *(rl_overrides or [])], data, rl_run)
    return rl_run


def _check_inputs(work: Path, pools: tuple[str, ...], splits: dict, base: str | Path | None) -> Path | None:
    """Refuse unknown pools and a WORK folder made with another base or other pools; returns
    the given base checkpoint (None: train one)."""
    unknown = [p for p in pools if p not in splits]
    if not pools or unknown:
        raise ValueError(f"pools {list(pools)}: {'unknown corpus splits ' + str(unknown) if unknown else 'none given'}"
                         f"; the corpus has {', '.join(splits)}")
    given = resolve_base(base)
    if given is not None:
        check_work_base(work, given)
    elif (work / "base.json").is_file() and not (work / "base" / "base.ckpt").is_file():
        check_work_base(work, None)                # made from a given base: do not train another here
    check_work_pools(work, pools)
    return given


def _base_hypotheses(hyp_dir: Path, base_ckpt: Path, pool_files: list[Path], max_new_tokens: int):
    """The base's two systems on the RL pools (its LLM decoder and its CTC head), each cached
    in HYP_DIR/{llm,ctc}.jsonl. Returns the two id -> hypothesis maps and the base policy
    when it had to be loaded (None when both were cached)."""
    from speech_rl.evaluate import (ctc_transcribe_manifest, load_ctc_head, load_policy, read_checkpoint,
                                    transcribe_manifest, write_hyps)

    hyp_dir.mkdir(exist_ok=True)
    systems, policy, base_file = [], None, None    # the base, read and loaded once
    for name in ("llm", "ctc"):
        out = hyp_dir / f"{name}.jsonl"
        if not out.exists():
            base_file = base_file or read_checkpoint(base_ckpt)
            policy = policy or load_policy(base_ckpt, base_file)
            if name == "ctc":
                head = load_ctc_head(base_ckpt, policy, base_file)
                rows = [r for p in pool_files
                        for r in ctc_transcribe_manifest(policy, head, p, batch_size=32, progress=True)]
            else:
                rows = [r for p in pool_files for r in transcribe_manifest(policy, p, batch_size=32, progress=True,
                                                                      max_new_tokens=max_new_tokens)]
            write_hyps(rows, out)
        systems.append({json.loads(x)["id"]: json.loads(x)["hyp"] for x in out.read_text().splitlines()})
    return systems, policy


def _select_rl_data(corpus: Path, rl_dir: Path, pool_files: list[Path], systems: list[dict], sizes: str,
                    scale: float, seed: int) -> dict:
    """D0-D3 from the pools (``data select``'s rules) written to RL_DIR; returns the
    selection report with the count of RL utterances that share a test sentence."""
    from speech_rl.data.manifest import read_manifest, utterance_row, write_manifest
    from speech_rl.data.select import SelectionRules, parse_sizes, select_subsets
    from speech_rl.data.synth import manifest_sentences

    pool = [u for p in pool_files for u in read_manifest(p, check_audio="header")[0]]
    want = {k: max(1, int(round(v * scale))) for k, v in parse_sizes(sizes).items()}
    subsets, report = select_subsets(pool, systems, want, SelectionRules(), seed)
    test_sentences = set().union(*(manifest_sentences(corpus / f"{s}.jsonl") for s in TEST_SETS))
    report["share_a_test_sentence"] = shared_sentence_count([u for v in subsets.values() for u in v], test_sentences)
    rl_dir.mkdir(parents=True, exist_ok=True)
    for name, utts in subsets.items():
        write_manifest(rl_dir / f"{name}.jsonl", [utterance_row(u) for u in utts])
    return report


def _evaluate(corpus: Path, runs, max_new_tokens: int, sets: tuple[str, ...] = EVAL_SETS,
              normalizer: str = "plain") -> None:
    """Each (run folder, checkpoint, loaded policy or None) on ``sets`` -> RUN/eval/SET.json
    and its hypotheses, scored after ``normalizer``; sets already evaluated are kept."""
    from speech_rl.evaluate import load_policy, save_metrics, score, transcribe_manifest, write_hyps
    from speech_rl.metrics import make_normalizer

    for run, ckpt, model in runs:
        for s in sets:
            out = run / "eval" / f"{s}.json"
            if out.exists():
                continue
            model = model or load_policy(ckpt)
            rows = transcribe_manifest(model, corpus / f"{s}.jsonl", batch_size=32, max_new_tokens=max_new_tokens,
                                       progress=True)
            save_metrics(out, dict(score(rows, make_normalizer(normalizer)), manifest=str(corpus / f"{s}.jsonl"),
                                   checkpoint=str(ckpt), normalizer=normalizer))
            write_hyps(rows, run / "eval" / f"{s}.hyps.jsonl")


def _summary(base_eval: Path, rl_run: Path, base_ckpt: Path, timings: dict, report: dict, pools) -> str:
    from speech_rl.report import make_table

    table = make_table([rl_run], base=base_eval)
    metrics = {run: {x: json.loads((r / "eval" / f"{x}.json").read_text()) for x in EVAL_SETS}
               for run, r in (("base", base_eval), ("rl", rl_run))}
    times = ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
    return "\n".join([table, "", summary_line(metrics["base"], metrics["rl"]),
                      summary_line(metrics["base"], metrics["rl"], ("val_long",),
                                   "RL vs base on the RL pool's voices (held-out long audio)"),
                      f"base: {base_ckpt}; RL run: {rl_run}", f"stage times (s): {times}",
                      f"RL subsets: {report['selected']} (qualified {report['qualified']}) from "
                      f"{', '.join(pools)}; RL utterances sharing a sentence with the test sets: "
                      f"{report['share_a_test_sentence']}"])


def _train_base(work: Path, data: Path, base_steps: int, base_long_steps: int, seed: int) -> Path:
    """Train the supervised base in two stages, each reused if its checkpoint exists:
    experiment=asr_sft_base (``base_steps``), then experiment=asr_sft_long from it
    (``base_long_steps``; 0 skips it). Returns WORK/base/base.ckpt."""
    base_dir = work / "base"
    base_dir.mkdir(parents=True, exist_ok=True)
    stage1, final = base_dir / "stage1.ckpt", base_dir / "base.ckpt"
    if final.exists():
        return final
    stages = [("base", ["experiment=asr_sft_base"], base_steps, stage1 if base_long_steps > 0 else final)]
    if base_long_steps > 0:
        stages.append(("base_long", ["experiment=asr_sft_long", f"model.init_from={stage1}"], base_long_steps, final))
    for name, args, steps, out in stages:
        if out.exists():
            continue
        run = work / "runs" / name
        run.mkdir(parents=True, exist_ok=True)
        every = max(1, steps // 4)
        _train([*args, f"trainer.max_steps={steps}", f"trainer.val_check_interval={every}",
                f"callbacks.checkpoint.every_n_train_steps={every}", "callbacks.checkpoint.save_top_k=-1",
                "callbacks.checkpoint.monitor=null", f"seed={seed}"], data, run)
        with atomic_open(out, "wb") as f, (run / "checkpoints" / "last.ckpt").open("rb") as src:
            shutil.copyfileobj(src, f)
    return final
