"""Passing a KV cache to a Hugging Face causal LM the way the installed transformers wants it."""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


@functools.lru_cache(maxsize=None)
def _cache_keyword(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(lm: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands a KV cache to ``lm``'s forward: ``cache`` where the
    model's forward takes it (transformers 5.2x renamed ``past_key_values`` and warns on the
    old name), else ``past_key_values`` (other models and versions). ``lm`` may be wrapped
    (``hf_model``)."""
    return {_cache_keyword(type(hf_model(lm))): cache}


def hf_model(lm: nn.Module) -> nn.Module:
    """The Hugging Face model inside wrappers: ``torch.compile`` (``_orig_mod``), a peft
    ``PeftModel`` (``get_base_model()``), speech-rl's adapters-off view (``wrapped_lm``)."""
    while True:
        if hasattr(lm, "_orig_mod"):
            lm = lm._orig_mod
        elif hasattr(lm, "wrapped_lm"):
            lm = lm.wrapped_lm
        elif hasattr(lm, "get_base_model"):
            lm = lm.get_base_model()
        else:
            return lm


def output_cache(out: Any) -> Any:
    """The KV cache a forward with ``use_cache=True`` returned (``cache`` or ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
