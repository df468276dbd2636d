"""RL data construction from a pool and the hypotheses of two or more ASR systems
(PAPER.md, "ASR RL data construction"):

* D0 random control set;
* D1 hard / hallucination samples: the systems disagree (pairwise WER above a
  threshold) or an output loops (an n-gram repeated back to back);
* D2 long audio (longer than ``long_seconds``);
* D3 keyword-rich utterances: at least ``min_keywords`` keywords, densest first
  (keywords per word, so that D3 is not a proxy for length, i.e. a second D2).

Hypotheses of any system can be used: JSONL ``{"id", "hyp"}`` (what ``speech-rl eval
--hyp-out`` writes) or Kaldi-style text (``id word word ...`` a line).
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from speech_rl.data.manifest import Utterance
from speech_rl.metrics.text import TextNormalizer, ngram_loop, word_errors

SUBSETS = ("D0", "D1", "D2", "D3")


@dataclass(frozen=True)
class SelectionRules:
    disagree_wer: float = 0.2      # D1: pairwise WER between two systems above this
    loop_repeats: int = 3          # D1: an n-gram (n <= 4) repeated this many times back to back
    long_seconds: float = 20.0     # D2
    min_keywords: int = 2          # D3


DEFAULT_SIZES = "D0=200,D1=200,D2=200,D3=200"     # `speech-rl data select --sizes`


def parse_sizes(text: str) -> dict[str, int]:
    """``"D0=200,D1=150"`` -> ``{"D0": 200, "D1": 150}``; a ValueError naming the text otherwise.

    >>> parse_sizes("D0=200, D2=150")
    {'D0': 200, 'D2': 150}
    """
    from speech_rl.data.counts import parse_counts

    return parse_counts(text, SUBSETS, option="subset sizes", example="D0=200,D1=200", names="subsets")


def keyword_density(u: Utterance) -> float:
    """Keywords per word of the reference text (0 without keywords).

    >>> from pathlib import Path
    >>> keyword_density(Utterance("a", Path("a.wav"), "call acme in paris", 2.0, ("acme", "paris"), None))
    0.5
    """
    return len(u.keywords or ()) / max(1, len(u.text.split()))


def read_hypotheses(path: str | Path) -> dict[str, str]:
    """id -> hypothesis from JSONL ({"id", "hyp"}) or Kaldi text (``id words...``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"hypothesis file {p} does not exist")
    out: dict[str, str] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
                uid, hyp = row["id"], row["hyp"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"hypothesis file {p}, line {lineno}: expected {{\"id\", \"hyp\"}}: {exc}") from exc
        else:
            uid, _, hyp = line.strip().partition(" ")
        if uid in out:
            raise ValueError(f"hypothesis file {p}, line {lineno}: duplicate id {uid!r}")
        out[str(uid)] = str(hyp)
    return out


def disagreement(hyps: list[str], norm: TextNormalizer | None = None) -> float:
    """Largest pairwise WER between hypotheses (each pair scored both ways, the longer as
    reference), 0 for fewer than two.

    >>> disagreement(["a b c d", "a b x d"])
    0.25
    """
    norm = norm or TextNormalizer()
    hs = [norm(h) for h in hyps]
    worst = 0.0
    for i in range(len(hs)):
        for j in range(i + 1, len(hs)):
            ref, hyp = (hs[i], hs[j]) if len(hs[i].split()) >= len(hs[j].split()) else (hs[j], hs[i])
            worst = max(worst, word_errors(ref, hyp).wer if ref else float(bool(hyp)))
    return worst


def loops(hyp: str, repeats: int, max_n: int = 4) -> bool:
    """True if an n-gram (n <= max_n) of ``hyp`` repeats back to back ``repeats`` times (the
    R2 reward's loop rule, ``metrics.text.ngram_loop``, without a reference)."""
    return ngram_loop(TextNormalizer()(hyp).split(), repeats, max_n) is not None


def select_subsets(pool: list[Utterance], systems: list[dict[str, str]], sizes: dict[str, int],
                   rules: SelectionRules = SelectionRules(), seed: int = 0, normalizer=None
                   ) -> tuple[dict[str, list[Utterance]], dict]:
    """Pick D0-D3 from ``pool`` (each subset independently; a subset may be smaller than
    asked when too few utterances qualify). Returns subsets and a report (counts, rules,
    how many qualified). ``normalizer``: applied to every hypothesis before the D1
    comparison (default ``TextNormalizer()``; ``speech_rl.judge.WhisperNormalizer`` when one
    system is Whisper, which writes numbers as digits)."""
    unknown = set(sizes) - set(SUBSETS)
    if unknown:
        raise ValueError(f"unknown subsets {sorted(unknown)}; available: {', '.join(SUBSETS)}")
    if sizes.get("D1") and len(systems) < 2:
        raise ValueError("D1 (hard samples) needs the hypotheses of at least two ASR systems")
    for k, hyp in enumerate(systems):
        missing = [u.id for u in pool if u.id not in hyp]
        if missing and sizes.get("D1"):
            raise ValueError(f"system {k} has no hypothesis for {len(missing)} pool utterances, e.g. {missing[:3]}")
    rng = random.Random(seed)
    out: dict[str, list[Utterance]] = {}
    qualified: dict[str, int] = {}
    if "D0" in sizes:
        out["D0"] = rng.sample(pool, min(sizes["D0"], len(pool)))
        qualified["D0"] = len(pool)
    if "D1" in sizes:
        scored = []
        for u in pool:
            hs = [s[u.id] for s in systems]
            d = disagreement(hs, normalizer)
            looped = any(loops(h, rules.loop_repeats) for h in hs)
            if d > rules.disagree_wer or looped:
                scored.append((1.0 + d if looped else d, u))
        scored.sort(key=lambda x: (-x[0], x[1].id))
        out["D1"] = [u for _, u in scored[: sizes["D1"]]]
        qualified["D1"] = len(scored)
    if "D2" in sizes:
        long = [u for u in pool if u.duration > rules.long_seconds]
        out["D2"] = rng.sample(long, min(sizes["D2"], len(long)))
        qualified["D2"] = len(long)
    if "D3" in sizes:
        rich = [u for u in pool if len(u.keywords or ()) >= rules.min_keywords]
        rng.shuffle(rich)
        rich.sort(key=lambda u: -keyword_density(u))
        out["D3"] = rich[: sizes["D3"]]
        qualified["D3"] = len(rich)
    report = {"pool": len(pool), "systems": len(systems), "rules": asdict(rules), "seed": seed,
              "asked": dict(sizes), "qualified": qualified, "selected": {k: len(v) for k, v in out.items()}}
    return out, report
