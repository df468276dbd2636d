"""Reading speed of every data source against the JSONL path, side by side in one run.

Builds one set of N utterances (noise, 1.5-3.5 s, 16 kHz PCM-16) and writes it as the
project's JSONL, a Kaldi directory (one file per utterance), a Kaldi directory with
``segments`` (ten utterances per recording), a Lhotse cut set, a Hugging Face dataset
(``save_to_disk``, audio embedded) and parquet (audio embedded). For each it times, in
interleaved rounds (median of ``--rounds``):

* index: ``read_manifest(..., check_audio="full")``, what ``ASRDataModule`` does at setup;
* epoch: every item of ``ManifestDataset`` (audio decode + log-mel), what a training epoch reads;

and prints the ratio to JSONL (issue #27's target: <= 1.10).

    python benchmarks/data_formats.py [--n 1000] [--rounds 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def build(root: Path, n: int) -> dict[str, object]:
    import datasets
    import lhotse

    from speech_rl.data.export import export_kaldi, export_lhotse
    from speech_rl.data.manifest import read_manifest, write_manifest

    rng = np.random.default_rng(0)
    wav = root / "wav"
    wav.mkdir()
    rows, recs, seg_lines, scp_lines = [], {}, [], []
    for i in range(n):
        x = (rng.standard_normal(int(rng.uniform(1.5, 3.5) * 16000)) * 0.1).astype("float32")
        sf.write(str(wav / f"u{i:05d}.wav"), x, 16000, subtype="PCM_16")
        rows.append({"id": f"u{i:05d}", "audio": f"wav/u{i:05d}.wav", "text": f"words of utterance {i}",
                     "speaker": f"s{i % 20}"})
        recs.setdefault(i // 10, []).append((f"u{i:05d}", x))
    write_manifest(root / "m.jsonl", rows)
    utts = read_manifest(root / "m.jsonl")[0]
    export_kaldi(utts, root / "kaldi")
    export_lhotse(utts, root / "cuts.jsonl.gz")
    seg = root / "kaldi_seg"
    seg.mkdir()
    for r, parts in recs.items():
        sf.write(str(seg / f"rec{r:04d}.wav"), np.concatenate([x for _, x in parts]), 16000, subtype="PCM_16")
        scp_lines.append(f"rec{r:04d} {seg / f'rec{r:04d}.wav'}")
        t = 0.0
        for uid, x in parts:
            seg_lines.append(f"{uid} rec{r:04d} {t:.5f} {t + len(x) / 16000:.5f}")
            t += len(x) / 16000
    (seg / "wav.scp").write_text("\n".join(scp_lines) + "\n")
    (seg / "segments").write_text("\n".join(seg_lines) + "\n")
    (seg / "text").write_text("".join(f"{r['id']} {r['text']}\n" for r in rows))
    ds = datasets.Dataset.from_dict({"id": [u.id for u in utts], "audio": [str(u.audio) for u in utts],
                                     "text": [u.text for u in utts]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(root / "hf"))
    cells = [{"bytes": Path(u.audio).read_bytes(), "path": Path(u.audio).name} for u in utts]
    datasets.Dataset.from_dict({"id": [u.id for u in utts], "audio": cells, "text": [u.text for u in utts]}) \
        .cast_column("audio", datasets.Audio()).to_parquet(str(root / "data.parquet"))
    del lhotse
    return {"jsonl": root / "m.jsonl", "kaldi": root / "kaldi", "kaldi segments": seg,
            "lhotse cuts": root / "cuts.jsonl.gz", "hf save_to_disk": root / "hf", "hf parquet": root / "data.parquet"}


def time_source(src) -> tuple[float, float]:
    from speech_rl.data.dataset import ManifestDataset
    from speech_rl.data.manifest import read_manifest

    t0 = time.perf_counter()
    utts, _ = read_manifest(src, check_audio="full")
    t1 = time.perf_counter()
    ds = ManifestDataset(utts)
    frames = sum(ds[i]["feats"].shape[0] for i in range(len(ds)))
    t2 = time.perf_counter()
    assert frames > 0
    return t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sources = build(Path(tmp), a.n)
        for src in sources.values():          # warm-up: imports, page cache, the HF datasets' memory maps
            time_source(src)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in sources}
        for _ in range(a.rounds):
            for name, src in sources.items():
                times[name].append(time_source(src))
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    base_i, base_e = med["jsonl"]
    print(f"{a.n} utterances, {a.rounds} rounds (median), torch threads {a.threads}")
    print("| source | index s | epoch s | index / jsonl | epoch / jsonl | total / jsonl |")
    print("|---|---|---|---|---|---|")
    for name, (i, e) in med.items():
        print(f"| {name} | {i:.2f} | {e:.2f} | {i / base_i:.2f} | {e / base_e:.2f} | {(i + e) / (base_i + base_e):.2f} |")


if __name__ == "__main__":
    main()
