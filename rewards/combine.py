"""Combine registered rewards by name and weight, with optional gates."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from rewards.registry import RewardError, accepts_param, get_reward, load_plugins


class RewardTimeout(RewardError):
    """A reward call ran past ``timeout_s``."""


def call_with_timeout(fn, timeout_s: float | None, name: str, **fields):
    """``fn(**fields)``; with ``timeout_s`` it runs in a daemon thread and a call that has
    not returned by then raises ``RewardTimeout`` naming the reward (the thread is left to
    finish or hang on its own: Python cannot stop it, and a daemon thread does not keep the
    process alive)."""
    if not timeout_s:
        return fn(**fields)
    box: dict[str, Any] = {}

    def run():
        try:
            box["value"] = fn(**fields)
        except BaseException as exc:           # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"reward-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RewardTimeout(f"reward {name!r} did not return within reward.timeout_s={timeout_s:g} s "
                            f"for {len(fields.get('hyp') or [])} samples")
    if "error" in box:
        raise box["error"]
    return box["value"]


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

    def __init__(self, terms: Mapping[str, Mapping[str, Any]] | list[RewardTerm], plugins: list[str] | None = None,
                 timeout_s: float | None = None, on_timeout: str = "error", normalizer: str | None = None):
        if on_timeout not in ("error", "skip"):
            raise RewardError(f"reward.on_timeout must be 'error' or 'skip', got {on_timeout!r}")
        if timeout_s is not None and not float(timeout_s) > 0:
            raise RewardError(f"reward.timeout_s must be > 0 seconds or null, got {timeout_s!r}")
        self.timeout_s, self.on_timeout = (float(timeout_s) if timeout_s else None), on_timeout
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
        if normalizer is not None:       # the run's text_normalizer, for every reward that takes one
            terms = [replace(t, params=dict(t.params, normalizer=normalizer))      # copies: the caller's terms stay
                     if "normalizer" not in t.params and accepts_param(t.name, "normalizer") else t for t in terms]
        self.terms = list(terms)
        self.fns = {t.name: get_reward(t.name, **t.params) for t in self.terms}

    @classmethod
    def from_config(cls, reward: Mapping[str, Any]) -> "RewardSet":
        """From a ``reward`` config group: ``terms``, ``plugins``, ``timeout_s`` (per reward
        call, null: none) and ``on_timeout`` (error: stop naming the reward; skip: the RL step
        skips the batch and counts it in ``train/reward_timeouts``), ``normalizer`` (the
        run's ``text_normalizer``: plain | whisper, given to each reward that takes one and
        does not set its own)."""
        return cls(reward.get("terms", {}), reward.get("plugins"), reward.get("timeout_s"),
                   reward.get("on_timeout", "error"), reward.get("normalizer"))

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def __call__(self, **fields: list) -> RewardOutput:
        n = len(fields["hyp"])
        per: dict[str, list[float | None]] = {}
        for t in self.terms:
            try:
                vals = call_with_timeout(self.fns[t.name], self.timeout_s, t.name, **fields)
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
