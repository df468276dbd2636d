"""CPU/GPU default rollout engine: batched sampling with a KV cache, in torch."""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from speech_rl.engines.base import Rollout, SamplingParams


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) tokens outside top-k / the top-p nucleus. logits (N, V) -> (N, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) > top_p      # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    return logits


class TorchEngine:
    """Holds its own copy of the causal LM (as SGLang would) and samples from prompt
    embeddings. Each prompt is prefilled once; its KV cache is repeated for the G
    samples of its group; decoding is batched over all B*G rows and stops when every
    row has emitted EOS or ``max_new_tokens`` is reached.

    Args:
        lm: the policy's causal LM; it is deep-copied (weights are synced by
            ``update_weights``).
        eos_id / pad_id: token ids.
        seed: seed of the engine's own sampling generator (its state is checkpointed).
    """

    name = "torch"

    def __init__(self, lm: nn.Module, eos_id: int, pad_id: int, seed: int = 0, device: str | torch.device = "cpu"):
        self.lm = copy.deepcopy(lm).eval().requires_grad_(False).to(device)
        self.eos_id, self.pad_id = eos_id, pad_id
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._params = dict(self.lm.named_parameters())

    # ---- contract ------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        b, _, _ = prompt_embeds.shape
        g = group_size
        lm = self.lm
        emb = prompt_embeds.to(self.device, dtype=next(lm.parameters()).dtype)
        mask = prompt_mask.to(self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        if g > 1:
            cache.batch_repeat_interleave(g)
        logits = out.logits[:, -1].float().repeat_interleave(g, 0)               # (N, V)
        attn = mask.repeat_interleave(g, 0)
        next_pos = mask.sum(1).repeat_interleave(g, 0)                            # (N,)
        n = b * g
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        toks, lps = [], []
        for step in range(params.max_new_tokens):
            tok, lp = self._sample(logits, params)
            tok = tok.masked_fill(finished, self.pad_id)
            lps.append(lp.masked_fill(finished, 0.0))
            toks.append(tok)
            finished = finished | (tok == self.eos_id)
            if bool(finished.all()) or step == params.max_new_tokens - 1:
                break
            attn = torch.cat([attn, attn.new_ones(n, 1)], dim=1)
            out = lm(input_ids=tok.unsqueeze(1), attention_mask=attn, position_ids=next_pos.unsqueeze(1),
                     past_key_values=cache, use_cache=True)
            next_pos = next_pos + 1
            logits = out.logits[:, -1].float()
        tokens = torch.stack(toks, 1)
        logprobs = torch.stack(lps, 1)
        is_eos = tokens == self.eos_id
        # a token belongs to the response if no EOS came strictly before it
        before = torch.cumsum(is_eos.long(), 1) - is_eos.long()
        resp_mask = (before == 0).float()
        tokens = tokens.masked_fill(resp_mask == 0, self.pad_id)
        return Rollout(tokens.cpu(), (logprobs * resp_mask).cpu(), resp_mask.cpu(), finished.cpu(), g)

    def _sample(self, logits: torch.Tensor, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (N, V) -> sampled token (N,), its log-prob under softmax(logits / T) (N,)."""
        if p.temperature == 0:
            logsm = torch.log_softmax(logits, -1)
            tok = logits.argmax(-1)
            return tok, logsm.gather(1, tok[:, None]).squeeze(1)
        scaled = logits / p.temperature
        logsm = torch.log_softmax(scaled, -1)
        filt = filter_logits(scaled, p.top_k, p.top_p)
        probs = torch.softmax(filt, -1)
        tok = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        return tok, logsm.gather(1, tok[:, None]).squeeze(1)

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        seen = set()
        for name, t in named_tensors:
            if name not in self._params:
                raise KeyError(f"engine has no parameter {name!r}; the policy and engine models differ")
            dst = self._params[name]
            if dst.shape != t.shape:
                raise ValueError(f"parameter {name!r}: engine shape {tuple(dst.shape)} vs update {tuple(t.shape)}")
            dst.copy_(t.to(dst.device, dst.dtype), non_blocking=True)
            seen.add(name)
        missing = set(self._params) - seen
        if missing:
            raise ValueError(f"update_weights left {len(missing)} parameters stale, e.g. {sorted(missing)[:3]}")

    def release(self) -> None:
        if self.device.type != "cpu":
            self.lm.to("cpu")
            torch.cuda.empty_cache()

    def resume(self) -> None:
        if self.device.type != "cpu":
            self.lm.to(self.device)

    def to(self, device) -> "TorchEngine":
        self.device = torch.device(device)
        self.lm.to(self.device)
        return self

    # ---- checkpointing ----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
