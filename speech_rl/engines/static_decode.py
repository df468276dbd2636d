"""One-token decode steps over a preallocated KV cache for Llama-family HF causal LMs.

Hugging Face's forward builds a 4-D mask, grows its ``DynamicCache`` with ``torch.cat``
(copying the whole cache every token) and wraps outputs in dataclasses on every call;
for the small models and short responses of RL rollouts on a CPU that bookkeeping,
not the matrix products, is most of a decode step. ``StaticDecoder`` runs the same
computation with the model's own sub-modules (so its weights are the model's: a
weight sync reaches it with no copy) over a KV buffer allocated once per rollout.

Supported: decoder layers with ``self_attn.{q,k,v,o}_proj`` (optional ``q_norm`` /
``k_norm``, as in Qwen3), ``mlp``, ``input_layernorm``, ``post_attention_layernorm``,
and a model with ``embed_tokens``, ``rotary_emb``, ``norm`` and an ``lm_head`` — Llama,
Qwen2, Qwen3, Mistral — without sliding-window attention. ``unsupported_reason``
says why another model is not; the engine then keeps Hugging Face's forward.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn


def unsupported_reason(lm: nn.Module) -> str | None:
    """None if ``StaticDecoder`` can run ``lm``, else why not."""
    model = getattr(lm, "model", None)
    if model is None or getattr(lm, "lm_head", None) is None:
        return f"{type(lm).__name__} has no .model / .lm_head"
    for attr in ("embed_tokens", "rotary_emb", "norm", "layers"):
        if not hasattr(model, attr):
            return f"{type(model).__name__} has no .{attr}"
    cfg = lm.config
    layer_types = getattr(cfg, "layer_types", None) or []
    if getattr(cfg, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        return "sliding-window attention"
    for layer in model.layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")):
            return f"decoder layer {type(layer).__name__} is not Llama-style"
        for p in ("mlp", "input_layernorm", "post_attention_layernorm"):
            if not hasattr(layer, p):
                return f"decoder layer {type(layer).__name__} has no .{p}"
        if not hasattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb"):
            return f"{type(attn).__module__} has no apply_rotary_pos_emb"
    return None


class StaticDecoder:
    """Decode state of one rollout: A rows, a KV buffer of ``Lp + max_new`` positions.

    Args:
        lm: the causal LM (its modules are called, not copied).
        cache: the ``DynamicCache`` after the prefill (and any group repeat), (A, kvh, Lp, d)
            per layer.
        prompt_mask: (A, Lp) 1 for prompt tokens (left padding 0).
        max_new: tokens the rollout may add.
    """

    def __init__(self, lm: nn.Module, cache, prompt_mask: torch.Tensor, max_new: int):
        self.lm, self.model = lm, lm.model
        self.layers = list(self.model.layers)
        self._rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        a, lp = prompt_mask.shape
        self.lp = lp
        self.k, self.v = [], []
        for layer in cache.layers:
            kk, vv = layer.keys, layer.values                               # (A, kvh, Lp, d)
            k = kk.new_empty(a, kk.shape[1], lp + max_new, kk.shape[3])
            v = vv.new_empty(a, vv.shape[1], lp + max_new, vv.shape[3])
            k[:, :, :lp], v[:, :, :lp] = kk, vv
            self.k.append(k)
            self.v.append(v)
        self.mask = torch.cat([prompt_mask.bool(), prompt_mask.new_ones(a, max_new, dtype=torch.bool)], 1)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` (1-D long) of the buffers."""
        self.k = [k.index_select(0, keep) for k in self.k]
        self.v = [v.index_select(0, keep) for v in self.v]
        self.mask = self.mask.index_select(0, keep)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, step: int) -> torch.Tensor:
        """Feed one token per row. tokens (A,), positions (A,) rotary positions, ``step``
        the number of tokens fed before this one. Returns next-token logits (A, V)."""
        t = self.lp + step                                                  # buffer slot of this token
        x = self.model.embed_tokens(tokens[:, None])                        # (A, 1, H)
        cos, sin = self.model.rotary_emb(x, positions[:, None])
        attn_mask = self.mask[:, None, None, : t + 1]                       # (A, 1, 1, t+1) bool
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(h.shape[0], 1, -1, attn.head_dim).transpose(1, 2)   # (A, nh, 1, d)
            k = attn.k_proj(h).view(h.shape[0], 1, -1, attn.head_dim).transpose(1, 2)   # (A, kvh, 1, d)
            v = attn.v_proj(h).view(h.shape[0], 1, -1, attn.head_dim).transpose(1, 2)
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self._rope(q, k, cos, sin)
            self.k[i][:, :, t: t + 1] = k
            self.v[i][:, :, t: t + 1] = v
            o = F.scaled_dot_product_attention(q, self.k[i][:, :, : t + 1], self.v[i][:, :, : t + 1],
                                               attn_mask=attn_mask, scale=attn.scaling,
                                               enable_gqa=q.shape[1] != k.shape[1])
            x = x + attn.o_proj(o.transpose(1, 2).reshape(x.shape[0], 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm.lm_head(self.model.norm(x))[:, 0]
