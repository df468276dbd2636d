"""Group-relative advantages (GRPO, PAPER.md eq. 1)."""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                     scale: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalise rewards within each group of ``group_size`` consecutive samples.

    eq. 1: ``A_i = (R_i - mean(R_group)) / std(R_group)``.

    Args:
        rewards: (B*G,) float, the G samples of one prompt are consecutive.
        group_size: G >= 1.
        eps: added to the std so that a tiny spread does not explode.
        scale: divide by the std (``False`` gives Dr.GRPO-style mean-centring only).

    Returns:
        advantages: (B*G,) float. A group whose rewards are all equal carries no
            signal and gets exactly 0 (never NaN).
        metrics: ``zero_std_frac`` (share of groups with no spread), ``group_std``
            (mean within-group std).

    The std is the population std (unbiased=False) so that G=2 and G=12 are
    comparable; a group of one sample gets advantage 0.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B*G,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"rewards contain non-finite values: {rewards.tolist()}")
    r = rewards.view(-1, group_size).to(torch.float64)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, unbiased=False, keepdim=True)
    centred = r - mean
    flat = std <= 1e-12
    if scale:
        adv = torch.where(flat, torch.zeros_like(centred), centred / (std + eps))
    else:
        adv = torch.where(flat, torch.zeros_like(centred), centred)
    metrics = {"zero_std_frac": flat.float().mean().to(torch.float32),
               "group_std": std.mean().to(torch.float32)}
    return adv.view(-1).to(rewards.dtype), metrics
