"""The open-vocabulary ASR corpus (``speech-rl data synth --preset open``).

Text from ``speech_rl.data.opentext`` (natural sentences, keyword frames over large name
and place lists, held-out words), voices from ``speech_rl.data.voices`` (eSpeak NG, flite,
festival, Kokoro-82M) with whole speakers held out for the test sets. Each utterance draws
its voice (by engine weight, then uniformly), a speed factor and, for a share of the
training utterances, additive white noise. Short utterances are one sentence; long ones join
sentences by one voice with 0.3-0.8 s pauses up to a length drawn in [min, max] seconds.
Deterministic for a seed up to the engines' own sample-level jitter; utterances are
synthesised by ``jobs`` worker processes.
"""
from __future__ import annotations

import json
import logging
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speech_rl.data.manifest import write_manifest
from speech_rl.data.opentext import TextPools, build_splits, oov_rate
from speech_rl.data.synth import add_noise
from speech_rl.data.voices import Speaker, Voice, available, kokoro_blend, missing_engines

log = logging.getLogger(__name__)
SR = 16000

TRAIN_VOICES = [Voice("espeak", v, "espeak") for v in
                ("en-us", "en-us+m3", "en-us+f2", "en+m5", "en-GB-x-rp", "en+f3", "en-GB-scotland", "en-029+m2")]
TRAIN_VOICES += [Voice("flite", v, s) for v, s in (("kal", "kal"), ("kal16", "kal"), ("awb", "awb"), ("slt", "slt"))]
TRAIN_VOICES += [Voice("festival", "kal_diphone", "kal"), Voice("festival", "cmu_us_slt_arctic_hts", "slt")]
TRAIN_VOICES += [Voice("kokoro", v, f"kokoro_{v}") for v in ("jf_alpha", "jf_gongitsune", "jm_kumo")]
TRAIN_VOICES += [kokoro_blend("jf_alpha", "jm_kumo", 0.5), kokoro_blend("jf_gongitsune", "jm_kumo", 0.4)]
# whole speakers no training voice has: CMU RMS and KED, two Kokoro vectors and their blend
TEST_VOICES = [Voice("flite", "rms", "rms"), Voice("festival", "ked_diphone", "ked"),
               Voice("kokoro", "jf_nezumi", "kokoro_jf_nezumi"), Voice("kokoro", "jf_tebukuro", "kokoro_jf_tebukuro"),
               kokoro_blend("jf_nezumi", "jf_tebukuro", 0.5)]
# share of utterances per engine (Kokoro is ~10-30x slower than the others on CPU)
TRAIN_ENGINE_WEIGHTS = {"espeak": 0.25, "flite": 0.37, "festival": 0.28, "kokoro": 0.10}
TEST_ENGINE_WEIGHTS = {"flite": 0.3, "festival": 0.3, "kokoro": 0.4}


@dataclass
class OpenSplit:
    """One split: ``pool`` (test | val | sft | rl) gives the sentences, ``voices`` train |
    test; ``kind`` short | long; ``noise_share`` of utterances get white noise at 10-30 dB SNR."""

    n: int
    pool: str
    voices: str = "train"
    kind: str = "short"
    min_seconds: float = 20.0
    max_seconds: float = 30.0
    noise_share: float = 0.0


DEFAULT_SPLITS = {
    "test_short": OpenSplit(300, "test", "test"),
    "test_long": OpenSplit(50, "test", "test", "long", 20.0, 30.0),
    "val": OpenSplit(200, "val"),
    "train": OpenSplit(5700, "sft", noise_share=0.2),
    "train_long": OpenSplit(200, "sft", kind="long", min_seconds=12.0, max_seconds=30.0),
    "rl_pool": OpenSplit(1000, "rl"),
    "rl_pool_long": OpenSplit(200, "rl", kind="long"),
    "val_long": OpenSplit(40, "val", kind="long"),
}
# splits made only when asked for (``--splits tts_train=3000,test_short=100``): TTS training
# audio from the SFT sentences without added noise (a TTS learns to say what it hears). The
# TTS test rows are ``test_short``'s: held-out sentences read by held-out speakers.
EXTRA_SPLITS = {
    "tts_train": OpenSplit(3000, "sft"),
}


def parse_splits(text: str) -> dict[str, OpenSplit]:
    """``"test_short=300,rl_pool=400"`` -> those ``DEFAULT_SPLITS`` (or ``EXTRA_SPLITS``) with
    their sizes changed, in the order given. A split of n rows is the first n rows of the full split (same sentences, voices
    and order), so a smaller corpus is a prefix of the default one. ValueError naming the text.

    >>> {k: v.n for k, v in parse_splits("test_long=20, rl_pool=400").items()}
    {'test_long': 20, 'rl_pool': 400}
    """
    from dataclasses import replace

    from speech_rl.data.counts import parse_counts

    known = {**DEFAULT_SPLITS, **EXTRA_SPLITS}
    counts = parse_counts(text, known, option="--splits", example="test_short=300,rl_pool=400",
                          names="splits", minimum=1)
    return {k: replace(known[k], n=n) for k, n in counts.items()}


def _pick_voice(rng: random.Random, voices: list[Voice], weights: dict[str, float]) -> Voice:
    engines = sorted({v.engine for v in voices})
    engine = rng.choices(engines, [weights.get(e, 0.0) for e in engines])[0]
    return rng.choice([v for v in voices if v.engine == engine])


_SPEAKER: Speaker | None = None


