"""Conditional flow-matching decoder: acoustic tokens (+ speaker) -> log-mel.

Optimal-transport conditional flow matching (Lipman et al. 2023; as in Matcha-TTS and
CosyVoice's flow decoder): with noise ``x0 ~ N(0, I)`` and data ``x1`` (the mel),

  x_t = (1 - (1 - sigma_min) t) x0 + t x1,    u_t = x1 - (1 - sigma_min) x0,

the estimator ``v(x_t, t | tokens, speaker)`` is trained by masked MSE to ``u_t``, and
sampling integrates ``dx/dt = v`` from t = 0 to 1 with ``n_steps`` Euler steps.

Tokens at 25 Hz are embedded, contextualised by a small Transformer, and repeated
``up`` times to the mel rate (100 Hz); the estimator is a stack of dilated 1-D
convolution blocks with FiLM conditioning on time and speaker.

With ``prior_weight > 0`` the conditioning also predicts the mel itself (Matcha-TTS's
encoder output ``mu``): a linear head on the speaker-aware token states gives
``mu (B, Tm, M)``, trained by masked MSE to the mel with weight ``prior_weight`` beside
the flow loss, and the estimator reads ``[x_t | cond | mu]``. The regression target gives
the conditioning a direct path to the spectrum, so the flow has only the detail left to
model; without it the estimator must learn what each token sounds like from the flow loss
alone, which a small CPU budget does not reach (docs/results/tts_open.md).

With ``mel_norm_utts > 0`` the flow works on a normalised log-mel, ``(mel - mean) / std``
per bin (Matcha-TTS's data statistics): the start noise N(0, I) then has the data's scale
(this project's Whisper-scaled log-mel has a per-bin std of ~0.45, so unnormalised the noise
is ~2x the signal). The statistics are buffers (saved with the weights), computed once by
``fit_mel_stats`` before SFT (``TTSSFTModule.on_fit_start``); until then they are the
identity. ``mu`` is predicted in the normalised space too; ``prior_mel`` and ``sample``
return log-mel.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from speech_rl.models.encoder import sinusoidal_positions


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> (B, dim) sinusoidal features of 1000 t."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], -1)


class ConvBlock(nn.Module):
    """x (B, D, T) -> x + conv(GELU(norm(x) * (1 + scale) + shift)), masked."""

    def __init__(self, d: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, d)
        self.conv1 = nn.Conv1d(d, d, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.conv2 = nn.Conv1d(d, d, 1)
        self.film = nn.Linear(d, 2 * d)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c).unsqueeze(-1).chunk(2, dim=1)                       # (B, D, 1) each
        h = self.norm(x) * (1 + scale) + shift
        h = self.conv2(F.gelu(self.conv1(h * mask)))
        return (x + h) * mask


def check_flow_temperature(value: float, name: str = "flow_temperature") -> float:
    """The start-noise scale of the flow ODE as a float; a negative or NaN value raises, named."""
    if not float(value) >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class FlowDecoder(nn.Module):
    """Args: n_codes (speech codebook size K), n_speakers, n_mels, up (mel frames per
    token), d_model, cond_layers (Transformer layers over tokens), n_blocks (estimator
    conv blocks; dilations cycle 1, 2, 4), kernel, sigma_min, prior_weight (0: no mel
    prior; > 0: the ``mu`` head and its MSE weight, see the module docstring), mel_norm_utts
    (0: the flow models the log-mel as it is; N: normalised per bin by statistics over N
    training utterances, see the module docstring)."""

    def __init__(self, n_codes: int, n_speakers: int, n_mels: int = 80, up: int = 4, d_model: int = 128,
                 cond_layers: int = 2, n_heads: int = 4, n_blocks: int = 6, kernel: int = 5, sigma_min: float = 1e-4,
                 prior_weight: float = 0.0, mel_norm_utts: int = 0):
        super().__init__()
        if prior_weight < 0:
            raise ValueError(f"flow prior_weight must be >= 0, got {prior_weight}")
        if mel_norm_utts < 0:
            raise ValueError(f"flow mel_norm_utts must be >= 0, got {mel_norm_utts}")
        self.mel_norm_utts = int(mel_norm_utts)
        if self.mel_norm_utts:
            self.register_buffer("mel_mean", torch.zeros(n_mels))
            self.register_buffer("mel_std", torch.ones(n_mels))
            self.register_buffer("mel_stats_fitted", torch.tensor(False))
        self.n_codes, self.n_mels, self.up, self.sigma_min = n_codes, n_mels, up, sigma_min
        self.prior_weight = float(prior_weight)
        self.token_embed = nn.Embedding(n_codes, d_model)
        self.spk_embed = nn.Embedding(n_speakers, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.cond_enc = nn.TransformerEncoder(layer, cond_layers, enable_nested_tensor=False)
        self.t_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.prior = nn.Linear(d_model, n_mels) if self.prior_weight > 0 else None
        self.inp = nn.Conv1d(n_mels + d_model + (n_mels if self.prior is not None else 0), d_model, 1)
        self.blocks = nn.ModuleList([ConvBlock(d_model, kernel, 2 ** (i % 3)) for i in range(n_blocks)])
        self.out = nn.Conv1d(d_model, n_mels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.d_model = d_model

    @torch.no_grad()
    def fit_mel_stats(self, mels: list[torch.Tensor]) -> None:
        """Per-bin mean / std over the frames of ``mels`` [(T_i, M)] (log-mel of training
        utterances) -> the normalisation buffers. Needs ``mel_norm_utts > 0``."""
        if not self.mel_norm_utts:
            raise ValueError("fit_mel_stats: this flow decoder has no mel normalisation (mel_norm_utts 0)")
        if not mels or any(m.dim() != 2 or m.shape[1] != self.n_mels for m in mels):
            raise ValueError(f"fit_mel_stats needs a non-empty list of (T, {self.n_mels}) log-mels, got "
                             f"{[tuple(m.shape) for m in mels[:3]]}")
        frames = torch.cat([m.float() for m in mels]).to(self.mel_mean.device)
        self.mel_mean.copy_(frames.mean(0))
        self.mel_std.copy_(frames.std(0).clamp_min(1e-3))
        self.mel_stats_fitted.fill_(True)

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel (..., M) -> the flow's space (identity without mel normalisation)."""
        return (mel - self.mel_mean) / self.mel_std if self.mel_norm_utts else mel

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """the flow's space (..., M) -> log-mel (identity without mel normalisation)."""
        return x * self.mel_std + self.mel_mean if self.mel_norm_utts else x

    def prior_mel(self, tokens: torch.Tensor, token_lens: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
        """The prior's prediction as log-mel: tokens (B, T) -> (B, T * up, M), padding 0."""
        if self.prior is None:
            raise ValueError("this flow decoder has no mel prior (prior_weight 0)")
        _, mask, mu = self.condition(tokens, token_lens, spk)
        return self.denormalise(mu) * mask[..., None]

    def condition(self, tokens: torch.Tensor, token_lens: torch.Tensor,
                  spk: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """tokens (B, T) long, spk (B,) long -> conditioning (B, T * up, D), mel mask
        (B, T * up) float, and with a prior its mel ``mu`` (B, T * up, M), in the flow's
        (normalised) space (else None); the
        prior's token states also see the speaker (it needs the voice to predict a spectrum)."""
        b, t = tokens.shape
        x = self.token_embed(tokens.clamp(0, self.n_codes - 1)) + sinusoidal_positions(t, self.d_model, tokens.device)
        if self.prior is not None:
            if spk is None:
                raise ValueError("a flow decoder with a mel prior needs the speaker ids")
            x = x + self.spk_embed(spk)[:, None]
        pad = torch.arange(t, device=tokens.device)[None] >= token_lens[:, None]
        x = self.cond_enc(x, src_key_padding_mask=pad)
        cond = x.repeat_interleave(self.up, dim=1)                                      # (B, T*up, D)
        mask = (~pad).repeat_interleave(self.up, dim=1).float()
        mu = self.prior(cond) * mask[..., None] if self.prior is not None else None
        return cond, mask, mu

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, spk: torch.Tensor,
                 mask: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Tm, M), t (B,), cond (B, Tm, D), spk (B,) long, mask (B, Tm), mu (B, Tm, M)
        with a prior -> v (B, Tm, M)."""
        c = self.t_mlp(time_embedding(t, self.d_model)) + self.spk_embed(spk)           # (B, D)
        m = mask[:, None]                                                               # (B, 1, Tm)
        h = self.inp(torch.cat([x, cond] + ([mu] if mu is not None else []), -1).transpose(1, 2)) * m
        for blk in self.blocks:
            h = blk(h, c, m)
        return (self.out(h) * m).transpose(1, 2)

    def loss(self, mel: torch.Tensor, tokens: torch.Tensor, token_lens: torch.Tensor, spk: torch.Tensor,
             gen: torch.Generator | None = None) -> torch.Tensor:
        """Masked CFM loss (+ ``prior_weight`` x the prior's masked MSE to the mel): the
        training objective, ``loss_terms(...)["flow"]``."""
        return self.loss_terms(mel, tokens, token_lens, spk, gen)["flow"]

    def loss_terms(self, mel: torch.Tensor, tokens: torch.Tensor, token_lens: torch.Tensor, spk: torch.Tensor,
                   gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``flow``: the objective; with a prior also its parts, unweighted and detached (for
        logging): ``flow_cfm`` the masked CFM loss, ``flow_prior`` the prior's masked MSE to the
        mel, both per mel value in the flow's (normalised) space.
        mel (B, Tm', M) with Tm' >= T * up (cut to T * up), tokens (B, T)."""
        cond, mask, mu = self.condition(tokens, token_lens, spk)
        tm = cond.shape[1]
        if mel.shape[1] < tm:
            raise ValueError(f"mel has {mel.shape[1]} frames but {tokens.shape[1]} tokens need {tm}")
        x1 = self.normalise(mel[:, :tm]) * mask[..., None]
        t = torch.rand(x1.shape[0], device=x1.device, generator=gen)
        x0 = torch.randn(x1.shape, device=x1.device, generator=gen)
        tt = t[:, None, None]
        xt = (1 - (1 - self.sigma_min) * tt) * x0 + tt * x1
        u = x1 - (1 - self.sigma_min) * x0
        denom = (mask.sum() * self.n_mels).clamp_min(1)
        err = (self.velocity(xt, t, cond, spk, mask, mu) - u) ** 2 * mask[..., None]
        cfm = err.sum() / denom
        if mu is None:
            return {"flow": cfm}
        prior = ((mu - x1) ** 2 * mask[..., None]).sum() / denom
        return {"flow": cfm + self.prior_weight * prior, "flow_cfm": cfm.detach(), "flow_prior": prior.detach()}

    @torch.no_grad()
    def sample(self, tokens: torch.Tensor, token_lens: torch.Tensor, spk: torch.Tensor, n_steps: int = 10,
               temperature: float = 1.0, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler ODE from noise: tokens (B, T) -> mel (B, T * up, M), mel lengths (B,).
        ``temperature`` scales the start noise (Matcha-TTS samples at 0.667; 0 starts every
        path at the origin: a deterministic decode)."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        check_flow_temperature(temperature, "temperature")
        cond, mask, mu = self.condition(tokens, token_lens, spk)
        x = torch.randn(*cond.shape[:2], self.n_mels, device=cond.device, generator=gen) * temperature
        for i in range(n_steps):
            t = torch.full((x.shape[0],), i / n_steps, device=x.device)
            x = x + self.velocity(x, t, cond, spk, mask, mu) / n_steps
        return self.denormalise(x) * mask[..., None], token_lens * self.up
