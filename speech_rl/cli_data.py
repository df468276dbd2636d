"""``speech-rl data ...``: synth, select, tokenize, convert, export; and the data-source
options (``--format / --split / --field``) every command that reads a data set takes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_source_options(p: argparse.ArgumentParser) -> None:
    """--format / --split / --field: how the command's data sets are read (default: found from the path)."""
    p.add_argument("--format", choices=["auto", "jsonl", "hf", "kaldi", "lhotse"], default="auto",
                   help="data set format: jsonl (speech-rl manifest), hf (datasets save_to_disk folder or parquet), "
                   "kaldi (data directory), lhotse (cut set, or supervisions + recordings); auto: from the path")
    p.add_argument("--split", help="the split of a Hugging Face DatasetDict folder")
    p.add_argument("--field", action="append", default=[], metavar="KEY=NAME",
                   help="read row key KEY (id, audio, text, duration, keywords, speaker) from the source's NAME "
                   "(a column or JSON key; repeatable), e.g. --field text=sentence")


def source_arg(path: str, a: argparse.Namespace):
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


def data_command(argv: list[str]) -> int:
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
    s.add_argument("--splits", help="--preset open: only these splits, with these sizes (each the first rows "
                   "of the full split), e.g. test_short=300,test_long=50,rl_pool=400,rl_pool_long=80")
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
    add_source_options(sel)
    cv = sub.add_parser("convert", help="write speech-rl JSONL from a Hugging Face dataset, Kaldi data directory, "
                        "Lhotse manifest (or JSONL with --field)")
    cv.add_argument("source")
    cv.add_argument("out", help="OUT.jsonl")
    cv.add_argument("--audio-dir", help="where audio held inside a dataset is written as WAV (default: OUT's "
                    "folder / <OUT stem>_wav); file audio is referenced where it is, spans by offset / duration")
    cv.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    add_source_options(cv)
    ex = sub.add_parser("export", help="write a Kaldi data directory and / or a Lhotse cut set from a data set "
                        "(e.g. a selected RL subset) for Kaldi / icefall / k2 recipes")
    ex.add_argument("source")
    ex.add_argument("--kaldi", help="output Kaldi data directory")
    ex.add_argument("--lhotse", help="output Lhotse cut set (*.jsonl.gz)")
    ex.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    add_source_options(ex)
    tk = sub.add_parser("tokenize", help="acoustic tokens for TTS: fit a k-means speech tokenizer (or load one) "
                        "and write <manifest>.tokens.jsonl beside each manifest")
    tk.add_argument("manifests", nargs="+")
    tk.add_argument("--tokenizer", required=True, help="tokenizer file: read it, or with --fit write it")
    tk.add_argument("--fit", action="store_true", help="fit the codebook on the first manifest first")
    tk.add_argument("--codebook-size", type=int, default=256)
    tk.add_argument("--stack", type=int, default=4, help="feature frames per token (log-mel at 100 Hz: 4 -> 25 Hz)")
    tk.add_argument("--upstream", help="whisper (the pretrained Whisper encoder, 50 Hz: use --stack 1; extra "
                    "whisper) or an s3prl upstream (fbank, mel, wavlm_local, hubert_local, ...; extra ssl) whose "
                    "hidden states are clustered instead of log-mel")
    tk.add_argument("--upstream-path", help="its local checkpoint (wavlm_local, hubert_local) or CTranslate2 "
                    "Whisper folder (default tiny.en)")
    tk.add_argument("--upstream-layer", type=int, default=-1, help="which hidden state (-1: the last; whisper: "
                    "stop after encoder layer N)")
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

    if a.splits and a.preset != "open":
        p.error("--splits needs --preset open")
    if a.preset == "open":
        from speech_rl.data.open_corpus import parse_splits, synth_open_corpus

        try:
            splits = parse_splits(a.splits) if a.splits else None
        except ValueError as exc:
            p.error(str(exc))
        report = synth_open_corpus(a.out_dir, splits, seed=a.seed, jobs=a.jobs)
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
        up = {"upstream": a.upstream, "upstream_path": a.upstream_path, "upstream_layer": a.upstream_layer}
        tok, inertia = fit_tokenizer([a.manifests[0]], a.codebook_size, a.stack, a.fit_utts, a.seed,
                                     upstream=up if a.upstream else None)
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
        pool += read_manifest(source_arg(m, a), on_bad_row="skip", check_audio="header")[0]
    systems = [read_hypotheses(h) for h in a.hyps]
    rules = SelectionRules(a.disagree_wer, a.loop_repeats, a.long_seconds, a.min_keywords)
    from speech_rl.metrics import make_normalizer

    subsets, report = select_subsets(pool, systems, sizes, rules, a.seed, make_normalizer(a.normalizer))
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
    utts, bad = read_manifest(source_arg(a.source, a), on_bad_row="skip" if a.skip_bad_rows else "error",
                              check_audio="header")
    audio_dir = Path(a.audio_dir) if a.audio_dir else out.parent / f"{out.stem}_wav"
    write_manifest(out, [utterance_row(u, audio_dir) for u in utts])
    hours = sum(u.duration for u in utts) / 3600
    print(f"{out}: {len(utts)} utterances, {hours:.2f} h" + (f"; {len(bad)} bad row(s) skipped" if bad.rows else ""))
    return 0


def _data_export(a) -> int:
    from speech_rl.data.export import export_kaldi, export_lhotse
    from speech_rl.data.manifest import read_manifest

    if not (a.kaldi or a.lhotse):
        raise SystemExit("data export: give --kaldi DIR and / or --lhotse CUTS.jsonl.gz")
    utts, bad = read_manifest(source_arg(a.source, a), on_bad_row="skip" if a.skip_bad_rows else "error",
                              check_audio="header")
    if a.kaldi:
        print(f"Kaldi data directory: {export_kaldi(utts, a.kaldi)} ({len(utts)} utterances)")
    if a.lhotse:
        print(f"Lhotse cut set: {export_lhotse(utts, a.lhotse)} ({len(utts)} cuts)")
    return 0
