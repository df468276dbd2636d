"""LoRA on the causal LM through ``peft``: the adapters train, the base stays frozen.

* ``apply_lora(lm, r=...)`` wraps an HF causal LM in a ``peft`` model (``get_peft_model``);
  only the ``lora_A`` / ``lora_B`` matrices require grad.
* ``AdaptersOff(lm)``: the same LM with its adapters disabled (``disable_adapter()``), the
  frozen reference policy of the KL term without a second copy of the weights.
* ``merged_named_parameters(lm)``: the weights an engine serves, ``W + (alpha / r) B A`` per
  adapted layer under the plain model's parameter names; ``merged_copy(lm)`` the plain model
  an engine is built from (``merge_and_unload`` of a copy).
* ``frozen_base_names`` / ``fill_frozen``: checkpoints of a LoRA run hold the adapters (and
  whatever else trains), not the LM's frozen base, when ``model.init_from`` or the LM's
  ``pretrained_path`` / ``whisper_decoder`` rebuild it; loading puts the rebuilt base back.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",   # Qwen2 / Llama
                   "c_attn", "c_proj", "c_fc")                                                   # GPT-2


def _peft():
    try:
        import peft
    except ImportError as exc:
        raise ImportError("model.lora needs peft: pip install -e '.[lora]'") from exc
    return peft


def apply_lora(lm: nn.Module, r: int, alpha: float | None = None, dropout: float = 0.0,
               target_modules: Sequence[str] | None = None) -> nn.Module:
    """``lm`` with LoRA adapters of rank ``r`` (scale ``alpha / r``; ``alpha`` defaults to
    ``2 r``) on the linear layers named in ``target_modules`` (default: those of
    ``DEFAULT_TARGETS`` that ``lm`` has). Returns the peft model; its base weights are frozen."""
    peft = _peft()
    if int(r) <= 0:
        raise ValueError(f"model.lora.r must be a positive rank, got {r!r}")
    present = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, (nn.Linear, _conv1d()))}
    targets = list(target_modules) if target_modules else [t for t in DEFAULT_TARGETS if t in present]
    missing = [t for t in targets if t not in present]
    if missing or not targets:
        raise ValueError(f"model.lora.target_modules {missing or targets} name no linear layer of "
                         f"{type(lm).__name__} (it has {sorted(present)})")
    cfg = peft.LoraConfig(r=int(r), lora_alpha=float(alpha if alpha is not None else 2 * r),
                          lora_dropout=float(dropout), target_modules=targets, bias="none",
                          fan_in_fan_out=type(lm).__name__.startswith("GPT2"))
    return peft.get_peft_model(lm, cfg)


def _conv1d():
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def is_lora(lm: nn.Module) -> bool:
    """True for a peft model (an LM with LoRA adapters)."""
    return hasattr(lm, "peft_config") and hasattr(lm, "get_base_model")


class AdaptersOff(nn.Module):
    """``lm`` (a peft model) seen with its adapters disabled: the frozen base, sharing the
    policy's weights. ``lm`` is held, not registered, so the reference adds no parameters
    (and no state-dict entries) of its own."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        object.__setattr__(self, "wrapped_lm", lm)

    def forward(self, *args, **kwargs):
        with self.wrapped_lm.disable_adapter():
            return self.wrapped_lm(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.wrapped_lm.get_input_embeddings()

    @property
    def config(self):
        return self.wrapped_lm.config


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach()


def merged_named_parameters(lm: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the plain model's parameters with every adapter merged in: what
    ``merge_and_unload`` would give, computed without touching ``lm``. Names are the base
    model's (``model.layers.0.self_attn.q_proj.weight``), as engines built from
    ``merged_copy`` have them."""
    from peft.tuners.lora import LoraLayer

    base = lm.get_base_model()
    lora_layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, p in base.named_parameters():
        if ".lora_" in name:
            continue
        owner = next((ln for ln in lora_layers if name.startswith(ln + ".base_layer.")), None)
        if owner is None:
            yield name, _full(p)
            continue
        leaf = name[len(owner) + len(".base_layer."):]
        t = _full(p)
        if leaf == "weight":
            layer = lora_layers[owner]
            with torch.no_grad():
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        t = t + layer.get_delta_weight(adapter).to(t.dtype)
        yield f"{owner}.{leaf}", t


def merged_copy(lm: nn.Module) -> nn.Module:
    """A plain (peft-free) copy of ``lm`` with its adapters merged, for an engine to serve."""
    return copy.deepcopy(lm).merge_and_unload() if is_lora(lm) else lm


def lora_config(lm: nn.Module) -> dict:
    """The adapter settings of a peft model (rank, alpha, targets), for logs and docs."""
    cfg = lm.peft_config["default"]
    return {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": sorted(cfg.target_modules)}


def base_is_rebuilt(model_cfg) -> bool:
    """True when a model config names where the LM's base weights come from (``init_from``,
    ``llm.pretrained_path``, ``llm.whisper_decoder``, a family model's ``pretrained_path``), so a checkpoint need not hold them.
    A randomly initialised base is kept in the checkpoint."""
    model_cfg = model_cfg or {}
    llm = model_cfg.get("llm") or model_cfg.get("lm") or {}          # ASR: llm; TTS: lm
    return bool(model_cfg.get("init_from") or llm.get("pretrained_path") or llm.get("whisper_decoder")
                or model_cfg.get("pretrained_path"))


def frozen_base_names(root: nn.Module, lm: nn.Module) -> set[str]:
    """State-dict names (under ``root``) of ``lm``'s frozen base weights when ``lm`` has
    LoRA adapters; empty otherwise."""
    if not is_lora(lm):
        return set()
    frozen = {id(p) for p in lm.parameters() if not p.requires_grad}
    return {n for n, p in root.named_parameters(remove_duplicate=False) if id(p) in frozen}


def fill_frozen(state_dict: dict, root: nn.Module, names: set[str], prefix: str = "") -> dict:
    """``state_dict`` with the entries ``names`` (left out of a checkpoint) taken from
    ``root``, which rebuilt them; returns the same dict."""
    own = dict(root.named_parameters(remove_duplicate=False))
    for n in names:
        state_dict.setdefault(prefix + n, own[n].detach())
    return state_dict
