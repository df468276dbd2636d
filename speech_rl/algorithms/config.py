"""The ``algorithm`` config group, parsed once into a typed, frozen object.

The YAML files in ``configs/algorithm/`` are the one home of every value: this module holds
no defaults. ``parse_algorithm`` checks that the keys an algorithm reads are all there and
that nothing else is (a key no code reads is an error, not a silent no-op).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COMMON = ("name", "group_size", "ppo_epochs", "micro_batch_size", "scale_advantages")
SURROGATE = ("clip_eps", "clip_eps_high", "beta", "length_norm")         # GRPO's clipped surrogate + KL
KL = ("beta", "length_norm")                                             # KL to the reference alone
DIFFRO = ("sample_filter", "diffro_weight", "gumbel_tau", "hard_sample")
MWER = ("mwer_normalise",)
KEYS: dict[str, tuple[str, ...]] = {
    "grpo": COMMON + SURROGATE,
    "mwer": COMMON + MWER,
    "diffro": COMMON + KL + DIFFRO,
    "combined": COMMON + SURROGATE + DIFFRO,
}


@dataclass(frozen=True)
class AlgorithmConfig:
    """One RL algorithm's settings (see ``configs/algorithm/*.yaml`` for their meaning).

    Fields an algorithm does not read are None (e.g. ``clip_eps`` for DiffRO)."""
    name: str
    group_size: int
    ppo_epochs: int
    micro_batch_size: int | None
    scale_advantages: bool
    clip_eps: float | None = None
    clip_eps_high: float | None = None
    beta: float | None = None
    length_norm: str | None = None
    sample_filter: bool | None = None
    diffro_weight: float | None = None
    gumbel_tau: float | None = None
    hard_sample: str | None = None
    mwer_normalise: bool | None = None

    @property
    def policy_gradient(self) -> bool:
        """The clipped surrogate with group advantages is part of the loss (GRPO, Combined)."""
        return self.name in ("grpo", "combined")

    @property
    def uses_diffro(self) -> bool:
        return self.name in ("diffro", "combined")

    @property
    def needs_reference(self) -> bool:
        """A KL term to the frozen reference is in the loss."""
        return bool(self.beta)

    def rows_per_micro_batch(self, n: int) -> int:
        """Rows of one backward: ``micro_batch_size`` rounded down to whole groups (at least
        one group), or all ``n`` when it is null."""
        mb = int(self.micro_batch_size or n)
        return max(self.group_size, mb - mb % self.group_size)


_TYPES = {"group_size": int, "micro_batch_size": int, "ppo_epochs": int, "clip_eps": float, "clip_eps_high": float,
          "beta": float, "diffro_weight": float, "gumbel_tau": float, "scale_advantages": bool,
          "sample_filter": bool, "mwer_normalise": bool}


def parse_algorithm(cfg: Mapping[str, Any], allowed: Sequence[str]) -> AlgorithmConfig:
    """``cfg`` (the ``algorithm`` group as a dict) -> ``AlgorithmConfig``; ``allowed``: the
    algorithm names the calling module implements. Raises ValueError naming an unknown
    algorithm, a missing key, a key the algorithm does not read, or a bad value."""
    name = cfg.get("name")
    if name not in allowed:
        raise ValueError(f"unknown algorithm {name!r}; available: {', '.join(allowed)}")
    want = KEYS[name]
    missing = [k for k in want if k not in cfg]
    extra = sorted(set(cfg) - set(want))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"{', '.join(extra)} not read by {name}"] if extra else [])
        raise ValueError(f"algorithm config for {name!r}: {'; '.join(parts)} (see configs/algorithm/{name}.yaml)")
    values = {k: (None if cfg[k] is None else _TYPES.get(k, lambda v: v)(cfg[k])) for k in want}
    if values["group_size"] < 1 or values["ppo_epochs"] < 1:
        raise ValueError(f"algorithm.group_size and algorithm.ppo_epochs must be >= 1, got "
                         f"{values['group_size']} and {values['ppo_epochs']}")
    if values.get("length_norm") not in (None, "sequence", "token"):
        raise ValueError(f"algorithm.length_norm must be 'sequence' or 'token', got {values['length_norm']!r}")
    if values.get("hard_sample") not in (None, "rollout", "gumbel"):
        raise ValueError(f"algorithm.hard_sample must be 'rollout' or 'gumbel', got {values['hard_sample']!r}")
    return AlgorithmConfig(**values)


def load_algorithm(name: str, **overrides: Any) -> dict[str, Any]:
    """The shipped ``configs/algorithm/<name>.yaml`` as a dict with ``overrides`` applied:
    for code that builds a module without Hydra (tests, benchmarks), so that the YAML stays
    the one home of the defaults. A key the file lacks is refused."""
    from speech_rl.config_files import load_config_group

    return load_config_group("algorithm", name, **overrides)
