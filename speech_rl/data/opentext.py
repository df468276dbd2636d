"""Open-vocabulary English text for the embedded corpus, from Debian main's data files.

Sources (installed by ``apt-get install fortunes fortunes-min miscfiles``; read where
Debian puts them, nothing is copied into this repository):
- sentences: the ``fortune-mod`` data files (``/usr/share/games/fortunes``; the
  non-offensive sets of the ``fortunes`` / ``fortunes-min`` packages, BSD licence): about
  12,600 distinct natural sentences of 5-18 words, 13,700 word types, after the cleaning
  below. Quotations, proverbs, jokes: many authors and styles, not templates.
- keyword classes from large lists: person names (``/usr/share/dict/propernames``,
  1,516 names, miscfiles), places (countries, capitals and cities from
  ``/usr/share/misc/countries`` and ``cities.dat``, miscfiles), spelled-out numbers
  (generated). They fill a set of sentence frames (``FRAMES``), so keyword-rich sentences
  (the paper's D3) exist; the fillers of test sentences are held out of all training text.

``build_splits`` makes sentence-disjoint pools and holds out words: every test word type
that is rare in the corpus (``rare_count``) and every held-out name / place never occurs in
an SFT or RL sentence, so the test sets have a real out-of-vocabulary share (``oov_rate``).
Texts are normalised for ASR targets (``normalise``): lower case, letters, apostrophes
inside words, single spaces.
"""
from __future__ import annotations

import gzip
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FORTUNE_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes")
PROPERNAMES = "/usr/share/dict/propernames"
COUNTRIES = "/usr/share/misc/countries"
CITIES = "/usr/share/misc/cities.dat"
INSTALL = "apt-get install fortunes fortunes-min miscfiles"

FRAMES = [
    "{name} flew to {place} with {number} friends",
    "please ask {name} to call the office in {place}",
    "{name} has lived in {place} for {number} years",
    "the train from {place} was {number} minutes late",
    "{name} and {name2} will meet in {place} next week",
    "we sold {number} tickets in {place} yesterday",
    "send the letter to {name} in {place}",
    "{name} paid {number} dollars for the old map of {place}",
    "the meeting with {name} moved to {place}",
    "{number} people came to hear {name} speak in {place}",
    "did {name} really drive all the way to {place}",
    "my cousin {name} works at a hotel in {place}",
    "{name} counted {number} boats in the harbour of {place}",
    "the flight to {place} leaves at {number} tonight",
    "{name} wrote {number} pages about the history of {place}",
    "tell {name2} that {name} is waiting in {place}",
]

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell_number(n: int) -> str:
    """0 <= n < 10000 in words.

    >>> spell_number(0), spell_number(45), spell_number(312), spell_number(2007)
    ('zero', 'forty five', 'three hundred and twelve', 'two thousand and seven')
    """
    if not 0 <= n < 10000:
        raise ValueError(f"spell_number: {n} is outside 0..9999")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for unit, word in ((1000, "thousand"), (100, "hundred")):
        if n >= unit:
            head, rest = divmod(n, unit)
            return f"{_ONES[head]} {word}" + ("" if rest == 0 else (" and " if rest < 100 else " ")
                                               + spell_number(rest))
    raise AssertionError(n)


def normalise(text: str) -> str:
    """ASR target form: lower case, letters and word-internal apostrophes, single spaces.

    >>> normalise("Don't -- PANIC!  The  'end' is near.")
    "don't panic the end is near"
    """
    t = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    words = [w.strip("'") for w in t.split()]
    return " ".join(w for w in words if w)


def _open_text(path: str) -> str:
    p = Path(path)
    if p.is_file():
        return p.read_text(encoding="latin-1")
    gz = Path(path + ".gz")
    if gz.is_file():
        return gzip.decompress(gz.read_bytes()).decode("latin-1")
    raise FileNotFoundError(f"{path}(.gz) not found: install the open-text sources ({INSTALL})")


def fortune_sentences(dirs: tuple[str, ...] = FORTUNE_DIRS, min_words: int = 5, max_words: int = 18) -> list[str]:
    """Distinct normalised sentences of the fortune files (sorted): each fortune is
    unwrapped, its attribution (``-- author``) dropped, split at . ! ?; a sentence is kept
    if it has only letters and , ; ' - as punctuation, no all-caps word and
    ``min_words``-``max_words`` words."""
    files = sorted(f for d in dirs if Path(d).is_dir() for f in Path(d).iterdir()
                   if f.is_file() and "." not in f.name)
    if not files:
        raise FileNotFoundError(f"no fortune files in {dirs}: install the open-text sources ({INSTALL})")
    out: set[str] = set()
    for f in files:
        for fortune in f.read_text(encoding="latin-1").split("\n%\n"):
            body = " ".join(re.sub(r"\n\s*--.*", "", fortune, flags=re.S).split())
            for s in re.split(r"(?<=[.!?])\s+", body):
                s = s.strip().strip('"')
                if not re.fullmatch(r"[A-Za-z][A-Za-z ,;'\-]*[.!?]", s):
                    continue
                words = re.findall(r"[A-Za-z']+", s)
                if min_words <= len(words) <= max_words and not any(w.isupper() and len(w) > 1 for w in words):
                    out.add(normalise(s))
    return sorted(out)


