"""TTS rewards for GRPO (PAPER.md: R2 duration, R3 diversity) and waveform quality rewards (MOS, speaker similarity).

Fields a TTS reward may read (lists of length N, one entry per sample; ``mos`` and
``speaker_sim`` load models: DNSMOS ONNX from speechmos, Resemblyzer's encoder, both shipped
in their wheels):
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


def _numpy_audio(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    return np.clip(a.astype(np.float32).reshape(-1), -1.0, 1.0)


@register_reward("mos")
class DNSMOSReward:
    """Predicted MOS of each sample's waveform by DNSMOS (speechmos' bundled ONNX models,
    no download): ``score`` one of ovrl_mos (default), sig_mos, bak_mos, p808_mos, on the
    1-5 scale. Audio must be 16 kHz; a waveform shorter than ``min_seconds`` scores 1.0
    (the bottom of the scale) instead of a guess."""

    SCORES = ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")

    def __init__(self, score: str = "ovrl_mos", min_seconds: float = 0.5):
        if score not in self.SCORES:
            raise ValueError(f"mos: score must be one of {self.SCORES}, got {score!r}")
        try:
            from speechmos import dnsmos
        except ImportError as exc:                                  # pragma: no cover - depends on the install
            raise ImportError("the mos reward needs speechmos, librosa and onnxruntime: pip install -e '.[eval]'") from exc
        self.dnsmos, self.score, self.min_seconds = dnsmos, score, min_seconds

    def __call__(self, audio: list, sample_rate: list, **_) -> list[float]:
        out = []
        for a, sr in zip(audio, sample_rate):
            if int(sr) != 16000:
                raise ValueError(f"mos: DNSMOS needs 16 kHz audio, got {sr} Hz")
            x = _numpy_audio(a)
            out.append(1.0 if len(x) < self.min_seconds * 16000 else
                       float(self.dnsmos.run(x, 16000, return_df=False)[self.score]))
        return out


@register_reward("speaker_sim")
class SpeakerSimReward:
    """Cosine similarity of each sample's Resemblyzer embedding to its speaker's
    reference: the mean embedding of up to ``per_speaker`` utterances of that speaker in
    ``reference_manifest`` (the prompt speaker's voice). Reads ``audio``, ``sample_rate``,
    ``speaker``; an empty waveform scores 0.0."""

    def __init__(self, reference_manifest: str, per_speaker: int = 5):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:                                  # pragma: no cover - depends on the install
            raise ImportError("the speaker_sim reward needs resemblyzer: pip install -e '.[eval]'") from exc
        from speech_rl.data.manifest import read_manifest, utterance_audio

        self.encoder, self.preprocess = VoiceEncoder(device="cpu", verbose=False), preprocess_wav
        utts, _ = read_manifest(reference_manifest, on_bad_row="skip", check_audio="header")
        by_spk: dict[str, list] = defaultdict(list)
        for u in utts:
            if u.speaker and len(by_spk[u.speaker]) < per_speaker:
                by_spk[u.speaker].append(self.embed(utterance_audio(u, 16000), 16000))
        if not by_spk:
            raise ValueError(f"speaker_sim: {reference_manifest} has no utterances with a 'speaker'")
        self.refs = {s: (lambda m: m / np.linalg.norm(m))(np.mean(v, 0)) for s, v in by_spk.items()}

    def embed(self, audio, sr: int) -> np.ndarray:
        """Unit-norm 256-d speaker embedding of a waveform."""
        return self.encoder.embed_utterance(self.preprocess(_numpy_audio(audio), source_sr=int(sr)))

    def __call__(self, audio: list, sample_rate: list, speaker: list, **_) -> list[float]:
        out = []
        for a, sr, s in zip(audio, sample_rate, speaker):
            if s not in self.refs:
                raise ValueError(f"speaker_sim: no reference for speaker {s!r}; known: {sorted(self.refs)}")
            x = _numpy_audio(a)
            out.append(0.0 if len(x) < int(sr) // 4 else float(self.embed(x, int(sr)) @ self.refs[s]))
        return out
