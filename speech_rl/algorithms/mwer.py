"""Minimum word error rate training over an N-best list (PAPER.md, MWER baseline)."""
from __future__ import annotations

import torch


def mwer_loss(seq_logp: torch.Tensor, word_errors: torch.Tensor, group_size: int,
              normalise_by_ref_len: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Expected word errors under the renormalised N-best posterior, mean subtracted.

    For each group (one utterance, N = ``group_size`` hypotheses):
        ``P_i = softmax_j(seq_logp_j)_i``  (posterior renormalised over the list)
        ``L = sum_i P_i (E_i - mean_j E_j)``
    Subtracting the mean error does not change the gradient's expectation but
    lowers its variance (Prabhavalkar et al., 2018). The loss of the batch is the
    mean over groups.

    Args:
        seq_logp: (B*N,) log P(y_i | x) of each hypothesis (sum of token log-probs;
            carries the gradient).
        word_errors: (B*N,) word errors E_i (edit distance in words) of each
            hypothesis against the reference; no gradient.
        group_size: N.
        normalise_by_ref_len: optional (B,) reference lengths in words; when given,
            errors are divided by it (an expected WER instead of an error count).

    Returns:
        loss: scalar; metrics: ``expected_errors`` (mean of sum_i P_i E_i),
        ``posterior_max`` (mean over groups of the top hypothesis' posterior).
    """
    if seq_logp.shape != word_errors.shape or seq_logp.dim() != 1:
        raise ValueError(f"seq_logp {tuple(seq_logp.shape)} and word_errors "
                         f"{tuple(word_errors.shape)} must be equal 1-D shapes")
    if seq_logp.numel() % group_size:
        raise ValueError(f"{seq_logp.numel()} hypotheses do not split into groups of {group_size}")
    logp = seq_logp.view(-1, group_size)
    err = word_errors.detach().to(logp.dtype).view(-1, group_size)
    if normalise_by_ref_len is not None:
        err = err / normalise_by_ref_len.to(logp.dtype).clamp(min=1).unsqueeze(1)
    post = torch.softmax(logp, dim=1)                                  # (B, N)
    loss = (post * (err - err.mean(dim=1, keepdim=True))).sum(dim=1).mean()
    with torch.no_grad():
        metrics = {"expected_errors": (post * err).sum(dim=1).mean(),
                   "posterior_max": post.max(dim=1).values.mean()}
    return loss, metrics
