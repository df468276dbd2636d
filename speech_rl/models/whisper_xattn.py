"""Whisper's text decoder *with its cross-attention* as the causal LM of an AudioLLM.

speech-rl hands every LM one prompt of embeddings, ``[prefix | audio | suffix]``, and the
engines sample from it. Whisper's decoder was trained to hear the audio through
cross-attention, not as prompt rows (fed as prompt rows it must be re-taught to read them:
docs/results/asr_open.md, third run). ``WhisperCrossLM`` keeps the contract and the
pretrained behaviour: its embeddings carry one extra channel, 0 on text rows (its own
token embeddings) and 1 on audio rows (``AudioMemory``, the projector); in a forward it
splits the prompt by that channel, the audio rows become the cross-attention memory and
the text rows the decoder's input (positions counted over text rows only, as Whisper's
learned positions are). With Whisper's tokenizer the decoder then sees exactly what
Whisper sees: ``<|startoftranscript|> <|notimestamps|> text`` over the encoder's states.

The maths is Whisper's (``WhisperDecoderLayer``: pre-LN self-attention, pre-LN
cross-attention, pre-LN GELU MLP, final LN, head tied to the embeddings), run on the HF
modules' own parameters with ``scaled_dot_product_attention`` and a KV cache of its own
(``CrossCache``) that the torch engine and ``response_logprobs`` use like HF's
(``batch_repeat_interleave``, ``batch_select_indices``). Logits equal
``WhisperForConditionalGeneration``'s (tested). vLLM / SGLang cannot serve it (they take
decoder-only LMs from prompt embeddings): use ``rollout=torch``.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


class TextRowEmbedding(nn.Module):
    """Token ids (...,) -> the decoder's token embeddings with a 0 flag channel (..., D + 1)."""

    def __init__(self, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.num_embeddings, self.embedding_dim = embed_tokens.num_embeddings, embed_tokens.embedding_dim + 1

    @property
    def weight(self) -> torch.Tensor:
        return self.embed_tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed_tokens(ids)
        return torch.cat([e, e.new_zeros(*e.shape[:-1], 1)], -1)


class AudioMemory(nn.Module):
    """The projector of a ``WhisperCrossLM``: encoder frames become audio rows (flag 1).

    No parameters: Whisper's decoder reads its encoder's states as they are. ``full_window``
    (for ``window: pad`` encoders) keeps all of the encoder's frames, the padded 30 s window
    Whisper was trained on (its lengths are then the window's); otherwise frames past each
    utterance's length are dropped.
    forward: x (B, T, D), lengths (B,) -> (B, T, D + 1), lengths (B,).
    """

    def __init__(self, enc_dim: int, d_model: int, full_window: bool = True):
        super().__init__()
        if enc_dim != d_model:
            raise ValueError(f"WhisperCrossLM reads encoder states of its own width {d_model}; the encoder gives "
                             f"{enc_dim} (use the same Whisper checkpoint for encoder and decoder)")
        self.full_window = bool(full_window)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full_window:
            lengths = torch.full_like(lengths, x.shape[1])
        return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1), lengths


@dataclass
class CrossCache:
    """KV cache of a ``WhisperCrossLM`` over A rows. Per layer: self-attention keys / values
    (A, heads, Lt, d) of the text rows so far, cross-attention keys / values (A, heads, M, d)
    of the audio memory; ``text_mask`` (A, Lt) / ``memory_mask`` (A, M) bool (True: a real
    row); ``next_pos`` (A,) the next text position."""

    self_k: list[torch.Tensor]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]
    cross_v: list[torch.Tensor]
    text_mask: torch.Tensor
    memory_mask: torch.Tensor
    next_pos: torch.Tensor

    def _apply(self, fn) -> None:
        for name in ("self_k", "self_v", "cross_k", "cross_v"):
            setattr(self, name, [fn(t) for t in getattr(self, name)])
        self.text_mask, self.memory_mask, self.next_pos = fn(self.text_mask), fn(self.memory_mask), fn(self.next_pos)

    def batch_repeat_interleave(self, g: int) -> None:
        self._apply(lambda t: t.repeat_interleave(g, 0))

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        self._apply(lambda t: t[idx])

    def get_seq_length(self) -> int:
        return int(self.text_mask.shape[1])


