"""Token ASR: acoustic tokens -> text, the DiffRO reward model (PAPER.md eq. 6).

It reads tokens through an embedding that also takes soft or straight-through one-hot
inputs (B, T, K) as ``probs @ E``, so that ``log P(text | tokens)`` can be
back-propagated into the TTS LM. A small Transformer over the tokens (repeated ``up``
times so that CTC has frames to spare for characters) and a CTC head over the text
tokenizer's vocabulary (blank = the tokenizer's pad id); ``log P(y | x)`` is CTC's
exact sum over alignments.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from speech_rl.models.encoder import sinusoidal_positions


def ctc_min_frames(ids: list[int]) -> int:
    """Frames CTC needs for a label sequence: its length plus one blank between each pair
    of equal neighbours.

    >>> ctc_min_frames([5, 6, 6, 7])
    5
    """
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


class TokenASR(nn.Module):
    """Args: n_codes (K), text_tokenizer (``encode``, ``vocab_size``, ``pad_id``, ``itos``),
    d_model, n_layers, n_heads, up (frames per token), dropout."""

    def __init__(self, n_codes: int, text_tokenizer, d_model: int = 128, n_layers: int = 3, n_heads: int = 4,
                 up: int = 2, dropout: float = 0.1):
        super().__init__()
        self.n_codes, self.tokenizer, self.up, self.d_model = n_codes, text_tokenizer, up, d_model
        self.embed = nn.Parameter(torch.randn(n_codes, d_model) * d_model ** -0.5)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, text_tokenizer.vocab_size)
        self.blank = text_tokenizer.pad_id

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) long, or (B, T, K) one-hot / probabilities -> CTC log-probs
        (B, T * up, V) and frame lengths (B,)."""
        if tokens.dim() == 2:
            x = F.embedding(tokens.clamp(0, self.n_codes - 1), self.embed)
        elif tokens.dim() == 3 and tokens.shape[-1] == self.n_codes:
            x = tokens.to(self.embed.dtype) @ self.embed
        else:
            raise ValueError(f"TokenASR wants (B, T) ids or (B, T, {self.n_codes}) probabilities, got {tuple(tokens.shape)}")
        x = x.repeat_interleave(self.up, dim=1)
        lens = lengths * self.up
        x = x + sinusoidal_positions(x.shape[1], self.d_model, x.device)
        pad = torch.arange(x.shape[1], device=x.device)[None] >= lens[:, None]
        h = self.norm(self.enc(x, src_key_padding_mask=pad))
        return self.head(h).log_softmax(-1), lens

    def targets(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> concatenated target ids (sum L,) and lengths (B,) for CTC."""
        ids = [self.tokenizer.encode(t) for t in texts]
        return (torch.tensor([i for s in ids for i in s], dtype=torch.long, device=device),
                torch.tensor([len(s) for s in ids], dtype=torch.long, device=device))

    def log_p_text(self, tokens: torch.Tensor, lengths: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Eq. 6: ``log P(text | tokens)`` (B,), differentiable w.r.t. soft ``tokens``.
        A text that cannot be aligned (too long for its frames) gets -inf."""
        logp, lens = self(tokens, lengths)
        tgt, tlens = self.targets(texts, logp.device)
        # zero_infinity: an infeasible row gets loss 0 and gradient 0 (not NaN), then -inf here
        nll = F.ctc_loss(logp.transpose(0, 1).float(), tgt, lens, tlens, blank=self.blank, reduction="none",
                         zero_infinity=True)
        need = torch.tensor([ctc_min_frames(self.tokenizer.encode(t)) for t in texts], device=logp.device)
        return torch.where(need <= lens, -nll, torch.full_like(nll, float("-inf")))

    @torch.no_grad()
    def transcribe(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Greedy CTC decoding: collapse repeats, drop blanks."""
        logp, lens = self(tokens, lengths)
        best = logp.argmax(-1)
        out = []
        for row, n in zip(best, lens):
            ids = torch.unique_consecutive(row[: int(n)]).tolist()
            out.append(self.tokenizer.decode([i for i in ids if i != self.blank]))
        return out
