"""DiffRO (PAPER.md eq. 5-6): differentiable reward optimisation through a token ASR.

eq. 5  o~_t = GumbelSoftmax_hard(P_theta(o_t | o_<t ; y))
eq. 6  R_ASR = log P_ASR(y | o~_1..T)

``straight_through_tokens`` makes o~: a one-hot row per position whose forward value
is a hard token and whose gradient is that of the (tempered) softmax. Two ways to
pick the hard token:

  rollout  the token the engine sampled (itself a sample of P_theta), so the one-hot
           sequence is exactly the sequence the LM was conditioned on;
  gumbel   a fresh ``torch.nn.functional.gumbel_softmax(hard=True)`` sample at each
           position, as eq. 5 reads, with the rollout's tokens as the context.

``diffro_loss`` turns the per-sequence ``log P(y | o~)`` into a loss to minimise:
its negative, divided by the text length in characters, averaged over the rows kept.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def straight_through_tokens(logits: torch.Tensor, tokens: torch.Tensor, n_codes: int, tau: float = 1.0,
                            hard_sample: str = "rollout") -> torch.Tensor:
    """logits (N, T, V >= n_codes) over the LM vocabulary, tokens (N, T) the sampled ids ->
    o~ (N, T, n_codes): hard one-hot values, softmax(logits[..., :K] / tau) gradients.
    Positions whose token is not a speech code (eos, padding) get a zero row."""
    if hard_sample not in ("rollout", "gumbel"):
        raise ValueError(f"hard_sample must be 'rollout' or 'gumbel', got {hard_sample!r}")
    lg = logits[..., :n_codes].float()
    valid = (tokens < n_codes).unsqueeze(-1)
    if hard_sample == "gumbel":
        return F.gumbel_softmax(lg, tau=tau, hard=True) * valid
    soft = torch.softmax(lg / tau, -1)
    hard = F.one_hot(tokens.clamp(max=n_codes - 1), n_codes).to(soft.dtype)
    return (hard + soft - soft.detach()) * valid


def diffro_loss(log_p_text: torch.Tensor, text_chars: torch.Tensor, keep: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """log_p_text (N,) from the token ASR, text_chars (N,) characters per text, keep (N,)
    bool (the sample filter) -> (loss, metrics). Rows whose log P is not finite (a text
    too long for its tokens) are dropped too; with no row left the loss is 0 (with a
    graph, so every rank still runs its backward)."""
    ok = keep & torch.isfinite(log_p_text)
    per_char = torch.where(ok, log_p_text / text_chars.clamp_min(1).to(log_p_text.dtype),
                           torch.zeros_like(log_p_text))
    n = ok.sum()
    loss = -per_char.sum() / n.clamp_min(1)
    metrics = {"diffro_logp_per_char": (per_char.sum() / n.clamp_min(1)).detach(),
               "diffro_kept_frac": ok.float().mean().detach()}
    return loss, metrics


def sample_filter(finished: torch.Tensor, advantages: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's sample filter for the DiffRO term: keep the sequences that emitted the
    stop token (a sequence that repeats and never stops is dropped) and, when the GRPO
    ``advantages`` (N,) are given (the combined method), only those with A_i > 0.
    finished (N,) bool -> keep (N,) bool.

    >>> sample_filter(torch.tensor([True, True, False]), torch.tensor([0.5, -0.5, 1.0])).tolist()
    [True, False, False]
    """
    keep = finished.bool()
    return keep & (advantages > 0) if advantages is not None else keep
