"""Log-mel features in torch (filterbank from transformers.audio_utils, Whisper-style
dynamic range compression), and padding of a batch of feature matrices."""
from __future__ import annotations

import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank


class LogMel(nn.Module):
    """waveform (n,) or (B, n) at ``sample_rate`` -> log-mel (T, n_mels) or (B, T, n_mels),
    ``T = n // hop_length + 1``; values roughly in [-1, 1.5] (Whisper's scaling)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 80):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                             max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney",
                             mel_scale="slaney")
        self.register_buffer("fb", torch.from_numpy(fb).float(), persistent=False)       # (F, n_mels)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        squeeze = wav.dim() == 1
        x = wav.unsqueeze(0) if squeeze else wav
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        power = spec.abs().pow(2).transpose(1, 2)                                       # (B, T, F)
        mel = torch.clamp(power @ self.fb, min=1e-10).log10()
        mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        out = (mel + 4.0) / 4.0
        return out[0] if squeeze else out


def pad_features(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (T_i, F) -> padded (B, T_max, F) (zeros), lengths (B,) long."""
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    out = feats[0].new_zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lengths


def spec_augment(feats: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 15,
                 time_masks: int = 2, time_width: float = 0.05, gen: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warping: per utterance, ``freq_masks``
    bands of up to ``freq_width`` mel bins and ``time_masks`` spans of up to
    ``time_width`` x its length are set to 0. feats (B, T, F), lengths (B,) -> (B, T, F)."""
    b, t, f = feats.shape
    keep = torch.ones(b, t, f, dtype=torch.bool, device=feats.device)
    bins = torch.arange(f, device=feats.device)
    frames = torch.arange(t, device=feats.device)
    for i in range(b):
        n = int(lengths[i])
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, f - w), (1,), generator=gen))
            keep[i] &= ~((bins >= s) & (bins < s + w))[None, :]
        for _ in range(time_masks):
            w = int(torch.randint(0, int(time_width * n) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, n - w), (1,), generator=gen))
            keep[i] &= ~((frames >= s) & (frames < s + w))[:, None]
    return feats * keep
