"""SGLang rollout engine (CUDA only; ``pip install speech-rl[gpu]``). **Never run here**
(no CUDA on the development machines): written against SGLang 0.5.23's source and tested
by the engine contract suite and the device script when a GPU is lent.

What SGLang exposes, read in its source (0.5.23):

- ``sglang.Engine.generate`` takes prompt / input_ids / image, audio, video data ... but **no
  ``input_embeds``**. The request type ``sglang.srt.managers.io_struct.GenerateReqInput``
  does carry ``input_embeds`` (nested float lists; a batch is a list of (L, H) lists; the
  radix cache must be off). ``Engine.generate`` itself builds a ``GenerateReqInput`` and
  runs ``engine.tokenizer_manager.generate_request(obj, None)`` on ``engine.loop``; this
  engine sends its embedding requests the same way (``build_request`` + ``_run``).
- G samples: one request per sample, prompt-major (``n=G`` would expand the batch
  sample-major, and with the radix cache off it shares no prefill anyway).
- weights: ``update_weights_from_tensor(named_tensors, flush_cache=...)`` in size-bounded
  buckets, the cache flushed after the last; memory: ``release_memory_occupation`` /
  ``resume_memory_occupation(tags=[...])`` with ``enable_memory_saver``.

SGLang bugs users hit in RL loops, and what this engine does about them:

- ``release_memory_occupation`` can return before the memory is free (an OOM in the policy
  step right after it): the hand-off callback logs device memory after each release, so it
  shows; call ``torch.cuda.synchronize()`` there if it bites.
- output garbled after pause + bucketed ``update_weights_from_tensor`` (sglang #15246,
  #14178): this engine never pauses generation (it syncs between rollouts only) and flushes
  the cache with the last bucket.
- ``input_embeds`` with sessions (sglang #40728): no sessions are used.
- no per-request sampling seed is passed, so a resumed run does not redraw the same
  samples (``state_dict`` is empty: resume is exact for the policy, not for SGLang's draws).
"""
from __future__ import annotations

import tempfile
from typing import Iterable

import torch
from torch import nn

from speech_rl.engines.base import Rollout, SamplingParams, write_hf_folder


def buckets(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterable[list[tuple[str, torch.Tensor]]]:
    """Group (name, tensor) pairs into lists of at most ``bucket_bytes`` (a tensor larger
    than the bound gets a bucket of its own).

    >>> [len(b) for b in buckets([(str(i), torch.zeros(256)) for i in range(5)], 2048)]
    [2, 2, 1]
    """
    cur, size = [], 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if cur and size + nbytes > bucket_bytes:
            yield cur
            cur, size = [], 0
        cur.append((name, t))
        size += nbytes
    if cur:
        yield cur


def request_embeds(prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int) -> list:
    """(B, L, H) left-padded prompts + (B, L) mask -> B*G unpadded (L_b, H) nested float
    lists, the G copies of a prompt consecutive (``GenerateReqInput.input_embeds``)."""
    out = []
    for i in range(prompt_embeds.shape[0]):
        e = prompt_embeds[i, prompt_mask[i].bool()].float().cpu().tolist()
        out.extend([e] * group_size)
    return out


def sglang_sampling_params(params: SamplingParams, eos_id: int) -> dict:
    """speech-rl's SamplingParams as SGLang's sampling-params dict (top_k -1: off)."""
    return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "top_k": params.top_k if params.top_k > 0 else -1, "stop_token_ids": [eos_id],
            "skip_special_tokens": False}


class SGLangEngine:
    """Rollouts with SGLang's offline engine.

    Args:
        lm: the policy causal LM; saved once with ``save_pretrained`` so SGLang can
            load its architecture (weights are then pushed by ``update_weights``).
        eos_id / pad_id: token ids; seed: SGLang's random seed.
        mem_fraction_static: GPU memory share for weights + KV cache.
        bucket_mb: size bound of one ``update_weights_from_tensor`` call.
        engine_kwargs: passed to ``sglang.Engine`` (e.g. ``tp_size``, ``dtype``).
    """

    name = "sglang"

    def __init__(self, lm: nn.Module, eos_id: int, pad_id: int, seed: int = 0, mem_fraction_static: float = 0.4,
                 bucket_mb: int = 512, dtype: str = "bfloat16", model_dir: str | None = None, **engine_kwargs):
        if not torch.cuda.is_available():
            raise RuntimeError("rollout engine 'sglang' needs a CUDA GPU; use rollout.engine=torch on CPU")
        try:
            import sglang
        except ImportError as exc:
            raise RuntimeError("rollout engine 'sglang' needs the gpu extra: pip install 'speech-rl[gpu]'") from exc
        self._tmp = None
        if model_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="speech_rl_sglang_")
            model_dir = self._tmp.name
            write_hf_folder(lm, model_dir)        # on every rank (save_pretrained writes on rank 0 only)
        self.eos_id, self.pad_id = eos_id, pad_id
        self.bucket_bytes = bucket_mb * 2**20
        self.engine = sglang.Engine(model_path=model_dir, skip_tokenizer_init=True, disable_radix_cache=True,
                                    enable_memory_saver=True, random_seed=seed,
                                    mem_fraction_static=mem_fraction_static, dtype=dtype, **engine_kwargs)
        self.released = False
        self.device = torch.device("cuda")          # the hand-off callback releases / resumes it

    def build_request(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                      params: SamplingParams):
        """The ``GenerateReqInput`` of one rollout: B*G embedding prompts, prompt-major."""
        from sglang.srt.managers.io_struct import GenerateReqInput

        return GenerateReqInput(input_embeds=request_embeds(prompt_embeds, prompt_mask, group_size),
                                sampling_params=sglang_sampling_params(params, self.eos_id), return_logprob=True)

    def _run(self, obj) -> list[dict]:
        """What ``sglang.Engine.generate`` does with its request object."""
        out = self.engine.loop.run_until_complete(self.engine.tokenizer_manager.generate_request(obj, None).__anext__())
        return out if isinstance(out, list) else [out]

    def generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        outs = self._run(self.build_request(prompt_embeds, prompt_mask, group_size, params))
        n, t = len(outs), max(1, max(len(o["output_ids"]) for o in outs))
        tokens = torch.full((n, t), self.pad_id, dtype=torch.long)
        logprobs = torch.zeros(n, t)
        mask = torch.zeros(n, t)
        finished = torch.zeros(n, dtype=torch.bool)
        for i, o in enumerate(outs):
            ids = o["output_ids"]
            lps = [float(x[0]) for x in o["meta_info"]["output_token_logprobs"]]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            logprobs[i, : len(lps)] = torch.tensor(lps)
            mask[i, : len(ids)] = 1
            finished[i] = bool(ids) and ids[-1] == self.eos_id
        return Rollout(tokens, logprobs, mask, finished, group_size)

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        pending = list(buckets(named_tensors, self.bucket_bytes))
        for k, bucket in enumerate(pending):
            self.engine.update_weights_from_tensor([(n, t.detach().cuda()) for n, t in bucket],
                                                   flush_cache=k == len(pending) - 1)

    def release(self) -> None:
        if not self.released:
            self.engine.flush_cache()
            self.engine.release_memory_occupation()
            self.released = True

    def resume(self) -> None:
        if self.released:
            # weights first, then the KV cache: the cache pool is sized after the weights
            self.engine.resume_memory_occupation(tags=["weights"])
            self.engine.resume_memory_occupation(tags=["kv_cache"])
            self.released = False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def shutdown(self) -> None:
        self.engine.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()
