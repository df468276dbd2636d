"""Combine registered rewards by name and weight, with optional gates."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from rewards.registry import RewardError, get_reward, load_plugins


@dataclass
class RewardTerm:
    """One configured reward: ``name`` in the registry, its ``weight``, whether it is a
    ``gate`` (a negative value replaces the total with ``gate_value``), and its params."""

    name: str
    weight: float = 1.0
    gate: bool = False
    gate_value: float = -1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardOutput:
    """Rewards of a batch of N samples."""

    total: torch.Tensor                    # (N,) float32, what the advantages are computed from
    per_reward: dict[str, list[float | None]]
    gated: torch.Tensor                    # (N,) bool, a gate fired

    def means(self) -> dict[str, float]:
        """Mean of each reward over the samples it applied to (NaN if none)."""
        out = {}
        for name, vals in self.per_reward.items():
            xs = [v for v in vals if v is not None]
            out[name] = sum(xs) / len(xs) if xs else float("nan")
        return out


class RewardSet:
    """Callable combining rewards: ``total_i = sum_k w_k r_ik`` over rewards that apply to
    sample i; a fired gate sets ``total_i = gate_value``.

    >>> rs = RewardSet({"wer": {"weight": 1.0}, "hallucination": {"gate": True}})
    >>> rs(hyp=["a b", "b b b b"], ref=["a b", "a b"], duration=[1.0, 1.0]).total.tolist()
    [1.0, -1.0]
    """

    def __init__(self, terms: Mapping[str, Mapping[str, Any]] | list[RewardTerm], plugins: list[str] | None = None):
        load_plugins(plugins)
        if isinstance(terms, Mapping):
            parsed = []
            for name, spec in terms.items():
                spec = dict(spec or {})
                known = {k: spec.pop(k) for k in ("weight", "gate", "gate_value") if k in spec}
                params = dict(spec.pop("params", {}) or {})
                params.update(spec)
                parsed.append(RewardTerm(name=name, params=params, **known))
            terms = parsed
        if not terms:
            raise RewardError("no rewards configured (reward.terms is empty)")
        self.terms = list(terms)
        self.fns = {t.name: get_reward(t.name, **t.params) for t in self.terms}

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def __call__(self, **fields: list) -> RewardOutput:
        n = len(fields["hyp"])
        per: dict[str, list[float | None]] = {}
        for t in self.terms:
            try:
                vals = self.fns[t.name](**fields)
            except RewardError:
                raise
            except Exception as exc:
                raise RewardError(f"reward {t.name!r} raised {type(exc).__name__}: {exc}") from exc
            per[t.name] = self._check(t.name, vals, n, fields.get("id"))
        total = torch.zeros(n, dtype=torch.float32)
        gated = torch.zeros(n, dtype=torch.bool)
        for i in range(n):
            applied = [(t, per[t.name][i]) for t in self.terms if per[t.name][i] is not None]
            if not applied:
                who = fields["id"][i] if fields.get("id") else i
                raise RewardError(f"no reward applies to sample {who!r}: {', '.join(self.names)} all returned None")
            total[i] = sum(t.weight * v for t, v in applied if not t.gate)
            for t, v in applied:
                if t.gate and v < 0:
                    total[i], gated[i] = t.gate_value, True
                    break
        return RewardOutput(total=total, per_reward=per, gated=gated)

    @staticmethod
    def _check(name: str, vals: Any, n: int, ids: list | None) -> list[float | None]:
        try:
            vals = list(vals)
        except TypeError as exc:
            raise RewardError(f"reward {name!r} returned {type(vals).__name__}, expected a list of {n} floats") from exc
        if len(vals) != n:
            raise RewardError(f"reward {name!r} returned {len(vals)} values for {n} samples")
        out: list[float | None] = []
        for i, v in enumerate(vals):
            if v is None:
                out.append(None)
                continue
            try:
                f = float(v)
            except (TypeError, ValueError) as exc:
                raise RewardError(f"reward {name!r} returned {v!r} for sample "
                                  f"{ids[i] if ids else i!r}; expected a float or None") from exc
            if not math.isfinite(f):
                raise RewardError(f"reward {name!r} returned {f} for sample {ids[i] if ids else i!r}")
            out.append(f)
        return out
