"""The rollout-engine contract (DESIGN.md) and its typed containers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` is greedy decoding."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0              # 0: no top-k filter

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Rollout:
    """G samples for each of B prompts, N = B*G rows; the G rows of a prompt are consecutive."""

    tokens: torch.Tensor        # (N, T) long, padded with pad_id after EOS
    logprobs: torch.Tensor      # (N, T) float32, log-prob of each sampled token under the
                                #        temperature-scaled, unfiltered distribution; 0 on padding
    mask: torch.Tensor          # (N, T) float32, 1 for response tokens (EOS included)
    finished: torch.Tensor      # (N,) bool, emitted EOS before max_new_tokens
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) response lengths in tokens (EOS included)."""
        return self.mask.sum(1).long()

    def response_ids(self) -> list[list[int]]:
        """Each row's sampled tokens as a list, EOS and padding removed (N lists)."""
        n_resp = self.lengths - self.finished.long()
        return [row[: int(k)].tolist() for row, k in zip(self.tokens, n_resp)]

    def __post_init__(self):
        n, t = self.tokens.shape
        assert self.logprobs.shape == (n, t) and self.mask.shape == (n, t), \
            f"rollout shapes disagree: tokens {tuple(self.tokens.shape)}, logprobs {tuple(self.logprobs.shape)}, " \
            f"mask {tuple(self.mask.shape)}"
        assert self.finished.shape == (n,) and n % self.group_size == 0, \
            f"finished {tuple(self.finished.shape)} / group_size {self.group_size} do not fit N={n}"


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates from prompt embeddings, takes new weights, gives its memory back."""

    def generate(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 params: SamplingParams) -> Rollout:
        """prompt_embeds (B, L, H) left padded, prompt_mask (B, L) -> Rollout of B*group_size rows."""

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (unsharded) policy weights by parameter name."""

    def release(self) -> None:
        """Free the engine's device memory (weights and KV cache) between rollouts."""

    def resume(self) -> None:
        """Take device memory back (weights first, then cache) before the next rollout."""


class EngineError(RuntimeError):
    """A rollout engine failed (its process died, it ran out of memory, it raised)."""


class GuardedEngine:
    """Wraps a rollout engine so that any failure of a contract call comes out as an
    ``EngineError`` naming the engine, the call and where the run was (``where()``, e.g.
    "step 12"), with the original exception chained. Other attributes pass through."""

    _CALLS = ("generate", "update_weights", "release", "resume")

    def __init__(self, engine, where=lambda: "?"):
        self._engine, self._where = engine, where

    @property
    def inner(self):
        return self._engine

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_engine", "_where"):      # copy / pickle before __init__
            raise AttributeError(name)
        attr = getattr(self._engine, name)
        if name not in self._CALLS:
            return attr

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"rollout engine {type(self._engine).__name__}.{name} failed at {self._where()}: "
                                  f"{type(exc).__name__}: {exc}. Nothing was written for this step; the last "
                                  "checkpoint is intact (resume=auto continues from it)") from exc
        return call


def full_named_parameters(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) of every parameter; FSDP2-sharded (DTensor) parameters are
    all-gathered, so every rank must iterate this together."""
    for name, p in module.named_parameters():
        t = p.data
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        yield name, t.detach()


def write_hf_folder(lm: nn.Module, folder: str | Path) -> None:
    """``lm``'s ``config.json`` and ``model.safetensors`` in ``folder``, written by this process
    whatever its rank: the folder a vLLM / SGLang engine loads its copy from.

    Not ``save_pretrained``: once a torch.distributed group exists, transformers 5.x writes
    files on rank 0 only (``should_save_on_this_rank``), so under DDP / FSDP the other ranks'
    engines found an empty folder. Tied tensors are stored once (the later name, e.g.
    ``lm_head.weight`` tied to the embeddings, is dropped, as ``save_pretrained`` does;
    the config's ``tie_word_embeddings`` restores it); ``architectures`` names the model's
    class (an LM split out of an audio LLM carries its family's); DTensor values are gathered,
    so under FSDP2 every rank must call this together."""
    from safetensors.torch import save_file

    import copy

    from speech_rl.hf_cache import hf_model

    folder = Path(folder)
    config = copy.deepcopy(lm.config)
    config.architectures = [type(hf_model(lm)).__name__]      # as save_pretrained sets it: vLLM picks its class by it
    config.save_pretrained(folder)
    state, seen = {}, set()
    for name, t in lm.state_dict().items():
        t = t.full_tensor() if hasattr(t, "full_tensor") else t
        key = (t.data_ptr(), t.shape, t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = t.detach().cpu().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
