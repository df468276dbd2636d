"""GRPO clipped surrogate with a KL penalty to the reference (PAPER.md eq. 2-4)."""
from __future__ import annotations

import torch


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (Schulman, "Approximating KL").

    ``kl = exp(ref - logp) - (ref - logp) - 1`` >= 0, unbiased for samples from pi_theta.
    Shapes: any, identical; returns the same shape.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1; 0 where nothing is selected."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, length_norm: str,
                  mean_tokens: float | None) -> torch.Tensor:
    """(N, T) per-token loss -> scalar: ``sequence``: mean over sequences of each one's token
    mean (eq. 2's 1/G sum_i 1/|o_i| sum_t); ``token``: sum over tokens / (N x mean length),
    the mean length ``mean_tokens`` of the whole batch when this is one micro-batch of it."""
    if length_norm not in ("sequence", "token"):
        raise ValueError(f"length_norm must be 'sequence' or 'token', got {length_norm!r}")
    if length_norm == "sequence":
        per_seq = masked_mean(per_token, mask, dim=1)                  # (N,) 1/|o_i| sum_t
    else:
        norm = mask.sum(1).mean() if mean_tokens is None else torch.as_tensor(float(mean_tokens))
        per_seq = (per_token * mask).sum(1) / norm.clamp(min=1)        # (N,) 1/mean|o| sum_t
    return per_seq.mean()                                              # 1/G sum_i (and over prompts)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, *, beta: float,
               length_norm: str = "sequence", mean_tokens: float | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``beta`` x k3 KL(pi_theta || pi_ref), normalised like ``grpo_loss`` (the KL term of
    eq. 2 alone; DiffRO's regulariser). Shapes (N, T); returns (loss, {"kl": token mean})."""
    if ref_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(f"ref_logp {tuple(ref_logp.shape)} and mask {tuple(mask.shape)} must have logp's shape "
                         f"{tuple(logp.shape)}")
    mask = mask.to(logp.dtype)
    kl = k3_kl(logp, ref_logp.detach())
    loss = sequence_mean(beta * kl, mask, length_norm, mean_tokens)
    return loss, {"kl": masked_mean(kl, mask).detach()}


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, clip_eps: float, beta: float,
              clip_eps_high: float | None = None, length_norm: str = "sequence",
              mean_tokens: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss to *minimise* (the negative of eq. 2).

    eq. 4: ``r_it = exp(logp_it - old_logp_it)``
    eq. 2: ``J = 1/G sum_i 1/|o_i| sum_t [min(r_it A_i, clip(r_it, 1-eps, 1+eps_high) A_i)
                                         - beta * KL_it]``

    ``length_norm="token"`` replaces each sequence's ``1/|o_i|`` by one ``1/mean_i |o_i|``
    shared by the batch, so that every token weighs the same and a long response's tokens
    are not diluted (DAPO's token-level loss): ``J = sum_i sum_t [...] / sum_i |o_i|``.

    Args:
        logp: (N, T) log pi_theta of the sampled tokens (carries the gradient).
        old_logp: (N, T) log pi_theta_old (the policy that sampled; detached).
        ref_logp: (N, T) log pi_ref, or None when ``beta == 0``.
        advantages: (N,) one advantage per sequence (eq. 1), shared by its tokens.
        mask: (N, T) 1 for response tokens (EOS included), 0 for padding.
        clip_eps: lower clip range eps (``algorithm.clip_eps``; no default here, the config
            is its one home); ``clip_eps_high`` defaults to it (DAPO's clip-higher when larger).
        beta: KL coefficient (``algorithm.beta``).
        length_norm: ``sequence`` (eq. 2, the paper's) or ``token`` (see above).
        mean_tokens: with ``token``, the mean response length over the *whole* batch when
            ``logp`` is one micro-batch of it (so that micro-batch losses weighted by their
            share of rows add up to the batch's token mean); default: this batch's.

    Returns:
        loss: scalar, ``-J``; sequences with no tokens contribute 0 and count in 1/G.
        metrics: ``kl`` (token mean), ``clip_frac`` (share of tokens whose surrogate
            was clipped), ``ratio_mean``, ``ratio_max``, ``pg_loss``.
    """
    n, t = logp.shape
    for name, x in (("old_logp", old_logp), ("mask", mask)) + ((("ref_logp", ref_logp),) if ref_logp is not None else ()):
        if x.shape != (n, t):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {(n, t)} like logp")
    if advantages.shape != (n,):
        raise ValueError(f"advantages has shape {tuple(advantages.shape)}, expected ({n},)")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if length_norm not in ("sequence", "token"):
        raise ValueError(f"length_norm must be 'sequence' or 'token', got {length_norm!r}")
    eps_hi = clip_eps if clip_eps_high is None else clip_eps_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(1)                      # (N, 1)
    ratio = torch.exp(logp - old_logp.detach())                        # (N, T) eq. 4
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_hi) * adv
    surrogate = torch.minimum(unclipped, clipped)                      # (N, T)
    per_token = -surrogate
    if beta > 0:
        kl = k3_kl(logp, ref_logp.detach())
        per_token = per_token + beta * kl
    else:
        kl = torch.zeros_like(logp)
    loss = sequence_mean(per_token, mask, length_norm, mean_tokens)
    with torch.no_grad():
        was_clipped = (clipped < unclipped).to(logp.dtype)             # min picked the clipped term
        pg = masked_mean(-surrogate, mask, dim=1).mean()
        metrics = {
            "kl": masked_mean(kl, mask),
            "clip_frac": masked_mean(was_clipped, mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": (ratio * mask).max() if mask.any() else ratio.new_tensor(1.0),
            "pg_loss": pg,
        }
    return loss, {k: v.detach() for k, v in metrics.items()}
