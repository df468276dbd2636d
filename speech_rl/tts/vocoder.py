"""Vocoder floor: Griffin-Lim from the log-mel of ``speech_rl.data.features.LogMel``.

Needs no weights. The log-mel is mapped back to power (inverting LogMel's scaling),
to a linear-frequency magnitude by non-negative least squares on the mel filterbank
(a few projected-gradient steps from the pseudo-inverse), and phase is recovered by
fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99), all in torch.
"""
from __future__ import annotations

import torch
from torch import nn

from speech_rl.data.features import LogMel


class GriffinLimVocoder(nn.Module):
    """log-mel (B, T, n_mels) -> waveform (B, (T - 1) * hop).

    Args: the LogMel settings (must match the features the mel came from), n_iter
    Griffin-Lim iterations, momentum, nnls_iters (projected-gradient steps for the
    mel -> linear magnitude inversion), seed (initial phases).
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 80,
                 n_iter: int = 32, momentum: float = 0.99, nnls_iters: int = 20, seed: int = 0):
        super().__init__()
        mel = LogMel(sample_rate, n_fft, hop_length, n_mels)
        self.register_buffer("fb", mel.fb.clone(), persistent=False)                  # (F, M)
        self.register_buffer("fb_pinv", torch.linalg.pinv(mel.fb), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_iter, self.momentum, self.nnls_iters, self.seed = n_iter, momentum, nnls_iters, seed

    def magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) LogMel output -> linear magnitude (B, F, T), non-negative."""
        mel_power = torch.pow(10.0, logmel.float() * 4.0 - 4.0)                        # undo (log10 + 4) / 4
        p = (mel_power @ self.fb_pinv).clamp_min(0)                                     # (B, T, F)
        lr = 1.0 / float(torch.linalg.matrix_norm(self.fb, 2) ** 2)
        for _ in range(self.nnls_iters):                                                # min ||p fb - mel||, p >= 0
            p = (p - lr * ((p @ self.fb - mel_power) @ self.fb.T)).clamp_min(0)
        return p.sqrt().transpose(1, 2)

    @torch.no_grad()
    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        squeeze = logmel.dim() == 2
        mag = self.magnitude(logmel[None] if squeeze else logmel)                       # (B, F, T)
        gen = torch.Generator(device=mag.device).manual_seed(self.seed)
        angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=gen, device=mag.device))
        length = (mag.shape[-1] - 1) * self.hop_length
        prev = torch.zeros_like(angles)
        stft = lambda w: torch.stft(w, self.n_fft, self.hop_length, window=self.window, return_complex=True)  # noqa: E731
        istft = lambda s: torch.istft(s, self.n_fft, self.hop_length, window=self.window, length=length)      # noqa: E731
        for _ in range(self.n_iter):
            rebuilt = stft(istft(mag * angles))
            angles = rebuilt - self.momentum / (1 + self.momentum) * prev
            angles = angles / angles.abs().clamp_min(1e-8)
            prev = rebuilt
        wav = istft(mag * angles)
        return wav[0] if squeeze else wav
