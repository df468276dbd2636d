"""Synthesise a keyword-rich English speech corpus with eSpeak NG (the embedded default).

Sentences come from templates over word classes (person names, brands, places,
numbers, domain terms); the class members that occur are the utterance's
``keywords``. Voices, rates and pitches vary per utterance; texts, voices, rates,
pitches and padding are deterministic for a seed (eSpeak NG's waveform itself varies
by a few samples between calls, see ``speech_rl.data.espeak``). Audio is written as 16-bit 16 kHz wav with a JSONL
manifest per split (DESIGN.md contract).
"""
from __future__ import annotations

import json
import logging
import random
import re
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
# voices for training / RL data, and voices held out for test sets
TRAIN_VOICES = ["en-us", "en-us+m3", "en-us+f2", "en+m5", "en-GB-x-rp", "en+f3"]
TEST_VOICES = ["en-029+m2", "en-US-nyc+f4", "en-GB-scotland"]
VOICES = TRAIN_VOICES + TEST_VOICES


WORD_CLASSES = {"name": NAMES, "brand": BRANDS, "place": PLACES, "term": TERMS, "number": NUMBERS,
                "item": ITEMS, "adj": ADJS}
MAX_DRAWS = 10_000   # make_sentence: draws before giving up on finding a sentence outside ``exclude``


def make_sentence(rng: random.Random, exclude: frozenset[str] | set[str] = frozenset()) -> tuple[str, list[str]]:
    """One template sentence and its keywords (names, brands, places, terms used),
    redrawn while it is in ``exclude`` (an empty ``exclude`` draws exactly once, so
    splits without exclusions keep their texts)."""
    for _ in range(MAX_DRAWS):
        tpl = rng.choice(TEMPLATES)
        fills = {k: rng.choice(v) for k, v in WORD_CLASSES.items()}
        text = tpl.format(**fills)
        if text not in exclude:
            return text, [fills[k] for k in KEYWORD_CLASSES if "{" + k + "}" in tpl]
    raise ValueError(f"no sentence outside the {len(exclude)} excluded ones in {MAX_DRAWS} draws")


