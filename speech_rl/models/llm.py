"""Causal LM construction: a Qwen2 built from a config (no download), or any local HF model."""
from __future__ import annotations

import torch
from torch import nn

from speech_rl.hf_cache import cache_kwargs, output_cache


def build_causal_lm(vocab_size: int, pretrained_path: str | None = None, hidden_size: int = 128,
                    num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                    intermediate_size: int | None = None, max_positions: int = 1024,
                    tie_word_embeddings: bool = True, attn_implementation: str = "sdpa",
                    whisper_decoder: str | None = None, whisper_cross: str | None = None,
                    full_window: bool = True, gradient_checkpointing: bool = False,
                    attention_dropout: float = 0.0) -> nn.Module:
    """A Hugging Face causal LM that accepts ``inputs_embeds``.

    With ``pretrained_path``, ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``
    (its embeddings are resized to ``vocab_size`` if smaller); with ``whisper_decoder`` (a
    CTranslate2 or HF Whisper folder, or ``pkg:PACKAGE/dir``), Whisper's pretrained text
    decoder as a GPT-2 without cross-attention (``whisper_ct2.whisper_decoder_lm``, positions
    up to ``max_positions``); with ``whisper_cross`` (the same kinds of folder), Whisper's
    decoder *with* its cross-attention over the prompt's audio rows
    (``whisper_xattn.WhisperCrossLM``; ``full_window``: the audio memory is the encoder's whole
    30 s window); otherwise a randomly initialised ``Qwen2ForCausalLM`` of the given size. ``gradient_checkpointing`` recomputes each decoder layer's activations in
    the backward pass (HF's ``gradient_checkpointing_enable``, non-reentrant): less memory
    for the policy update, more compute; ``response_logprobs`` then runs each prompt once
    per response, since HF turns the KV cache off under checkpointing. ``attention_dropout``
    (the Qwen2 built from a config only): dropout on the attention weights in training mode, a
    regulariser for supervised training; RL modules refuse a policy with it (``policy_dropout``).
    """
    if not 0.0 <= attention_dropout < 1.0:
        raise ValueError(f"llm.attention_dropout must be in [0, 1), got {attention_dropout}")
    if attention_dropout and (pretrained_path or whisper_decoder or whisper_cross):
        raise ValueError("llm.attention_dropout applies to the Qwen2 built from a config only "
                         "(not with pretrained_path / whisper_decoder / whisper_cross)")
    if whisper_cross:
        if pretrained_path or whisper_decoder or gradient_checkpointing:
            raise ValueError("llm.whisper_cross: no pretrained_path / whisper_decoder / gradient_checkpointing with it")
        from speech_rl.models.whisper_xattn import whisper_cross_lm

        lm = whisper_cross_lm(whisper_cross, full_window=full_window)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            raise ValueError(f"llm.whisper_cross {whisper_cross}: {lm.get_input_embeddings().num_embeddings} "
                             f"embeddings < the tokenizer's {vocab_size}: use its own WhisperTextTokenizer")
        return lm
    lm = _build_causal_lm(vocab_size, pretrained_path, hidden_size, num_layers, num_heads, num_kv_heads,
                          intermediate_size, max_positions, tie_word_embeddings, attn_implementation, whisper_decoder,
                          attention_dropout)
    if gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return lm


def _build_causal_lm(vocab_size, pretrained_path, hidden_size, num_layers, num_heads, num_kv_heads,
                     intermediate_size, max_positions, tie_word_embeddings, attn_implementation,
                     whisper_decoder, attention_dropout) -> nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if pretrained_path and whisper_decoder:
        raise ValueError("llm: give pretrained_path or whisper_decoder, not both")
    if whisper_decoder:
        from speech_rl.models.whisper_ct2 import whisper_decoder_lm

        lm = whisper_decoder_lm(whisper_decoder, max_positions=max_positions, attn_implementation=attn_implementation)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            raise ValueError(f"llm.whisper_decoder {whisper_decoder}: {lm.get_input_embeddings().num_embeddings} "
                             f"embeddings < the tokenizer's {vocab_size}: use its own WhisperTextTokenizer")
        return lm
    if pretrained_path:
        lm = AutoModelForCausalLM.from_pretrained(pretrained_path, local_files_only=True,
                                                  attn_implementation=attn_implementation)
        if lm.get_input_embeddings().num_embeddings < vocab_size:
            lm.resize_token_embeddings(vocab_size)
        return lm
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                      intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=max_positions,
                      tie_word_embeddings=tie_word_embeddings, use_cache=True,
                      attention_dropout=float(attention_dropout))
    cfg._attn_implementation = attn_implementation
    return Qwen2ForCausalLM(cfg)


