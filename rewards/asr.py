"""Rule-based ASR rewards (PAPER.md: R1 accuracy, R2 hallucination, R3 keywords).

Fields a reward may read (lists of length N, one entry per sample):
``hyp`` (decoded hypothesis), ``ref`` (reference text), ``keywords`` (list of str or
None), ``duration`` (audio seconds), ``id`` (utterance id), ``tokens`` (response ids).
The text rewards compare after ``normalizer`` (plain: ``lowercase`` / ``remove_punctuation``;
whisper: Whisper's English normaliser), which ``RewardSet`` sets from the run's ``text_normalizer``.
"""
from __future__ import annotations

import unicodedata

from rewards.registry import register_reward
from speech_rl.metrics.text import keyword_counts, make_normalizer, ngram_loop, word_errors


@register_reward("wer")
class WERReward:
    """R1: ``1 - WER(ref, hyp)`` per sample, after normalisation (jiwer alignment).

    >>> WERReward()(hyp=["the cat sat", "a dog"], ref=["The cat sat.", "the cat sat"])
    [1.0, 0.0]

    ``clip_min`` bounds the reward from below (a looping hypothesis can have WER >> 1).
    """

    def __init__(self, lowercase: bool = True, remove_punctuation: bool = True, normalizer: str = "plain",
                 clip_min: float | None = None):
        self.norm = make_normalizer(normalizer, lowercase, remove_punctuation)
        self.clip_min = clip_min

    def __call__(self, hyp: list[str], ref: list[str], **_) -> list[float]:
        out = []
        for h, r in zip(hyp, ref):
            v = 1.0 - word_errors(self.norm(r), self.norm(h)).wer
            out.append(max(v, self.clip_min) if self.clip_min is not None else v)
        return out


def _script(ch: str) -> str:
    """Unicode script family of a letter, from its name (LATIN, CYRILLIC, CJK, ...)."""
    try:
        return unicodedata.name(ch).split()[0]
    except ValueError:
        return "UNKNOWN"


def detect_hallucination(hyp: str, ref: str | None = None, duration: float | None = None, *,
                         max_ngram: int = 4, min_repeats: int = 3, max_words_per_second: float | None = 5.0,
                         max_len_ratio: float | None = 1.8, len_slack: int = 3,
                         allowed_scripts: tuple[str, ...] | None = None) -> str | None:
    """The reason ``hyp`` looks hallucinated, or None. Inputs are normalised text.

    Rules (each can be disabled with None):
      * loop: an n-gram (n <= ``max_ngram``) repeated back to back ``min_repeats`` times
        or more, more often than in the reference;
      * too long for the audio: more than ``max_words_per_second * duration + len_slack``
        words, or more than ``max_len_ratio * len(ref) + len_slack`` words;
      * foreign script: letters of a script the reference (or ``allowed_scripts``) does not use.

    >>> detect_hallucination("go go go go now", "go now")
    'loop: 1-gram repeated 4 times'
    >>> detect_hallucination("bonjour", "hello") is None
    True
    """
    words, ref_words = hyp.split(), (ref.split() if ref is not None else [])
    loop = ngram_loop(words, min_repeats, max_ngram, ref_words) if min_repeats else None
    if loop:
        return f"loop: {loop[0]}-gram repeated {loop[1]} times"
    if max_words_per_second is not None and duration is not None and duration > 0:
        limit = max_words_per_second * duration + len_slack
        if len(words) > limit:
            return f"too long for the audio: {len(words)} words in {duration:.1f}s (limit {limit:.0f})"
    if max_len_ratio is not None and ref is not None:
        limit = max_len_ratio * len(ref_words) + len_slack
        if len(words) > limit:
            return f"too long for the reference: {len(words)} words vs {len(ref_words)}"
    allowed = set(allowed_scripts) if allowed_scripts else ({_script(c) for c in ref if c.isalpha()} if ref else None)
    if allowed:
        foreign = sorted({_script(c) for c in hyp if c.isalpha()} - allowed)
        if foreign:
            return f"foreign script: {', '.join(foreign)}"
    return None


