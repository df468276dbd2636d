"""Rollout engines (DESIGN.md contract) and their registry: ``torch`` (default, CPU or
GPU) and ``sglang`` (CUDA only, extra ``gpu``)."""
from __future__ import annotations

from typing import Any, Callable

from speech_rl.engines.base import EngineError, GuardedEngine, Rollout, RolloutEngine, SamplingParams
from speech_rl.engines.torch_engine import TorchEngine

_ENGINES: dict[str, Callable[..., Any]] = {}


def register_engine(name: str):
    def deco(factory):
        if name in _ENGINES:
            raise ValueError(f"engine {name!r} is already registered")
        _ENGINES[name] = factory
        return factory
    return deco


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def build_engine(name: str, **kwargs) -> RolloutEngine:
    """Build engine ``name``; an unknown name lists the registered ones."""
    if name not in _ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; available: {', '.join(available_engines())}")
    only = getattr(kwargs.get("lm"), "rollout_engines", None)
    if only is not None and name not in only:
        raise ValueError(f"rollout engine {name!r} cannot serve {type(kwargs['lm']).__name__} "
                         f"(it serves decoder-only LMs from prompt embeddings): use rollout={'|'.join(only)}")
    return _ENGINES[name](**kwargs)


register_engine("torch")(TorchEngine)


@register_engine("vllm")
def _vllm(**kwargs):
    from speech_rl.engines.vllm_engine import VLLMEngine

    return VLLMEngine(**kwargs)


@register_engine("sglang")
def _sglang(**kwargs):
    from speech_rl.engines.sglang_engine import SGLangEngine

    return SGLangEngine(**kwargs)


__all__ = ["EngineError", "GuardedEngine", "Rollout", "RolloutEngine", "SamplingParams", "TorchEngine", "build_engine", "register_engine",
           "available_engines"]
