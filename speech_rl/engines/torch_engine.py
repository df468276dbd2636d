"""CPU/GPU default rollout engine: batched sampling with a KV cache, in torch."""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from speech_rl.engines.base import Rollout, SamplingParams
from speech_rl.engines.static_decode import StaticDecoder, unsupported_reason
from speech_rl.hf_cache import cache_kwargs, output_cache


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


def sample_inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exact categorical sampling from ``probs`` (N, V) with one uniform draw per row
    ``u`` (N,) in [0, 1): the first token whose cumulative probability exceeds
    ``u * total``. A row's token depends only on its own ``u``, not on which other rows
    are in the batch. Returns (N,) long.

    >>> sample_inverse_cdf(torch.tensor([[0.0, 0.5, 0.0, 0.5]]), torch.tensor([0.0])).item()
    1
    >>> sample_inverse_cdf(torch.tensor([[0.0, 0.5, 0.0, 0.5]]), torch.tensor([0.6])).item()
    3
    >>> sample_inverse_cdf(torch.tensor([[0.3, 0.7, 0.0, 0.0]]), torch.tensor([1.0])).item()   # rounding guard
    1
    """
    cdf = probs.cumsum(-1)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    tok = tok.clamp_(max=probs.shape[-1] - 1)
    zero = probs.gather(1, tok[:, None]).squeeze(1) == 0          # rounding landed past the last non-zero token
    if bool(zero.any()):
        last = probs.shape[-1] - 1 - (probs[zero].flip(-1) > 0).int().argmax(-1)
        tok[zero] = last
    return tok


class TorchEngine:
    """Holds its own copy of the causal LM (as SGLang would) and samples from prompt
    embeddings. Each prompt is prefilled once; its KV cache is repeated for the G
    samples of its group; decoding is batched over all B*G rows and stops when every
    row has emitted EOS or ``max_new_tokens`` is reached.

    Finished rows are dropped from the decode batch (their KV cache rows removed) once
    at least ``compact_frac`` of the rows still decoding have finished, so long-tail
    rollouts do not pay for rows that are done. Sampling draws one uniform number per
    row and step from the engine's generator whatever the batch holds, so dropping rows
    (or not: ``drop_finished=false``) gives the same tokens for the same seed.

    Args:
        lm: the policy's causal LM; it is deep-copied (weights are synced by
            ``update_weights``).
        eos_id / pad_id: token ids.
        seed: seed of the engine's own sampling generator (its state is checkpointed).
        drop_finished / compact_frac: see above; ``compact_frac=0`` compacts as soon as
            any row finishes.
        decode: ``static`` runs decode steps with ``StaticDecoder`` (a preallocated KV
            cache, the model's own modules, no Hugging Face per-call bookkeeping), ``hf``
            with the model's forward and ``DynamicCache``; ``auto`` picks ``static``
            when the model supports it.
        compile: ``torch.compile`` the model forward of the ``hf`` decode path.
        dtype: the engine copy's dtype (``bfloat16``, ``float16``, ``float32``; None keeps
            the policy's). Low precision rollouts are what GPU engines do; on a CPU with
            AMX, bf16 matrix products are ~6x faster than fp32 (measured here). Log-probs
            are still computed in float32 from the engine's logits; the policy loss
            re-scores with the policy's own weights.
    """

    name = "torch"

    def __init__(self, lm: nn.Module, eos_id: int, pad_id: int, seed: int = 0, device: str | torch.device = "cpu",
                 drop_finished: bool = True, compact_frac: float = 0.125, decode: str = "auto", compile: bool = False,
                 dtype: str | None = None):
        if not 0 <= compact_frac <= 1:
            raise ValueError(f"compact_frac must be in [0, 1], got {compact_frac}")
        if decode not in ("auto", "static", "hf"):
            raise ValueError(f"decode must be auto, static or hf, got {decode!r}")
        self.lm = copy.deepcopy(lm).eval().requires_grad_(False).to(device)
        if dtype is not None:
            if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
                raise ValueError(f"engine dtype {dtype!r} is not a torch dtype (e.g. bfloat16, float32)")
            self.lm.to(getattr(torch, dtype))
        self.eos_id, self.pad_id = eos_id, pad_id
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.drop_finished, self.compact_frac = bool(drop_finished), float(compact_frac)
        self._params = dict(self.lm.named_parameters())
        self._decode = torch.compile(self.lm, dynamic=True) if compile else self.lm
        why = unsupported_reason(self.lm)
        if decode == "static" and why:
            raise ValueError(f"decode=static cannot run {type(lm).__name__}: {why}")
        self.static = decode == "static" or (decode == "auto" and why is None and not compile)

    # ---- contract ------------------------------------------------------------------
    def generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        """The engine runs in its own dtype, whatever autocast the caller is under."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self._generate(prompt_embeds, prompt_mask, group_size, params)

    def _generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        b, lp_len, _ = prompt_embeds.shape
        g, t_max, dev = group_size, params.max_new_tokens, self.device
        n = b * g
        emb = prompt_embeds.to(dev, dtype=next(self.lm.parameters()).dtype)
        mask = prompt_mask.to(dev)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
        if g > 1:
            cache.batch_repeat_interleave(g)
        logits = out.logits[:, -1].float().repeat_interleave(g, 0)                # (A, V), A rows decoding
        next_pos = mask.sum(1).repeat_interleave(g, 0)                             # (A,)
        dec = attn = None
        if self.static:
            dec = StaticDecoder(self.lm, cache, mask.repeat_interleave(g, 0), t_max)
            cache = None                                                           # the buffer owns the KV now
        else:
            attn = torch.cat([mask.repeat_interleave(g, 0), mask.new_ones(n, t_max)], 1)   # (A, Lp + T), sliced
        rows = torch.arange(n, device=dev)                                         # (A,) row of each cache row
        live = torch.ones(n, dtype=torch.bool, device=dev)                         # (A,) not yet finished
        tokens = torch.full((n, t_max), self.pad_id, dtype=torch.long, device=dev)
        logprobs = torch.zeros(n, t_max, device=dev)
        for step in range(t_max):
            u = torch.rand(n, generator=self.generator, device=dev) if params.temperature > 0 else None
            tok, lp = self._sample(logits, params, None if u is None else u[rows])
            tok = tok.masked_fill(~live, self.pad_id)
            tokens[rows[live], step] = tok[live]
            logprobs[rows[live], step] = lp[live]
            live = live & (tok != self.eos_id)
            if step == t_max - 1 or not bool(live.any()):
                break
            if self.drop_finished and int((~live).sum()) > self.compact_frac * live.numel():
                keep = live.nonzero().squeeze(1)
                if dec:
                    dec.select(keep)
                else:
                    cache.batch_select_indices(keep)
                    attn = attn[keep]
                rows, tok, next_pos, live = rows[keep], tok[keep], next_pos[keep], live[keep]
            if dec:
                logits = dec.step(tok, next_pos, step).float()
            else:
                logits = self._decode(input_ids=tok.unsqueeze(1), attention_mask=attn[:, : lp_len + step + 1],
                                      position_ids=next_pos.unsqueeze(1), **cache_kwargs(self.lm, cache),
                                      use_cache=True).logits[:, -1].float()
            next_pos = next_pos + 1
        length = step + 1
        tokens, logprobs = tokens[:, :length], logprobs[:, :length]
        # a token belongs to the response if no EOS came strictly before it
        is_eos = tokens == self.eos_id
        resp_mask = ((torch.cumsum(is_eos.long(), 1) - is_eos.long()) == 0).float()
        return Rollout(tokens.cpu(), (logprobs * resp_mask).cpu(), resp_mask.cpu(), is_eos.any(1).cpu(), g)

    def _sample(self, logits: torch.Tensor, p: SamplingParams,
                u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (A, V), uniforms u (A,) -> sampled token (A,) and its log-prob under
        softmax(logits / T) (A,); greedy (u unused) when T = 0."""
        if p.temperature == 0:
            logsm = torch.log_softmax(logits, -1)
            tok = logits.argmax(-1)
            return tok, logsm.gather(1, tok[:, None]).squeeze(1)
        scaled = logits / p.temperature
        logsm = torch.log_softmax(scaled, -1)
        tok = sample_inverse_cdf(torch.softmax(filter_logits(scaled, p.top_k, p.top_p), -1), u)
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