DROPOUT_KEYS = ("attention_dropout", "dropout", "activation_dropout", "hidden_dropout", "resid_pdrop",
                "embd_pdrop", "attn_pdrop")   # HF config fields that turn dropout on in training mode


def policy_dropout(lm: nn.Module) -> list[str]:
    """The dropout of a causal LM that is active in training mode: ``name=p`` for its HF
    config's dropout fields (``DROPOUT_KEYS``) and every ``nn.Dropout`` with p > 0 (empty:
    none). An RL policy must have none: the engine samples without dropout and the update
    re-scores with it, so the importance ratio of eq. 4 would not be 1 at the first step.

    >>> policy_dropout(build_causal_lm(16, hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1))
    []
    """
    cfg = getattr(lm, "config", None)
    found = [f"{k}={getattr(cfg, k)}" for k in DROPOUT_KEYS if isinstance(getattr(cfg, k, None), float)
             and getattr(cfg, k) > 0]
    found += [f"{name}={m.p}" for name, m in lm.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]
    return found


def response_logprobs(llm: nn.Module, prompt: torch.Tensor, prompt_mask: torch.Tensor, resp_ids: torch.Tensor,
                      resp_mask: torch.Tensor, temperature: float = 1.0,
                      with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of response tokens under a causal LM, after prompt embeddings.

    Args: prompt (B, Lp, H) left padded, prompt_mask (B, Lp), resp_ids (N, T), resp_mask
    (N, T) with N = B*G: the G responses of prompt b are rows b*G .. b*G+G-1. With G > 1
    each prompt is run once and its KV cache (with its autograd graph) is shared by its
    G responses, instead of running the prompt G times; temperature divides the logits
    as in sampling.
    Returns logp (N, T) float32 and, if asked, the entropy of each step's distribution
    (N, T); padding positions are 0.
    """
    b, n, t = prompt.shape[0], resp_ids.shape[0], resp_ids.shape[1]
    if n % b:
        raise ValueError(f"{n} responses do not split into groups over {b} prompts")
    g = n // b
    if g > 1 and torch.is_grad_enabled() and checkpointing(llm):      # no KV cache under checkpointing
        prompt, prompt_mask, g = prompt.repeat_interleave(g, 0), prompt_mask.repeat_interleave(g, 0), 1
    if g == 1:
        emb = llm.get_input_embeddings()(resp_ids)
        inputs = torch.cat([prompt, emb.to(prompt.dtype)], dim=1)
        mask = torch.cat([prompt_mask, torch.ones_like(resp_mask, dtype=prompt_mask.dtype)], dim=1)
        logits = llm(inputs_embeds=inputs, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                     use_cache=False, logits_to_keep=t + 1).logits[:, :t]                  # (N, T, V)
    else:
        pos = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        pre = llm(inputs_embeds=prompt, attention_mask=prompt_mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        logits = pre.logits.repeat_interleave(g, 0)                                       # (N, 1, V): token 0
        if t > 1:
            cache = output_cache(pre)
            cache.batch_repeat_interleave(g)
            emb = llm.get_input_embeddings()(resp_ids[:, :-1]).to(prompt.dtype)
            pmask = prompt_mask.repeat_interleave(g, 0)
            mask = torch.cat([pmask, pmask.new_ones(n, t - 1)], dim=1)
            rpos = pmask.sum(1, keepdim=True) + torch.arange(t - 1, device=pmask.device)
            rest = llm(inputs_embeds=emb, attention_mask=mask, position_ids=rpos, **cache_kwargs(llm, cache),
                       use_cache=True).logits                                             # (N, T-1, V)
            logits = torch.cat([logits, rest], dim=1)
    logits = logits.float() / (temperature if temperature > 0 else 1.0)
    logsm = torch.log_softmax(logits, dim=-1)
    logp = logsm.gather(-1, resp_ids.unsqueeze(-1)).squeeze(-1) * resp_mask
    ent = None
    if with_entropy:
        ent = -(logsm.exp() * logsm).sum(-1) * resp_mask
    return logp, ent


def checkpointing(llm: nn.Module) -> bool:
    """True when HF gradient checkpointing is on in ``llm`` (it sets ``gradient_checkpointing``
    on the modules it wraps) and the model is training."""
    return llm.training and any(getattr(m, "gradient_checkpointing", False) is True for m in llm.modules())
