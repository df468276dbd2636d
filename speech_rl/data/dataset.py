"""The ASR dataset and batch of the library: manifest utterances -> log-mel features ->
padded batches. Used by evaluation (``speech_rl.evaluate``) and, through the Lightning data
module on top of it, by training (``datamodules.asr``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from speech_rl.data.features import LogMel, pad_features
from speech_rl.data.manifest import Utterance, utterance_audio


@dataclass
class ASRBatch:
    """A batch of B utterances."""

    feats: torch.Tensor             # (B, T, n_mels) float, zero padded
    feat_lens: torch.Tensor         # (B,) long
    texts: list[str]
    ids: list[str]
    keywords: list[list[str] | None]
    durations: list[float]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device) -> "ASRBatch":
        return ASRBatch(self.feats.to(device), self.feat_lens.to(device), self.texts, self.ids, self.keywords,
                        self.durations)


FEATURES = ("logmel", "waveform")


def encoder_input(encoder) -> str:
    """What an audio encoder reads, one of ``FEATURES``: its ``input_kind`` (s3prl upstreams:
    ``waveform``), else ``logmel``."""
    return getattr(encoder, "input_kind", "logmel")


class ManifestDataset(Dataset):
    """Utterances of a manifest as dicts with ``feats``: log-mel (T, n_mels), or with
    ``features="waveform"`` the samples themselves (n, 1), for encoders that read waveforms
    (s3prl upstreams)."""

    def __init__(self, utterances: list[Utterance], sample_rate: int = 16000, n_mels: int = 80,
                 features: str = "logmel"):
        if features not in FEATURES:
            raise ValueError(f"data.features must be one of {FEATURES}, got {features!r}")
        self.utts = utterances
        self.sample_rate = sample_rate
        self.logmel = LogMel(sample_rate=sample_rate, n_mels=n_mels) if features == "logmel" else None

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> dict:
        u = self.utts[i]
        wav = torch.from_numpy(utterance_audio(u, self.sample_rate))
        feats = self.logmel(wav) if self.logmel is not None else wav[:, None]
        return {"id": u.id, "feats": feats, "text": u.text,
                "keywords": list(u.keywords) if u.keywords is not None else None, "duration": u.duration}


def collate_asr(items: list[dict]) -> ASRBatch:
    feats, lens = pad_features([it["feats"] for it in items])
    return ASRBatch(feats, lens, [it["text"] for it in items], [it["id"] for it in items],
                    [it["keywords"] for it in items], [it["duration"] for it in items])
