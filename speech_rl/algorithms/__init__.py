"""Pure loss and advantage math (no models, no I/O). Each function documents its
tensor shapes and the paper equation it implements, and returns ``(loss, metrics)``
where a loss is involved."""
from speech_rl.algorithms.advantages import group_advantages
from speech_rl.algorithms.config import AlgorithmConfig, parse_algorithm
from speech_rl.algorithms.diffro import diffro_loss, sample_filter, straight_through_tokens
from speech_rl.algorithms.grpo import grpo_loss, k3_kl, kl_penalty
from speech_rl.algorithms.mwer import mwer_loss

__all__ = ["AlgorithmConfig", "parse_algorithm", "group_advantages", "grpo_loss", "k3_kl", "kl_penalty", "mwer_loss",
           "diffro_loss", "sample_filter", "straight_through_tokens"]
