"""Causal LM construction: a Qwen2 built from a config (no download), or any local HF model."""
from __future__ import annotations

from torch import nn


def build_causal_lm(vocab_size: int, pretrained_path: str | None = None, hidden_size: int = 128,
                    num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                    intermediate_size: int | None = None, max_positions: int = 1024,
                    tie_word_embeddings: bool = True, attn_implementation: str = "sdpa") -> nn.Module:
    """A Hugging Face causal LM that accepts ``inputs_embeds``.

    With ``pretrained_path``, ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``
    (its embeddings are resized to ``vocab_size`` if smaller); otherwise a randomly
    initialised ``Qwen2ForCausalLM`` of the given size.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if pretrained_path:
        lm = AutoModelForCausalLM.from_pretrained(pretrained_path, local_files_only=True,
                                                  attn_implementation=attn_implementation)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            lm.resize_token_embeddings(vocab_size)
        return lm
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                      intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=max_positions,
                      tie_word_embeddings=tie_word_embeddings, use_cache=True)
    cfg._attn_implementation = attn_implementation
    return Qwen2ForCausalLM(cfg)