@register_reward("hallucination")
class HallucinationReward:
    """R2: -1 for a hallucinated hypothesis (loop, too long, foreign script), else 0.

    Used as a *gate* in config (``gate: true``): a triggered sample's total reward is
    replaced by -1 whatever the other rewards say, as in the paper.

    >>> HallucinationReward()(hyp=["the cat sat", "the the the the"], ref=["the cat sat"] * 2, duration=[2.0, 2.0])
    [0.0, -1.0]
    """

    def __init__(self, lowercase: bool = True, remove_punctuation: bool = True, normalizer: str = "plain", **rules):
        self.norm = make_normalizer(normalizer, lowercase, remove_punctuation)
        self.rules = rules
        detect_hallucination("", "", None, **rules)   # fail at build time on an unknown rule name
        self.last_reasons: list[str | None] = []

    def __call__(self, hyp: list[str], ref: list[str] | None = None, duration: list[float] | None = None,
                 **_) -> list[float]:
        n = len(hyp)
        refs = ref if ref is not None else [None] * n
        durs = duration if duration is not None else [None] * n
        self.last_reasons = [detect_hallucination(self.norm(h), self.norm(r) if r is not None else None, d,
                                                  **self.rules) for h, r, d in zip(hyp, refs, durs)]
        return [-1.0 if why else 0.0 for why in self.last_reasons]


def detect_truncation(hyp: str, ref: str, *, min_len_ratio: float = 0.75, len_slack: int = 1) -> str | None:
    """The reason ``hyp`` looks cut short, or None: fewer than ``min_len_ratio * len(ref) -
    len_slack`` words. Inputs are normalised text.

    >>> detect_truncation("the cat", "the cat sat on the mat")
    'too short for the reference: 2 words vs 6'
    >>> detect_truncation("the cat sat on mat", "the cat sat on the mat") is None
    True
    """
    words, ref_words = hyp.split(), ref.split()
    if len(words) < min_len_ratio * len(ref_words) - len_slack:
        return f"too short for the reference: {len(words)} words vs {len(ref_words)}"
    return None


@register_reward("truncation")
class TruncationReward:
    """R2's mirror: -1 for a hypothesis that stops early (far fewer words than the
    reference), else 0. Not in the paper: its hallucination rule only punishes outputs
    that are too long, so on audio the policy cannot read to the end, stopping early
    scores better than trying (deletions cost no more than substitutions in WER, and
    never trip the gate) — the stop-early trap. Used as a gate like R2.

    >>> TruncationReward()(hyp=["the cat sat on the mat", "the"], ref=["the cat sat on the mat"] * 2)
    [0.0, -1.0]
    """

    def __init__(self, lowercase: bool = True, remove_punctuation: bool = True, normalizer: str = "plain",
                 min_len_ratio: float = 0.75,
                 len_slack: int = 1):
        if not 0.0 < min_len_ratio <= 1.0:
            raise ValueError(f"truncation reward: min_len_ratio must be in (0, 1], got {min_len_ratio}")
        self.norm = make_normalizer(normalizer, lowercase, remove_punctuation)
        self.min_len_ratio, self.len_slack = min_len_ratio, len_slack
        self.last_reasons: list[str | None] = []

    def __call__(self, hyp: list[str], ref: list[str], **_) -> list[float]:
        self.last_reasons = [detect_truncation(self.norm(h), self.norm(r), min_len_ratio=self.min_len_ratio,
                                               len_slack=self.len_slack) for h, r in zip(hyp, ref)]
        return [-1.0 if why else 0.0 for why in self.last_reasons]


@register_reward("keyword")
class KeywordReward:
    """R3: mean of keyword precision and recall; None where the utterance lists no keywords.

    Counts are whole-word occurrences of the utterance's keywords: recall = matched /
    occurrences in the reference, precision = matched / occurrences in the hypothesis
    (a hypothesis with no keyword has precision 0), matched = sum of min counts.

    >>> KeywordReward()(hyp=["call acme now", "call now"], ref=["call Acme now"] * 2, keywords=[["Acme"], ["Acme"]])
    [1.0, 0.0]
    >>> KeywordReward()(hyp=["x"], ref=["x"], keywords=[None])
    [None]
    """

    def __init__(self, lowercase: bool = True, remove_punctuation: bool = True, normalizer: str = "plain"):
        self.norm = make_normalizer(normalizer, lowercase, remove_punctuation)

    def __call__(self, hyp: list[str], ref: list[str], keywords: list[list[str] | None] | None = None,
                 **_) -> list[float | None]:
        if keywords is None:
            return [None] * len(hyp)
        out: list[float | None] = []
        for h, r, kws in zip(hyp, ref, keywords):
            kn = [self.norm(k) for k in kws or [] if self.norm(k)]
            if not kn:
                out.append(None)
                continue
            rc, hc = keyword_counts(self.norm(r), kn), keyword_counts(self.norm(h), kn)
            hit, n_ref, n_hyp = sum(min(a, b) for a, b in zip(rc, hc)), sum(rc), sum(hc)
            recall = hit / n_ref if n_ref else (1.0 if n_hyp == 0 else 0.0)
            precision = hit / n_hyp if n_hyp else 0.0
            out.append(0.5 * (precision + recall))
        return out
