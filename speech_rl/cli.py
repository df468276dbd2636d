"""``speech-rl`` command line.

  speech-rl train [hydra overrides...]        Hydra app (configs/train.yaml); -m for multirun
  speech-rl eval MANIFEST CHECKPOINT [--json] [--hyp-out FILE]
  speech-rl data synth OUT_DIR [--train N --val N --test N --seed S]

``lightning run`` (removed in Lightning 2.5.1) is replaced by ``speech-rl train``: the
Trainer starts its own processes for ``trainer.devices>1``; for several nodes launch
``speech-rl train`` under torchrun or SLURM.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

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
                                "of a checkpoint's greedy transcripts on a JSONL manifest.")
    p.add_argument("manifest")
    p.add_argument("checkpoint")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--hyp-out", help="write id -> hypothesis JSONL here")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad manifest rows instead of stopping")
    a = p.parse_args(argv)
    from speech_rl.evaluate import format_table, load_policy, score, transcribe_manifest, write_hyps

    policy = load_policy(a.checkpoint)
    rows = transcribe_manifest(policy, a.manifest, a.batch_size, a.max_new_tokens,
                               on_bad_row="skip" if a.skip_bad_rows else "error")
    res = score(rows)
    if a.hyp_out:
        write_hyps(rows, a.hyp_out)
    print(json.dumps(res, indent=2) if a.json else format_table(a.manifest, res))
    return 0


def _data(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speech-rl data")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="synthesise a keyword-rich English corpus with eSpeak NG")
    s.add_argument("out_dir")
    s.add_argument("--train", type=int, default=256)
    s.add_argument("--val", type=int, default=32)
    s.add_argument("--test", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from speech_rl.data.synth import synth_corpus

    splits = {k: v for k, v in (("train", a.train), ("val", a.val), ("test", a.test)) if v > 0}
    for split, path in synth_corpus(a.out_dir, splits, seed=a.seed).items():
        print(f"{split}: {path}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "data": _data}


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