def person_names() -> list[str]:
    return sorted({normalise(x) for x in _open_text(PROPERNAMES).split() if x.isalpha()})


def place_names() -> list[str]:
    """Countries, capitals and cities whose names are plain words (one or two)."""
    names = set()
    for line in _open_text(COUNTRIES).splitlines():
        if line.startswith("#"):
            continue
        parts = line.split(":")
        names.update(parts[3:5])
    for line in _open_text(CITIES).splitlines():
        if line.startswith("Name"):
            names.add(line.split(":", 1)[1].strip())
    keep = {normalise(n) for n in names if re.fullmatch(r"[A-Za-z]+( [A-Za-z]+)?", n.strip())}
    return sorted(k for k in keep if k)


@dataclass
class TextPools:
    """Sentence pools disjoint by sentence; ``heldout_words`` occur in no sft/rl/val text."""

    test: list[str]
    val: list[str]
    sft: list[str]
    rl: list[str]
    heldout_words: set[str] = field(default_factory=set)
    keywords: dict[str, list[str]] = field(default_factory=dict)     # sentence -> its keywords

    def training_text(self) -> list[str]:
        return self.sft + self.rl + self.val


def oov_rate(test: list[str], train: list[str]) -> float:
    """Share of the word types of ``test`` that never occur in ``train``."""
    seen = {w for s in train for w in s.split()}
    types = {w for s in test for w in s.split()}
    return len(types - seen) / max(1, len(types))


def _frame_sentences(rng: random.Random, n: int, names: list[str], places: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    while len(out) < n:
        frame = rng.choice(FRAMES)
        fill = {"name": rng.choice(names), "name2": rng.choice(names), "place": rng.choice(places),
                "number": spell_number(rng.choice([rng.randint(2, 20), rng.randint(21, 999), rng.randint(1000, 9999)]))}
        text = frame.format(**fill)
        out[text] = [fill[k] for k in ("name", "name2", "place") if "{" + k + "}" in frame]
    return out


def build_splits(seed: int = 0, n_test: int = 700, n_val: int = 300, n_rl: int = 2500, frames: int = 3000,
                 frame_share_test: float = 0.2, rare_count: int = 2, heldout_fillers: float = 0.3) -> TextPools:
    """Sentence pools for the corpus (deterministic for ``seed``).

    Test sentences are drawn first: ``n_test`` of them, ``frame_share_test`` keyword frames
    filled with held-out names and places (a ``heldout_fillers`` share of each list). Every
    test word type seen at most ``rare_count`` times in the whole corpus joins the held-out
    words; sentences containing a held-out word are removed from the rest, which is then cut
    into val / rl / sft. Keywords of a sentence: its names and places, and its words that
    are rare in the corpus (``rare_count``) and at least 6 letters long (specialised vocabulary).
    """
    rng = random.Random(f"opentext-{seed}")
    names, places = person_names(), place_names()
    rng.shuffle(names)
    rng.shuffle(places)
    k_n, k_p = int(len(names) * heldout_fillers), int(len(places) * heldout_fillers)
    test_names, train_names, test_places, train_places = names[:k_n], names[k_n:], places[:k_p], places[k_p:]
    fortunes = fortune_sentences()
    counts = Counter(w for s in fortunes for w in s.split())

    def rare_keywords(s: str) -> list[str]:
        return [w for w in dict.fromkeys(s.split()) if counts[w] <= rare_count and len(w) >= 6]

    n_test_frames = int(n_test * frame_share_test)
    test_frames = _frame_sentences(rng, n_test_frames, test_names, test_places)
    train_frames = _frame_sentences(rng, frames, train_names, train_places)
    order = list(fortunes)
    rng.shuffle(order)
    test = order[: n_test - n_test_frames] + list(test_frames)
    heldout = {w for s in test[: n_test - n_test_frames] for w in s.split() if counts[w] <= rare_count}
    heldout |= {w for kws in test_frames.values() for k in kws for w in k.split()}
    test_set = set(test)
    rest = [s for s in order[n_test - n_test_frames:] + list(train_frames)
            if s not in test_set and not heldout.intersection(s.split())]
    rng.shuffle(rest)
    val, rl, sft = rest[:n_val], rest[n_val: n_val + n_rl], rest[n_val + n_rl:]
    keywords = {s: rare_keywords(s) for s in fortunes}
    keywords.update({s: k for s, k in {**test_frames, **train_frames}.items()})
    return TextPools(test=test, val=val, sft=sft, rl=rl, heldout_words=heldout, keywords=keywords)
