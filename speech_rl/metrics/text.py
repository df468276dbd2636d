"""Text normalisation and word-level alignment (jiwer does the alignment)."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import jiwer

_PUNCT = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)", re.UNICODE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextNormalizer:
    """Normalisation applied to both reference and hypothesis before scoring.

    >>> TextNormalizer()("Hello,  World!  It's Acme-Corp.")
    "hello world it's acme corp"
    """

    lowercase: bool = True
    remove_punctuation: bool = True
    unicode_form: str = "NFKC"

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"expected text as str, got {type(text).__name__}: {text!r}")
        t = unicodedata.normalize(self.unicode_form, text)
        if self.lowercase:
            t = t.lower()
        if self.remove_punctuation:
            t = _PUNCT.sub(" ", t.replace("_", " "))
        return _SPACE.sub(" ", t).strip()


class WhisperNormalizer:
    """Whisper's English normaliser (numbers to digits, contractions expanded, punctuation
    dropped), callable like ``TextNormalizer``; for systems that write Whisper-style text
    (cased, punctuated, digits), applied to both sides.

    >>> WhisperNormalizer()("Seven hundred and twenty people, isn't it?")
    '720 people is not it'
    """

    def __init__(self):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        self._norm = EnglishTextNormalizer({})

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"expected text as str, got {type(text).__name__}: {text!r}")
        return self._norm(text)


NORMALIZERS = ("plain", "whisper")


def make_normalizer(name: str = "plain", lowercase: bool = True, remove_punctuation: bool = True):
    """The text normaliser called ``name`` (the config key ``text_normalizer``): ``plain``
    (``TextNormalizer(lowercase, remove_punctuation)``) or ``whisper`` (``WhisperNormalizer``,
    which always lowercases and drops punctuation)."""
    if name == "plain":
        return TextNormalizer(lowercase=lowercase, remove_punctuation=remove_punctuation)
    if name == "whisper":
        return WhisperNormalizer()
    raise ValueError(f"text normaliser {name!r}: expected one of {', '.join(NORMALIZERS)}")


@dataclass(frozen=True)
class WordErrors:
    """Edit operations of one hypothesis against its reference, in words."""

    sub: int
    dele: int
    ins: int
    n_ref: int

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        """(S + D + I) / N; an empty reference gives 0 if the hypothesis is empty, else 1 per word."""
        return self.errors / self.n_ref if self.n_ref else float(self.ins)


def word_errors(ref: str, hyp: str) -> WordErrors:
    """Align two already-normalised strings with jiwer.

    >>> word_errors("a b c", "a x c d")
    WordErrors(sub=1, dele=0, ins=1, n_ref=3)
    """
    if not ref.split():
        return WordErrors(0, 0, len(hyp.split()), 0)
    if not hyp.split():
        n = len(ref.split())
        return WordErrors(0, n, 0, n)
    out = jiwer.process_words(ref, hyp)
    return WordErrors(out.substitutions, out.deletions, out.insertions, out.substitutions + out.deletions + out.hits)


def keyword_counts(text: str, keywords: list[str]) -> list[int]:
    """Occurrences of each (normalised, multi-word allowed) keyword as whole words in ``text``.

    >>> keyword_counts("call acme corp or acme acme", ["acme corp", "acme", "zed"])
    [1, 3, 0]
    """
    return [len(re.findall(rf"(?<!\S){re.escape(k)}(?!\S)", text)) if k.strip() else 0 for k in keywords]


def longest_ngram_run(tokens: list[str], n: int) -> int:
    """Longest run of the same n-gram repeated back to back (1 = no repetition).

    >>> longest_ngram_run("a b a b a b c".split(), 2)
    3
    """
    best = 1
    for start in range(n):
        run, prev = 1, None
        for i in range(start, len(tokens) - n + 1, n):
            g = tuple(tokens[i:i + n])
            run = run + 1 if g == prev else 1
            best = max(best, run)
            prev = g
    return best


def ngram_loop(words: list[str], min_repeats: int, max_n: int = 4,
               ref_words: list[str] | None = None) -> tuple[int, int] | None:
    """The hallucination rule "loop", the one place it is written (the R2 reward and RL data
    selection both call it): the first n (1..``max_n``) whose n-gram repeats back to back
    ``min_repeats`` times or more, and more often than in ``ref_words`` when given, as
    ``(n, repeats)``; None when there is no such loop.

    >>> ngram_loop("go go go go now".split(), 3)
    (1, 4)
    >>> ngram_loop("no no no".split(), 3, ref_words="no no no".split()) is None
    True
    """
    for n in range(1, max_n + 1):
        run = longest_ngram_run(words, n)
        if run >= min_repeats and run > (longest_ngram_run(ref_words, n) if ref_words else 1):
            return n, run
    return None
