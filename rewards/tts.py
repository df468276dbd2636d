"""TTS rewards for GRPO (PAPER.md: R2 duration, R3 diversity).

Fields a TTS reward may read (lists of length N, one entry per sample):
``tokens`` (the sampled acoustic tokens, without the stop token), ``group`` (which
group of G samples the sample belongs to: rewards that compare within a group use it),
``audio`` (1-D float waveform, numpy or torch) and ``sample_rate`` (int), ``text``
(the input text).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from rapidfuzz.distance import Levenshtein

from rewards.registry import register_reward


def _groups(group: list) -> dict:
    """group id -> indices of its samples, in order."""
    out: dict = defaultdict(list)
    for i, g in enumerate(group):
        out[g].append(i)
    return out


@register_reward("duration")
def duration(tokens: list, group: list, **_) -> list[float]:
    """R2 (eq. 7): ``-|(|o_i| - T_m) / T_m|`` with ``T_m`` the median length in the
    sample's group; keeps RL from slowing speech down to please the ASR.

    >>> duration(tokens=[[1] * 10, [1] * 12, [1] * 15, [1] * 4], group=[0, 0, 0, 1])
    [-0.16666666666666666, 0.0, -0.25, 0.0]
    """
    out = [0.0] * len(tokens)
    for idx in _groups(group).values():
        tm = float(np.median([len(tokens[i]) for i in idx]))
        for i in idx:
            out[i] = 0.0 - abs((len(tokens[i]) - tm) / tm) if tm > 0 else 0.0      # 0.0 - 0.0 is +0.0
    return out


def token_diversity(seqs: list[list[int]]) -> list[float]:
    """Mean over the other members of the group of ``edit_distance(o_i, o_j) / |o_i|``
    (Levenshtein over token ids, rapidfuzz). One sample alone scores 0.

    >>> token_diversity([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4]])
    [0.125, 0.25, 0.125]
    """
    out = []
    for i, a in enumerate(seqs):
        others = [Levenshtein.distance(a, b) / max(len(a), 1) for j, b in enumerate(seqs) if j != i]
        out.append(float(np.mean(others)) if others else 0.0)
    return out


def normalised_f0_std(audio, sample_rate: int, frame_period_ms: float = 10.0) -> float:
    """Standard deviation of F0 / mean F0 over the voiced frames (pyworld DIO +
    StoneMask); 0 when fewer than two frames are voiced."""
    try:
        import pyworld
    except ImportError as exc:                                  # pragma: no cover - depends on the install
        raise ImportError("the diversity reward needs pyworld: pip install -e '.[tts]'") from exc
    x = np.ascontiguousarray(np.asarray(audio, dtype=np.float64).reshape(-1))
    f0, t = pyworld.dio(x, sample_rate, frame_period=frame_period_ms)
    f0 = pyworld.stonemask(x, f0, t, sample_rate)
    v = f0[f0 > 0]
    return float(np.std(v / v.mean())) if v.size > 1 else 0.0


@register_reward("diversity")
class DiversityReward:
    """R3 (eq. 8): ``token_weight * token_diversity + f0_weight * std(F0 / mean F0)``;
    the F0 term needs ``audio`` (skip it with ``f0_weight=0``)."""

    def __init__(self, token_weight: float = 1.0, f0_weight: float = 1.0):
        self.token_weight, self.f0_weight = token_weight, f0_weight

    def __call__(self, tokens: list, group: list, audio: list | None = None, sample_rate: list | None = None,
                 **_) -> list[float]:
        out = [0.0] * len(tokens)
        for idx in _groups(group).values():
            for i, d in zip(idx, token_diversity([list(tokens[i]) for i in idx])):
                out[i] = self.token_weight * d
        if self.f0_weight:
            if audio is None or sample_rate is None:
                raise ValueError("diversity: the F0 term needs the 'audio' and 'sample_rate' fields "
                                 "(or set f0_weight=0)")
            for i, (a, sr) in enumerate(zip(audio, sample_rate)):
                a = a.detach().cpu().numpy() if hasattr(a, "detach") else a
                out[i] += self.f0_weight * normalised_f0_std(a, int(sr))
        return out
