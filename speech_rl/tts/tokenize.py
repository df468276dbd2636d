"""`speech-rl data tokenize`: fit a speech tokenizer on a manifest's audio and write
each utterance's acoustic tokens beside the manifest.

Output: ``<manifest stem>.tokens.jsonl``, one ``{"id", "tokens": [int, ...],
"frame_rate": float}`` a line, in the manifest's order, written atomically.
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch

from speech_rl.data.manifest import Utterance, read_manifest, utterance_audio, write_manifest
from speech_rl.tts.speech_tokenizer import SpeechTokenizer

log = logging.getLogger(__name__)


def tokens_path(manifest: str | Path) -> Path:
    """Where the tokens of ``manifest`` live: ``x/train.jsonl`` -> ``x/train.tokens.jsonl``."""
    p = Path(manifest)
    return p.with_name(f"{p.stem}.tokens.jsonl")


def fit_tokenizer(manifests: list[str | Path], codebook_size: int = 256, stack: int = 4, max_utts: int = 2000,
                  seed: int = 0, iters: int = 30, upstream: dict | None = None) -> tuple[SpeechTokenizer, float]:
    """Fit a ``SpeechTokenizer`` on up to ``max_utts`` utterances (seeded random subset) of
    ``manifests``; ``upstream``: ``{upstream, upstream_path, upstream_layer}`` for s3prl
    features instead of log-mel. Returns (tokenizer, final mean squared distance)."""
    utts: list[Utterance] = []
    for m in manifests:
        utts += read_manifest(m, on_bad_row="skip", check_audio="header")[0]
    if not utts:
        raise ValueError(f"no usable utterances in {[str(m) for m in manifests]} to fit a speech tokenizer on")
    random.Random(seed).shuffle(utts)
    tok = SpeechTokenizer(codebook_size=codebook_size, stack=stack, **(upstream or {}))
    wavs = [torch.from_numpy(utterance_audio(u, tok.sample_rate)) for u in utts[:max_utts]]
    t = time.perf_counter()
    inertia = tok.fit(wavs, iters=iters, seed=seed)
    log.info("fitted %d-token codebook on %d utterances in %.1f s (mean sq. distance %.3f)",
             codebook_size, len(wavs), time.perf_counter() - t, inertia)
    return tok, inertia


def tokenize_manifest(manifest: str | Path, tok: SpeechTokenizer, out: str | Path | None = None,
                      progress: bool = True) -> Path:
    """Tokenise every readable utterance of ``manifest`` (a progress bar unless ``progress`` is
    False); bad rows are skipped with a message (counted in the log). Returns the tokens file."""
    from tqdm import tqdm

    utts, bad = read_manifest(manifest, on_bad_row="skip", check_audio="header")
    if len(bad):
        log.warning("%s: skipped %s", manifest, bad.summary())
    rows = [{"id": u.id, "tokens": tok(torch.from_numpy(utterance_audio(u, tok.sample_rate))).tolist(),
             "frame_rate": tok.frame_rate}
            for u in tqdm(utts, desc=f"tokenize {Path(manifest).name}", unit="utt", disable=not progress)]
    return write_manifest(out or tokens_path(manifest), rows)


def read_tokens(path: str | Path) -> dict[str, list[int]]:
    """id -> tokens from a ``.tokens.jsonl`` file; a malformed line raises naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"token file {p} does not exist (write it with `speech-rl data tokenize`)")
    out = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            toks = row["tokens"]
            if not isinstance(row["id"], str) or not all(isinstance(t, int) and t >= 0 for t in toks):
                raise TypeError("id must be a string and tokens non-negative integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{p}:{n}: not a token row ({exc})") from exc
        out[row["id"]] = toks
    return out
