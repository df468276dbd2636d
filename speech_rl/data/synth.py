"""Synthesise a keyword-rich English speech corpus with eSpeak NG (the embedded default).

Sentences come from templates over word classes (person names, brands, places,
numbers, domain terms); the class members that occur are the utterance's
``keywords``. Voices, rates and pitches vary per utterance; texts, voices, rates,
pitches and padding are deterministic for a seed (eSpeak NG's waveform itself varies
by a few samples between calls, see ``speech_rl.data.espeak``). Audio is written as 16-bit 16 kHz wav with a JSONL
manifest per split (DESIGN.md contract).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speech_rl.data.manifest import write_manifest

log = logging.getLogger(__name__)

NAMES = ["alice", "bob", "maria", "chen", "omar", "lucas", "sofia", "ivan", "grace", "david"]
BRANDS = ["acme", "zenith", "orbit", "nova", "apex", "vertex", "quantum", "lumen"]
PLACES = ["paris", "tokyo", "london", "berlin", "madrid", "boston", "sydney", "cairo"]
TERMS = ["kernel", "protocol", "server", "network", "database", "compiler", "sensor", "battery"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
ITEMS = ["boxes", "books", "tickets", "chairs", "letters", "phones", "cables", "plates"]
ADJS = ["slow", "fast", "broken", "ready", "stable", "new", "old", "quiet"]
TEMPLATES = [
    "{name} bought {number} {item} from {brand}",
    "please call {name} in {place}",
    "the {term} in {place} is {adj}",
    "{brand} opened a new office in {place}",
    "send {number} {item} to {name} today",
    "{name} said the {term} was {adj}",
    "the {brand} {term} is {adj} again",
    "we need {number} {item} for {name}",
    "meet {name} at the {brand} store in {place}",
    "the {adj} {term} stopped at {number}",
]
KEYWORD_CLASSES = ("name", "brand", "place", "term")
VOICES = ["en-us", "en-us+m3", "en-us+f2", "en+m5", "en-GB-x-rp", "en+f3", "en-029", "en-US-nyc"]


def make_sentence(rng: random.Random) -> tuple[str, list[str]]:
    """One template sentence and its keywords (names, brands, places, terms used)."""
    tpl = rng.choice(TEMPLATES)
    pools = {"name": NAMES, "brand": BRANDS, "place": PLACES, "term": TERMS, "number": NUMBERS,
             "item": ITEMS, "adj": ADJS}
    fills = {k: rng.choice(v) for k, v in pools.items()}
    text = tpl.format(**fills)
    keywords = [fills[k] for k in KEYWORD_CLASSES if "{" + k + "}" in tpl]
    return text, keywords


@dataclass
class SynthConfig:
    sample_rate: int = 16000
    voices: tuple[str, ...] = tuple(VOICES)
    rate_range: tuple[int, int] = (150, 200)        # words per minute
    pitch_range: tuple[int, int] = (35, 65)
    pad_range: tuple[float, float] = (0.1, 0.3)     # silence around the speech, seconds
    snr_db: float | None = None                     # additive white noise at this SNR


def synth_utterance(tts, text: str, rng: random.Random, cfg: SynthConfig) -> tuple[np.ndarray, str]:
    """Speech for ``text`` at ``cfg.sample_rate`` with a random voice, rate, pitch and
    padding; returns (samples (n,), voice)."""
    voice = rng.choice(cfg.voices)
    wav = tts.synth(text, voice=voice, rate=rng.randint(*cfg.rate_range),
                    pitch=rng.randint(*cfg.pitch_range), seed=rng.randint(0, 2**31 - 1))
    wav = soxr.resample(wav, tts.sample_rate, cfg.sample_rate).astype(np.float32)
    pad = [np.zeros(int(rng.uniform(*cfg.pad_range) * cfg.sample_rate), np.float32) for _ in range(2)]
    wav = np.concatenate([pad[0], wav, pad[1]])
    if cfg.snr_db is not None:
        noise = np.random.default_rng(rng.randint(0, 2**31)).standard_normal(len(wav)).astype(np.float32)
        p_sig = float(np.mean(wav ** 2)) + 1e-12
        wav = wav + noise * np.sqrt(p_sig / 10 ** (cfg.snr_db / 10))
    peak = float(np.abs(wav).max())
    return (wav / peak * 0.9 if peak > 0.9 else wav), voice


def synth_corpus(out_dir: str | Path, splits: dict[str, int], seed: int = 0,
                 cfg: SynthConfig | None = None) -> dict[str, Path]:
    """Write ``out_dir/<split>.jsonl`` and ``out_dir/wav/<split>/*.wav`` for each split.

    Returns split -> manifest path. Deterministic for ``seed``; a split whose
    manifest already exists is left as it is.
    """
    from speech_rl.data.espeak import ESpeak

    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    tts = ESpeak()
    paths: dict[str, Path] = {}
    for s_idx, (split, n) in enumerate(splits.items()):
        mpath = out / f"{split}.jsonl"
        paths[split] = mpath
        if mpath.exists():
            continue
        rng = random.Random(f"{seed}-{split}")
        wav_dir = out / "wav" / split
        wav_dir.mkdir(parents=True, exist_ok=True)
        rows, t0, total = [], time.perf_counter(), 0.0
        for i in range(n):
            text, keywords = make_sentence(rng)
            wav, voice = synth_utterance(tts, text, rng, cfg)
            uid = f"{split}_{i:05d}"
            sf.write(wav_dir / f"{uid}.wav", wav, cfg.sample_rate, subtype="PCM_16")
            total += len(wav) / cfg.sample_rate
            rows.append({"id": uid, "audio": f"wav/{split}/{uid}.wav", "text": text,
                         "duration": round(len(wav) / cfg.sample_rate, 3), "keywords": keywords, "speaker": voice})
        write_manifest(mpath, rows)
        dt = time.perf_counter() - t0
        log.info("synthesised %s: %d utterances, %.1f s of audio in %.1f s (%.1f utt/s)",
                 split, n, total, dt, n / max(dt, 1e-9))
    return paths