def _packed(x: torch.Tensor, keep: torch.Tensor, right: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x (B, L, D) where keep (B, L), in order, packed to (B, K, D) with mask (B, K),
    K = max kept; right-aligned (left padding) when ``right``, else left-aligned."""
    n = keep.sum(1)
    k = int(n.max())
    order = torch.argsort(keep.int(), dim=1, stable=True, descending=not right)   # kept rows last (right) / first
    idx = order[:, -k:] if right else order[:, :k]
    ar = torch.arange(k, device=x.device)[None]
    mask = ar >= (k - n)[:, None] if right else ar < n[:, None]
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])) * mask[..., None].to(x.dtype), mask


class WhisperCrossLM(nn.Module):
    """Whisper's decoder (``WhisperDecoder``) + its tied output head, fed like a causal LM.

    forward(inputs_embeds (B, L, D + 1) | input_ids (B, L), attention_mask (B, L),
    past_key_values: CrossCache | None, use_cache, logits_to_keep) -> ``.logits``
    (B, k, V) for the last k = ``logits_to_keep`` positions (which must be text rows),
    ``.past_key_values``. Without a cache the input is a whole prompt (audio and text rows,
    left padded); with one, only text rows (the new tokens) that continue every row.
    ``position_ids`` are ignored: positions count text rows (the cache keeps them).
    """

    rollout_engines = ("torch",)      # build_engine refuses the others by name

    def __init__(self, decoder: nn.Module, proj_out: nn.Linear, config, full_window: bool = True):
        super().__init__()
        self.decoder, self.proj_out, self.config = decoder, proj_out, config
        self.full_window = full_window
        self.d_model, self.heads = config.d_model, config.decoder_attention_heads
        self.embed = TextRowEmbedding(decoder.embed_tokens)

    def get_input_embeddings(self) -> TextRowEmbedding:
        return self.embed

    def get_output_embeddings(self) -> nn.Linear:
        return self.proj_out

    def audio_projector(self, enc_dim: int, **kwargs) -> AudioMemory:
        if kwargs:
            raise ValueError(f"model.projector {sorted(kwargs)}: a WhisperCrossLM's projector (AudioMemory) takes none")
        return AudioMemory(enc_dim, self.d_model, self.full_window)

    # ---- attention ----------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def _attend(self, attn: nn.Module, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Queries from q_in (A, s, D) over keys / values (A, h, Lk, d) where mask (A, s, Lk)."""
        q = self._heads(attn.q_proj(q_in))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return attn.out_proj(out.transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1))

    def _layers(self, h: torch.Tensor, cache: CrossCache, new_mask: torch.Tensor) -> torch.Tensor:
        """Text rows h (A, s, D) whose validity is new_mask (A, s), appended to ``cache``."""
        a, s = new_mask.shape
        old = cache.text_mask
        keys = torch.cat([old, new_mask], 1)                                       # (A, Lt + s)
        lt = old.shape[1]
        causal = torch.ones(s, lt + s, dtype=torch.bool, device=h.device).tril(lt)
        self_mask = causal[None] & keys[:, None]
        ar = torch.arange(lt + s, device=h.device)
        self_mask |= (ar[None, lt:, None] == ar[None, None, :])                    # padded rows see themselves
        cross_mask = cache.memory_mask[:, None].expand(a, s, -1)
        p = self.decoder.dropout if self.training else 0.0
        for i, layer in enumerate(self.decoder.layers):
            x = layer.self_attn_layer_norm(h)
            sa = layer.self_attn
            cache.self_k[i] = torch.cat([cache.self_k[i], self._heads(sa.k_proj(x))], 2)
            cache.self_v[i] = torch.cat([cache.self_v[i], self._heads(sa.v_proj(x))], 2)
            h = h + F.dropout(self._attend(sa, x, cache.self_k[i], cache.self_v[i], self_mask), p, self.training)
            x = layer.encoder_attn_layer_norm(h)
            h = h + F.dropout(self._attend(layer.encoder_attn, x, cache.cross_k[i], cache.cross_v[i], cross_mask),
                              p, self.training)
            x = layer.final_layer_norm(h)
            x = F.dropout(layer.activation_fn(layer.fc1(x)), layer.activation_dropout, self.training)
            h = h + F.dropout(layer.fc2(x), p, self.training)
        cache.text_mask = keys
        return self.decoder.layer_norm(h)

    def _new_cache(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> CrossCache:
        a = memory.shape[0]
        empty = memory.new_zeros(a, self.heads, 0, self.d_model // self.heads)
        n = len(self.decoder.layers)
        ks = [self._heads(layer.encoder_attn.k_proj(memory)) for layer in self.decoder.layers]
        vs = [self._heads(layer.encoder_attn.v_proj(memory)) for layer in self.decoder.layers]
        return CrossCache([empty] * n, [empty] * n, ks, vs, memory_mask.new_zeros(a, 0), memory_mask,
                          torch.zeros(a, dtype=torch.long, device=memory.device))

    # ---- forward ------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                past_key_values: CrossCache | None = None, use_cache: bool = False, logits_to_keep: int = 0,
                **_unused):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("WhisperCrossLM: give input_ids or inputs_embeds, not both / neither")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        if x.shape[-1] != self.d_model + 1:
            raise ValueError(f"WhisperCrossLM: inputs of width {x.shape[-1]}, expected {self.d_model + 1} "
                             "(d_model + the audio flag channel)")
        flag = x[..., -1] > 0.5
        valid = torch.ones(flag.shape, dtype=torch.bool, device=x.device) if attention_mask is None \
            else attention_mask.bool()
        cache = past_key_values
        if cache is None:
            audio = flag & valid
            if not bool(audio.any(1).all()):
                raise ValueError("WhisperCrossLM: a prompt without audio rows (its cross-attention would be empty)")
            memory, memory_mask = _packed(x[..., :-1], audio, right=False)
            text, text_mask = _packed(x[..., :-1], valid & ~flag, right=True)
            cache = self._new_cache(memory, memory_mask)
            full_text = (valid & ~flag)[:, x.shape[1] - logits_to_keep:] if logits_to_keep else valid & ~flag
            if not logits_to_keep or not bool(full_text.all()):
                raise ValueError("WhisperCrossLM: logits_to_keep must be > 0 and cover text rows only "
                                 "(the last positions of a prompt or prompt + response)")
        else:
            if bool(flag.any()):
                raise ValueError("WhisperCrossLM: audio rows after the prompt (a cached forward takes new tokens)")
            text, text_mask = x[..., :-1], torch.ones(flag.shape, dtype=torch.bool, device=x.device)
        pos = cache.next_pos[:, None] + (text_mask.cumsum(1) - 1).clamp(min=0)
        if int(pos.max()) >= self.decoder.embed_positions.weight.shape[0]:
            raise ValueError(f"WhisperCrossLM: text position {int(pos.max())} past Whisper's "
                             f"{self.decoder.embed_positions.weight.shape[0]} learned positions")
        h = text + self.decoder.embed_positions.weight[pos] * text_mask[..., None].to(text.dtype)
        h = F.dropout(h, self.decoder.dropout if self.training else 0.0, self.training)
        h = self._layers(h, cache, text_mask)
        cache.next_pos = cache.next_pos + text_mask.sum(1)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return SimpleNamespace(logits=self.proj_out(h), past_key_values=cache if use_cache else None)


def whisper_cross_lm(path: str, full_window: bool = True) -> WhisperCrossLM:
    """Whisper's decoder with cross-attention from a CTranslate2 or HF Whisper folder
    (``pkg:PACKAGE/dir`` allowed; ``whisper_ct2.load_whisper_model``), float32."""
    from speech_rl.models.whisper_ct2 import load_whisper_model

    w = load_whisper_model(path)
    return WhisperCrossLM(w.model.decoder, w.proj_out, w.config, full_window=full_window).train()
