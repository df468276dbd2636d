"""Which codebook keeps the words: fit k-means tokenizers of several sizes, frame rates and
features on a TTS manifest and let the Whisper judge read each one's re-synthesis of held-out
recordings with no decoder trained (``eval-tts-stages`` stage ``tokens_centroid``: a log-mel
tokenizer's centroids, an upstream tokenizer's per-code mean log-mel, + the recording's mean
log-mel -> Griffin-Lim). A frame-wise reading: a decoder with context can beat it.

  python scripts/tts_token_sweep.py TRAIN.jsonl TEST.jsonl OUT_DIR [--grid 256x4,whisper@2:1024x1] [--limit 50]

A cell is ``[UPSTREAM[@LAYER]:]KxSTACK``: log-mel (100 Hz frames) by default, ``whisper``
(the tiny.en encoder, 50 Hz; ``@LAYER`` stops after that layer). Writes OUT_DIR/tok_*.pt and
OUT_DIR/sweep.json (cells of an earlier run into the same folder are kept unless re-measured),
prints the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="manifest the codebooks are fitted on")
    p.add_argument("test", help="held-out recordings to re-synthesise")
    p.add_argument("out", help="folder for the tokenizers and sweep.json")
    p.add_argument("--grid", default="256x4,1024x4,1024x2,4096x2", help="KxSTACK,... (25 Hz at stack 4)")
    p.add_argument("--fit-utts", type=int, default=1000)
    p.add_argument("--limit", type=int, default=50, help="test rows judged")
    p.add_argument("--judge", default="base")
    a = p.parse_args()
    from speech_rl.data.manifest import read_manifest, utterance_audio
    from speech_rl.tts.speech_tokenizer import SpeechTokenizer
    from speech_rl.tts.stages import evaluate_stages

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wavs = [torch.from_numpy(utterance_audio(u, 16000)) for u in read_manifest(a.train)[0][: a.fit_utts]]
    done = out / "sweep.json"          # cells of an earlier run are kept unless measured again
    rows = json.loads(done.read_text())["rows"] if done.is_file() else []
    for cell in a.grid.split(","):
        feat, _, size = cell.rpartition(":")
        upstream, _, layer = feat.partition("@")
        k, stack = (int(v) for v in size.split("x"))
        up = {"upstream": upstream, "upstream_layer": int(layer or -1)} if upstream else {}
        name = f"{upstream}{layer}_" if upstream else ""
        path = out / f"tok_{name}{k}x{stack}.pt"
        t0 = time.perf_counter()
        if not path.is_file():
            tok = SpeechTokenizer(codebook_size=k, stack=stack, **up)
            inertia = tok.fit(wavs)
            tok.save(path)
        else:
            tok, inertia = SpeechTokenizer.load(path), float("nan")
        fit_s = time.perf_counter() - t0
        feature = f"{upstream}@{layer or 'last'}" if upstream else "log-mel"
        res = evaluate_stages(a.test, None, str(path), judge=a.judge, stages=("tokens_centroid",), limit=a.limit,
                              progress=False)
        r = res["stages"]["tokens_centroid"]
        rows = [r for r in rows if (r.get("feature", "log-mel"), r["codebook_size"], r["stack"]) != (feature, k, stack)]
        rows.append({"feature": feature, "codebook_size": k, "stack": stack, "rate_hz": tok.frame_rate,
                     "bits_per_s": tok.frame_rate * (k.bit_length() - 1),
                     "mean_sq_distance": inertia, "fit_s": fit_s, **r, "utterances": res["utterances"]})
        print(json.dumps(rows[-1]), flush=True)
        done.write_text(json.dumps({"train": a.train, "test": a.test, "judge": a.judge, "rows": rows}, indent=1))
    print("| feature | K | tokens/s | bits/s | judge WER % | Sub | Ins | Del |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.get('feature', 'log-mel')} | {r['codebook_size']} | {r['rate_hz']:g} | {r['bits_per_s']:g} | "
              f"{100 * r['wer']:.2f} | "
              f"{100 * r['sub']:.2f} | {100 * r['ins']:.2f} | {100 * r['del']:.2f} |")


if __name__ == "__main__":
    main()