def _template_pattern(tpl: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", tpl)
    body = "".join("(?:" + "|".join(WORD_CLASSES[p[1:-1]]) + ")" if p.startswith("{") else re.escape(p)
                   for p in parts)
    return re.compile(body + r"(?= |$)")


_TEMPLATE_PATTERNS = [_template_pattern(t) for t in TEMPLATES]


def split_sentences(text: str) -> list[str]:
    """The template sentences a corpus text is made of (a long utterance joins several
    with spaces); raises ValueError if ``text`` is not made of this module's templates.

    >>> split_sentences("please call bob in paris the slow kernel stopped at two")
    ['please call bob in paris', 'the slow kernel stopped at two']
    """
    out, pos = [], 0
    while pos < len(text):
        ends = [m.end() for p in _TEMPLATE_PATTERNS if (m := p.match(text, pos))]
        if not ends:
            raise ValueError(f"text is not made of the corpus templates at {text[pos:pos + 40]!r}: {text[:80]!r}")
        end = max(ends)
        out.append(text[pos:end])
        pos = end + 1
    return out


def manifest_sentences(path: str | Path) -> set[str]:
    """Every template sentence of a synthesised manifest's texts."""
    return {s for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()
            for s in split_sentences(json.loads(line)["text"])}


@dataclass
class SynthConfig:
    sample_rate: int = 16000
    voices: tuple[str, ...] = tuple(TRAIN_VOICES)
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
        wav = add_noise(wav, cfg.snr_db, rng)
    peak = float(np.abs(wav).max())
    return (wav / peak * 0.9 if peak > 0.9 else wav), voice


@dataclass
class SplitSpec:
    """One split of a synthesised corpus.

    kind: ``short`` (one sentence, 1.5-6 s) or ``long`` (sentences by one voice joined with
    pauses until ``min_seconds``, never past ``max_seconds``); voices: ``train``, ``test``
    (held out) or a list; snr_db: additive white noise, or None; exclude_sentences_of:
    splits of the same corpus (synthesised before this one) none of whose sentences this
    split may contain (sentences are redrawn), e.g. an RL pool apart from the test sets.
    """

    n: int
    kind: str = "short"
    voices: str | list[str] = "train"
    min_seconds: float = 20.0
    max_seconds: float = 30.0
    snr_db: float | None = None
    exclude_sentences_of: list[str] | None = None

    def voice_list(self) -> tuple[str, ...]:
        if isinstance(self.voices, str):
            if self.voices not in ("train", "test"):
                raise ValueError(f"split voices must be 'train', 'test' or a list, got {self.voices!r}")
            return tuple(TRAIN_VOICES if self.voices == "train" else TEST_VOICES)
        return tuple(self.voices)


def synth_long(tts, rng: random.Random, cfg: SynthConfig, spec: SplitSpec,
               exclude: frozenset[str] = frozenset()) -> tuple[np.ndarray, str, str, list[str]]:
    """Sentences by one voice with 0.3-0.8 s pauses: (samples, voice, text, keywords).

    Each utterance draws a target length uniformly from [``spec.min_seconds``,
    ``spec.max_seconds``] and adds sentences until it reaches the target, never passing
    ``max_seconds`` (a single sentence longer than that is kept), so lengths spread over
    the whole range instead of bunching just above the minimum."""
    if not 0 < spec.min_seconds <= spec.max_seconds:
        raise ValueError(f"long split: need 0 < min_seconds <= max_seconds, got {spec.min_seconds}, {spec.max_seconds}")
    voice = rng.choice(cfg.voices)
    target = rng.uniform(spec.min_seconds, spec.max_seconds)
    one = SynthConfig(cfg.sample_rate, (voice,), cfg.rate_range, cfg.pitch_range, (0.0, 0.0), None)
    parts, texts, kws, dur = [], [], [], 0.0
    while dur < target:
        text, k = make_sentence(rng, exclude)
        wav, _ = synth_utterance(tts, text, rng, one)
        pause = np.zeros(int(rng.uniform(0.3, 0.8) * cfg.sample_rate), np.float32)
        if parts and dur + (len(wav) + len(pause)) / cfg.sample_rate > spec.max_seconds:
            break
        parts += [pause, wav]
        texts.append(text)
        kws += [x for x in k if x not in kws]
        dur += (len(wav) + len(pause)) / cfg.sample_rate
    wav = np.concatenate(parts + [np.zeros(int(0.2 * cfg.sample_rate), np.float32)])
    if spec.snr_db is not None:
        wav = add_noise(wav, spec.snr_db, rng)
    return wav, voice, " ".join(texts), kws


def add_noise(wav: np.ndarray, snr_db: float, rng: random.Random) -> np.ndarray:
    """White noise at ``snr_db`` relative to the signal's mean power."""
    noise = np.random.default_rng(rng.randint(0, 2**31)).standard_normal(len(wav)).astype(np.float32)
    p_sig = float(np.mean(wav ** 2)) + 1e-12
    out = wav + noise * np.sqrt(p_sig / 10 ** (snr_db / 10))
    peak = float(np.abs(out).max())
    return out / peak * 0.9 if peak > 0.9 else out


def synth_corpus(out_dir: str | Path, splits: dict[str, int | dict | SplitSpec], seed: int = 0,
                 cfg: SynthConfig | None = None) -> dict[str, Path]:
    """Write ``out_dir/<split>.jsonl`` and ``out_dir/wav/<split>/*.wav`` for each split.

    ``splits`` maps a split name to a count (short utterances, training voices) or a
    ``SplitSpec`` / its dict. Returns split -> manifest path. Deterministic for ``seed``
    (see the module docstring); a split whose manifest already exists is left as it is.
    """
    from speech_rl.data.espeak import ESpeak

    base = cfg or SynthConfig()
    out = Path(out_dir)
    tts = ESpeak()
    paths: dict[str, Path] = {}
    for split, raw in splits.items():
        spec = raw if isinstance(raw, SplitSpec) else SplitSpec(n=raw) if isinstance(raw, int) else SplitSpec(**raw)
        if spec.kind not in ("short", "long"):
            raise ValueError(f"split {split!r}: kind must be 'short' or 'long', got {spec.kind!r}")
        cfg = SynthConfig(base.sample_rate, spec.voice_list(), base.rate_range, base.pitch_range, base.pad_range,
                          spec.snr_db if spec.snr_db is not None else base.snr_db)
        mpath = out / f"{split}.jsonl"
        paths[split] = mpath
        if mpath.exists():
            continue
        for other in spec.exclude_sentences_of or ():
            if not (out / f"{other}.jsonl").is_file():
                raise ValueError(f"split {split!r}: exclude_sentences_of names {other!r}, whose manifest "
                                 f"{out / f'{other}.jsonl'} does not exist (list {other!r} before {split!r})")
        exclude = frozenset().union(*(manifest_sentences(out / f"{o}.jsonl") for o in spec.exclude_sentences_of or ()))
        rng = random.Random(f"{seed}-{split}")
        wav_dir = out / "wav" / split
        wav_dir.mkdir(parents=True, exist_ok=True)
        rows, t0, total = [], time.perf_counter(), 0.0
        for i in range(spec.n):
            if spec.kind == "long":
                wav, voice, text, keywords = synth_long(tts, rng, cfg, spec, exclude)
            else:
                text, keywords = make_sentence(rng, exclude)
                wav, voice = synth_utterance(tts, text, rng, cfg)
            uid = f"{split}_{i:05d}"
            sf.write(wav_dir / f"{uid}.wav", wav, cfg.sample_rate, subtype="PCM_16")
            total += len(wav) / cfg.sample_rate
            rows.append({"id": uid, "audio": f"wav/{split}/{uid}.wav", "text": text,
                         "duration": round(len(wav) / cfg.sample_rate, 3), "keywords": keywords, "speaker": voice})
        write_manifest(mpath, rows)
        dt = time.perf_counter() - t0
        log.info("synthesised %s: %d utterances (%s), %.1f s of audio in %.1f s (%.1f utt/s)%s",
                 split, spec.n, spec.kind, total, dt, spec.n / max(dt, 1e-9),
                 f"; none of the {len(exclude)} sentences of {', '.join(spec.exclude_sentences_of)}"
                 if spec.exclude_sentences_of else "")
    return paths