def _speak(voice: Voice, text: str, rng: random.Random) -> np.ndarray:
    global _SPEAKER
    _SPEAKER = _SPEAKER or Speaker()
    wav, sr = _SPEAKER.speak(voice, text, rate=rng.uniform(0.85, 1.2), pitch=rng.uniform(0.8, 1.25),
                             seed=rng.randint(0, 2**31 - 1), accent=rng.choice(["en-us", "en-us", "en-gb"]))
    wav = soxr.resample(wav, sr, SR).astype(np.float32)
    peak = float(np.abs(wav).max()) or 1.0
    return wav / peak * rng.uniform(0.5, 0.9)


def _make_utterance(job: tuple) -> dict:
    """Synthesise one utterance and write its wav; returns its manifest row."""
    uid, out_dir, split, spec, texts, voice, seed_str = job
    rng = random.Random(seed_str)
    if spec.kind == "long":
        target = rng.uniform(spec.min_seconds, spec.max_seconds)
        parts, used, dur = [], [], 0.0
        for text in texts:
            wav = _speak(voice, text, rng)
            pause = np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.float32)
            if parts and dur + (len(wav) + len(pause)) / SR > spec.max_seconds:
                break
            parts += [pause, wav]
            used.append(text)
            dur += (len(wav) + len(pause)) / SR
            if dur >= target:
                break
        wav = np.concatenate(parts + [np.zeros(int(0.2 * SR), np.float32)])
    else:
        used = texts[:1]
        pads = [np.zeros(int(rng.uniform(0.1, 0.3) * SR), np.float32) for _ in range(2)]
        wav = np.concatenate([pads[0], _speak(voice, used[0], rng), pads[1]])
    if rng.random() < spec.noise_share:
        wav = add_noise(wav, rng.uniform(10.0, 30.0), rng)
    rel = f"wav/{split}/{uid}.wav"
    sf.write(Path(out_dir) / rel, wav, SR, subtype="PCM_16")
    return {"id": uid, "audio": rel, "text": " ".join(used), "duration": round(len(wav) / SR, 3),
            "speaker": voice.speaker, "voice": voice.id}


def split_jobs(split: str, spec: OpenSplit, pools: TextPools, out_dir: Path, seed: int) -> list[tuple]:
    """The utterance jobs of one split: sentences in pool order, cycling if n exceeds the pool
    (short); a long utterance takes the next 12 sentences (it uses as many as fit)."""
    sentences = getattr(pools, spec.pool)
    voices = available(TEST_VOICES if spec.voices == "test" else TRAIN_VOICES)
    if not voices:
        raise RuntimeError(f"split {split!r}: no voice installed; {missing_engines(TRAIN_VOICES + TEST_VOICES)}")
    weights = TEST_ENGINE_WEIGHTS if spec.voices == "test" else TRAIN_ENGINE_WEIGHTS
    rng = random.Random(f"{seed}-{split}")
    order = list(sentences)
    rng.shuffle(order)
    jobs, pos = [], 0
    for i in range(spec.n):
        take = 12 if spec.kind == "long" else 1
        texts = [order[(pos + j) % len(order)] for j in range(take)]
        pos += take if spec.kind == "short" else 6
        jobs.append((f"{split}_{i:05d}", str(out_dir), split, spec, texts, _pick_voice(rng, voices, weights),
                     f"{seed}-{split}-{i}"))
    return jobs


def synth_open_corpus(out_dir: str | Path, splits: dict[str, OpenSplit] | None = None, seed: int = 0,
                      jobs: int = 2, progress: bool = True) -> dict:
    """Write ``out_dir/<split>.jsonl`` + wavs for each split (a split whose manifest exists
    is kept) and ``out_dir/corpus_report.json``: sentences, speakers and hours per split,
    and the OOV rate of the test sets against all SFT / RL / val text. Returns the report."""
    from tqdm import tqdm

    out = Path(out_dir)
    splits = splits or DEFAULT_SPLITS
    missing = missing_engines(TRAIN_VOICES + TEST_VOICES)
    for engine, cmd in missing.items():
        log.warning("speech engine %s is not installed, its voices are skipped: %s", engine, cmd)
    pools = build_splits(seed)
    report = {"oov_rate_test_vs_training_text": round(oov_rate(pools.test, pools.training_text()), 4),
              "heldout_words": len(pools.heldout_words), "missing_engines": missing, "splits": {}}
    for split, spec in splits.items():
        mpath = out / f"{split}.jsonl"
        if not mpath.exists():
            (out / "wav" / split).mkdir(parents=True, exist_ok=True)
            todo = split_jobs(split, spec, pools, out, seed)
            t0 = time.perf_counter()
            with ProcessPoolExecutor(max_workers=jobs) as ex:
                chunk = max(1, min(8, len(todo) // (4 * jobs)))     # small splits: both workers busy to the end
                rows = list(tqdm(ex.map(_make_utterance, todo, chunksize=chunk), total=len(todo), disable=not progress,
                                 desc=f"synth {split}", unit="utt"))
            for r in rows:
                r["keywords"] = [k for s in _sentences_of(r["text"], pools) for k in pools.keywords.get(s, [])]
            write_manifest(mpath, rows)
            log.info("synthesised %s: %d utterances in %.0f s", split, len(rows), time.perf_counter() - t0)
        rows = [json.loads(x) for x in mpath.read_text(encoding="utf-8").splitlines() if x.strip()]
        report["splits"][split] = {"utterances": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 3),
                                   "speakers": sorted({r["speaker"] for r in rows}), "pool": spec.pool}
    (out / "corpus_report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def _sentences_of(text: str, pools: TextPools) -> list[str]:
    """The pool sentences a (long) utterance text is made of, greedily from the left."""
    known = pools.keywords
    out, words, i = [], text.split(), 0
    while i < len(words):
        for j in range(len(words), i, -1):
            if " ".join(words[i:j]) in known:
                out.append(" ".join(words[i:j]))
                i = j
                break
        else:
            i += 1
    return out
