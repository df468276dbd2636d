"""The reward registry: the one place reward plugins enter.

A reward is a callable over a batch: it receives the samples' fields as keyword
arguments (lists of equal length N) and returns N floats, or ``None`` for a sample
it does not apply to. Register a function or a class (instantiated with the
config's params) under a unique name:

>>> @register_reward("shorter_is_better")         # doctest: +SKIP
... def shorter(hyp, **_):
...     return [-len(h.split()) for h in hyp]
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

_REGISTRY: dict[str, Any] = {}


class RewardError(RuntimeError):
    """A reward failed, returned something outside its contract, or is unknown."""


def register_reward(name: str) -> Callable[[Any], Any]:
    """Decorator: register a reward function or class under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def deco(obj):
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            prev = _REGISTRY[name]
            raise RewardError(f"reward {name!r} is already registered by "
                              f"{getattr(prev, '__module__', '?')}.{getattr(prev, '__qualname__', prev)}")
        _REGISTRY[name] = obj
        return obj

    return deco


def available_rewards() -> list[str]:
    """Names of all registered rewards, sorted."""
    return sorted(_REGISTRY)


def get_reward(name: str, **params: Any) -> Callable[..., list]:
    """Build the reward registered as ``name`` with ``params`` (class init args or
    function keyword arguments)."""
    if name not in _REGISTRY:
        raise RewardError(f"unknown reward {name!r}; registered rewards: {', '.join(available_rewards()) or 'none'}"
                          " (plugins outside rewards/ are loaded with reward.plugins=[path/or.module])")
    obj = _REGISTRY[name]
    try:
        if inspect.isclass(obj):
            fn = obj(**params)
        else:
            if params:
                inspect.signature(obj).bind_partial(**params)
            fn = functools.partial(obj, **params) if params else obj
    except TypeError as exc:
        raise RewardError(f"reward {name!r} does not accept params {sorted(params)}: {exc}") from exc
    return fn


def accepts_param(name: str, param: str) -> bool:
    """Whether the reward registered as ``name`` takes a keyword ``param`` by name (its class
    init's or its function's own parameter; ``**kwargs`` does not count)."""
    obj = _REGISTRY.get(name)
    if obj is None:
        return False
    return param in inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters


def load_plugins(plugins: list[str] | None) -> list[str]:
    """Import reward plugin modules given as file paths (``/x/my_rewards.py``) or dotted
    paths (``mypkg.rewards``) so that their ``@register_reward`` run. Returns the names
    that became registered."""
    before = set(_REGISTRY)
    for spec in plugins or []:
        spec = str(spec)
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise RewardError(f"reward plugin file {spec!r} does not exist ({path})")
            mod_name = f"speech_rl_reward_plugin_{path.stem}_{abs(hash(str(path)))}"
            if mod_name in sys.modules:
                continue
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception:
                del sys.modules[mod_name]
                raise
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as exc:
                raise RewardError(f"reward plugin module {spec!r} cannot be imported: {exc}") from exc
    return sorted(set(_REGISTRY) - before)
