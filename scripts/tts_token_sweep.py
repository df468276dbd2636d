"""Which log-mel codebook keeps the words: fit k-means tokenizers of several sizes and
frame rates on a TTS manifest and let the Whisper judge read each one's centroid
re-synthesis of held-out recordings (``eval-tts-stages`` stage ``tokens_centroid``: no
decoder trained, so it bounds what any flow decoder on those tokens can give back).

  python scripts/tts_token_sweep.py TRAIN.jsonl TEST.jsonl OUT_DIR [--grid 256x4,1024x2] [--limit 50]

Writes OUT_DIR/tok_<K>x<stack>.pt and OUT_DIR/sweep.json (cells of an earlier run into the
same folder are kept unless re-measured), prints the table.
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
        k, stack = (int(v) for v in cell.split("x"))
        path = out / f"tok_{k}x{stack}.pt"
        t0 = time.perf_counter()
        if not path.is_file():
            tok = SpeechTokenizer(codebook_size=k, stack=stack)
            inertia = tok.fit(wavs)
            tok.save(path)
        else:
            inertia = float("nan")
        fit_s = time.perf_counter() - t0
        res = evaluate_stages(a.test, None, str(path), judge=a.judge, stages=("tokens_centroid",), limit=a.limit,
                              progress=False)
        r = res["stages"]["tokens_centroid"]
        rows = [r for r in rows if (r["codebook_size"], r["stack"]) != (k, stack)]
        rows.append({"codebook_size": k, "stack": stack, "rate_hz": 100 / stack, "bits_per_s": 100 / stack * (k.bit_length() - 1),
                     "mean_sq_distance": inertia, "fit_s": fit_s, **r, "utterances": res["utterances"]})
        print(json.dumps(rows[-1]), flush=True)
    (out / "sweep.json").write_text(json.dumps({"train": a.train, "test": a.test, "judge": a.judge, "rows": rows},
                                               indent=1))
    print("| K | tokens/s | bits/s | judge WER % | Sub | Ins | Del |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codebook_size']} | {r['rate_hz']:g} | {r['bits_per_s']:g} | {100 * r['wer']:.2f} | "
              f"{100 * r['sub']:.2f} | {100 * r['ins']:.2f} | {100 * r['del']:.2f} |")


if __name__ == "__main__":
    main()
