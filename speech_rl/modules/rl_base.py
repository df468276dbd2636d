"""What every RL module shares: manual optimisation with numerical guards, the
frozen reference, the rollout engine and its on-policy weight sync, FSDP2 sharding,
checkpoint hooks for the engine's state."""
from __future__ import annotations

import copy
import functools
import logging
import math
from typing import Any, Callable, Iterator

import lightning as L
import torch
from torch import nn

from rewards.combine import RewardTimeout
from speech_rl.algorithms import AlgorithmConfig, grpo_loss
from speech_rl.callbacks.phases import run_phase
from speech_rl.engines import SamplingParams, build_engine
from speech_rl.config_files import require_keys
from speech_rl.engines.base import GuardedEngine, full_named_parameters
from speech_rl.models.llm import policy_dropout
from speech_rl.models.lora import (AdaptersOff, base_is_rebuilt, fill_frozen, frozen_base_names, is_lora, merged_copy,
                                   merged_named_parameters)
from speech_rl.modules.optim import RL_KEYS, adamw_warmup_cosine, require_optim_keys

log = logging.getLogger(__name__)


def skip_on_reward_timeout(training_step):
    """Decorator for an RL module's ``training_step``: a ``RewardTimeout`` with
    ``reward.on_timeout=skip`` skips the batch (no optimiser step, no weight sync) and
    counts it (``train/reward_timeouts``); with ``error`` (default) it stops the run."""
    @functools.wraps(training_step)
    def step(self, batch, batch_idx):
        try:
            return training_step(self, batch, batch_idx)
        except RewardTimeout as exc:
            if self.rewards.on_timeout != "skip":
                raise
            self.reward_timeouts += 1
            log.warning("step %d: batch skipped (%s); %d skipped so far", self.global_step, exc, self.reward_timeouts)
            self.log("train/reward_timeouts", float(self.reward_timeouts), on_step=True, on_epoch=False, batch_size=1)
            return None
    return step


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The decoder layers of an HF causal LM (``.model.layers``), the natural FSDP units."""
    layers = getattr(getattr(lm, "model", lm), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find decoder layers on {type(lm).__name__} to shard (expected .model.layers)")
    return list(layers)


class RLModule(L.LightningModule):
    """Base for RL post-training modules (manual optimisation).

    Subclasses build ``self.policy`` (trainable), then call ``_init_rl`` which creates
    the frozen reference. ``optim`` keys: lr, weight_decay, betas, grad_clip,
    warmup_steps.
    """

    algo: AlgorithmConfig          # set by each subclass from its ``algorithm`` config (parse_algorithm)

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.engine = None
        self.skipped_steps = 0
        self.reward_timeouts = 0

    # ---- construction ------------------------------------------------------------------
    def _init_reference(self, trainable: nn.Module) -> nn.Module:
        """The frozen reference of ``trainable``: a copy, or for an LM with LoRA adapters the
        same LM with its adapters disabled (``AdaptersOff``: no second copy in memory)."""
        if is_lora(trainable):
            return AdaptersOff(trainable)
        ref = copy.deepcopy(trainable)
        ref.requires_grad_(False).eval()
        return ref

    def _build_engine(self, lm: nn.Module, eos_id: int, pad_id: int) -> None:
        """The rollout engine over ``lm`` (a plain copy with the adapters merged for LoRA). A
        policy with dropout is refused (``policy_dropout``): the engine samples without it."""
        dropout = policy_dropout(lm)
        if dropout:
            raise ValueError(f"RL policy LM has dropout in training mode ({', '.join(dropout)}): the engine samples "
                             "without dropout and the update would re-score with it (eq. 4's ratio != 1 on-policy); "
                             "set model.lm.attention_dropout=0 / model.lora.dropout=0 for RL (dropout is for SFT)")
        cfg = self.hparams.rollout
        seed = int(self.hparams.get("seed", 0)) + 1000 * self.global_rank
        engine = build_engine(cfg.get("engine", "torch"), lm=merged_copy(lm), eos_id=eos_id, pad_id=pad_id, seed=seed,
                              **dict(cfg.get("engine_kwargs") or {}))
        self.engine = GuardedEngine(engine, lambda: f"step {self.global_step}")

    def configure_model(self) -> None:
        """FSDP2 under ``ModelParallelStrategy``: shard decoder layers, then each trainable
        root (see ``fsdp_roots``). Other strategies: nothing to do."""
        mesh = getattr(self, "device_mesh", None)
        if mesh is None or getattr(self, "_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        ignored = {p for m in self.fsdp_replicated() for p in m.parameters()}
        for unit in self.fsdp_units():
            fully_shard(unit, mesh=dp_mesh, ignored_params=ignored or None)
        self._sharded = True

    def fsdp_units(self) -> list[nn.Module]:
        """Modules to ``fully_shard``, inner units before the roots that contain them."""
        raise NotImplementedError

    def fsdp_replicated(self) -> list[nn.Module]:
        """Frozen modules the step calls on their own (e.g. the audio encoder): kept whole
        on every rank, outside FSDP (its lazy init wants the root's forward first)."""
        return []

    # ---- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        require_optim_keys(self.hparams.optim, RL_KEYS)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        return adamw_warmup_cosine(params, self.hparams.optim)      # constant unless total_steps

    def guarded_step(self, losses: Iterator[torch.Tensor]) -> dict[str, float]:
        """Backward every micro-batch loss yielded by ``losses``, clip, and step — unless a
        loss or gradient is non-finite on any rank, in which case the step is skipped
        (gradients dropped, ``train/skipped_steps`` counted) and no weight changes."""
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        finite = True
        for loss in losses:
            if not torch.isfinite(loss):
                finite = False
                break
            self.manual_backward(loss)
        grad_norm = torch.tensor(float("nan"))
        if finite:
            clip = self.hparams.optim["grad_clip"]
            params = [p for p in self.policy.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            finite = bool(torch.isfinite(grad_norm))
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            opt.step()
            sched.step()
            self._consecutive_skips = 0
        else:
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self._consecutive_skips = getattr(self, "_consecutive_skips", 0) + 1
            limit = int(self.hparams.optim["max_consecutive_skips"])
            log.warning("step %d skipped: non-finite loss or gradient (%d skipped so far)",
                        self.global_step, self.skipped_steps)
            if self._consecutive_skips >= limit:
                raise FloatingPointError(f"{self._consecutive_skips} optimiser steps in a row had a non-finite loss "
                                         f"or gradient (optim.max_consecutive_skips={limit}); stopping. The last "
                                         "checkpoint holds the last finite weights.")
        return {"grad_norm": float(grad_norm), "skipped_steps": float(self.skipped_steps),
                "lr": float(sched.get_last_lr()[0])}

    def policy_update(self, mask: torch.Tensor, policy_logp: Callable[[slice], tuple],
                      loss_terms: Callable[..., tuple[torch.Tensor, dict]],
                      reference_logp: Callable[[slice], torch.Tensor] | None = None) -> dict[str, float]:
        """The policy phase of every RL step: ``algorithm.ppo_epochs`` guarded optimiser steps
        on one rollout batch, each over micro-batches of whole groups.

        mask: (N, T) response mask of the N = B x G rollout rows.
        policy_logp(sl) -> (logp (n, T) with gradient, entropy (n, T) or None, aux): the
            policy's log-probs of rows ``sl`` (``aux``: whatever ``loss_terms`` needs besides,
            e.g. DiffRO's logits).
        reference_logp(sl) -> (n, T): the frozen reference's, or None without a KL term;
            scored per micro-batch (its memory is bounded by ``micro_batch_size``), once per
            rollout.
        loss_terms(sl, logp, old_logp, ref_logp, aux, mean_tokens) -> (loss, metrics) of a
            micro-batch. ``old_logp`` is the log-prob under the policy that sampled: the
            first epoch's (no update has happened yet in this rollout), kept for the later
            epochs, whose ratio and clip then act.

        Returns the optimiser metrics and the micro-batch means of ``loss_terms``' metrics,
        ``loss`` and ``entropy``, of the last epoch."""
        n = mask.shape[0]
        mb = self.algo.rows_per_micro_batch(n)
        slices = [slice(s, s + mb) for s in range(0, n, mb)]
        mean_tokens = float(mask.sum()) / max(n, 1)          # for length_norm=token
        old: dict[int, torch.Tensor] = {}
        ref: dict[int, torch.Tensor | None] = {}
        metrics: dict[str, float] = {}
        for _ in range(self.algo.ppo_epochs):
            acc: dict[str, list[float]] = {}

            def losses():
                for i, sl in enumerate(slices):
                    if i not in ref:
                        with torch.no_grad():
                            ref[i] = reference_logp(sl) if reference_logp is not None else None
                    logp, entropy, aux = policy_logp(sl)
                    old.setdefault(i, logp.detach())        # a skipped step changes no weight, so still the sampler's
                    loss, m = loss_terms(sl, logp, old[i], ref[i], aux, mean_tokens)
                    if entropy is not None:
                        m["entropy"] = entropy.detach().sum() / mask[sl].sum().clamp(min=1)
                    m["loss"] = loss.detach()
                    for k, v in m.items():
                        acc.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))
                    yield loss * (logp.shape[0] / n)

            metrics.update(self.guarded_step(losses()))
            metrics.update({k: sum(v) / len(v) for k, v in acc.items()})
        return metrics

    def prompts_of(self, rows: slice) -> slice:
        """The prompts (batch rows) whose G responses are the rollout rows ``rows`` (whole groups)."""
        g = self.algo.group_size
        return slice(rows.start // g, rows.stop // g)

    def grpo_term(self, logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                  adv: torch.Tensor, mask: torch.Tensor, mean_tokens: float) -> tuple[torch.Tensor, dict]:
        """GRPO's clipped surrogate + KL (eq. 2-4) with this run's ``algorithm`` settings."""
        a = self.algo
        return grpo_loss(logp, old_logp, ref_logp, adv, mask, clip_eps=a.clip_eps, beta=a.beta,
                         clip_eps_high=a.clip_eps_high, length_norm=a.length_norm, mean_tokens=mean_tokens)

    def mean_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average scalar metrics over data-parallel ranks in one all-reduce (NaN-aware)."""
        if self.trainer.world_size <= 1:
            return metrics
        keys = sorted(metrics)
        vals = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.device)
        ok = torch.isfinite(vals)
        both = torch.stack([torch.where(ok, vals, torch.zeros_like(vals)), ok.double()])
        both = self.trainer.strategy.reduce(both, reduce_op="sum")
        mean = both[0] / both[1].clamp(min=1)
        mean = torch.where(both[1] > 0, mean, torch.full_like(mean, float("nan")))
        return dict(zip(keys, mean.tolist()))

    def step_log(self, rewards, rollout, zero_std_frac: float, metrics: dict[str, float],
                 **extra: float) -> dict[str, float]:
        """The ``train/`` scalars of one RL step (rewards, response lengths, optimiser
        ``metrics``, module-specific ``extra``), averaged over ranks."""
        log = {"train/reward/mean": rewards.total.mean().item(), "train/reward/std": rewards.total.std().item(),
               "train/response_len": rollout.lengths.float().mean().item(),
               "train/truncated_frac": (~rollout.finished).float().mean().item(),
               "train/zero_std_frac": float(zero_std_frac),
               **{f"train/{k}": v for k, v in extra.items()}}
        log.update({f"train/reward/{k}": v for k, v in rewards.means().items()})
        log.update({f"train/{k}": v for k, v in metrics.items()})
        return self.mean_over_ranks(log)

    # ---- engine sync -----------------------------------------------------------------
    def sync_engine(self) -> None:
        """Push the policy LM's full weights to the rollout engine (on-policy); with LoRA the
        merged ``W + (alpha / r) B A``."""
        with run_phase(self, "sync"):
            src = self.engine_source()
            self.engine.update_weights(merged_named_parameters(src) if is_lora(src) else full_named_parameters(src))

    def engine_source(self) -> nn.Module:
        """The module whose parameters the engine mirrors."""
        raise NotImplementedError

    def on_train_start(self) -> None:
        self.sync_engine()          # also after a resume: the checkpoint's weights reach the engine

    def on_validation_start(self) -> None:
        if not self.trainer.sanity_checking and self.trainer.state.fn == "validate":
            self.sync_engine()

    # ---- checkpoint --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's engine sampler and global RNG states go into the checkpoint (Lightning
        builds it on all ranks and writes rank 0's), so that each rank resumes its own
        streams under DDP / FSDP."""
        local = {"engine": self.engine.state_dict() if self.engine else {}, "rng": rng_state(),
                 "module": self.rank_state()}
        ranks = [local]
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, local)
        checkpoint["speech_rl"] = {"skipped_steps": self.skipped_steps, "reward_timeouts": self.reward_timeouts,
                                   "ranks": ranks}
        dropped = self._rebuilt_base_names()
        if dropped:               # LoRA: the frozen base is rebuilt from model.init_from / pretrained_path
            for k in dropped:
                checkpoint["state_dict"].pop(k, None)
            checkpoint["speech_rl"]["lora_base_dropped"] = len(dropped)

    def _rebuilt_base_names(self) -> set[str]:
        """State-dict names of the LoRA LM's frozen base when the model config rebuilds it."""
        if not base_is_rebuilt(self.hparams.get("model")):
            return set()
        return frozen_base_names(self, self.engine_source())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("speech_rl", {})
        if state.get("lora_base_dropped"):
            fill_frozen(checkpoint["state_dict"], self, frozen_base_names(self, self.engine_source()))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.reward_timeouts = int(state.get("reward_timeouts", 0))     # absent in checkpoints before it existed
        ranks = state.get("ranks") or [{"engine": state.get("engine"), "rng": state.get("rng")}]
        rank = self.global_rank
        if rank >= len(ranks):
            log.warning("checkpoint holds sampler states of %d rank(s), this is rank %d: it starts from rank 0's "
                        "(the run continues, but not bit-identically to an uninterrupted one)", len(ranks), rank)
            rank = 0
        mine = ranks[rank]
        if mine.get("rng"):
            set_rng_state(mine["rng"])
        self._engine_state = mine.get("engine")
        if mine.get("module"):
            self.load_rank_state(mine["module"])
        if self.engine is not None and self._engine_state:
            self.engine.load_state_dict(self._engine_state)

    def rank_state(self) -> dict[str, Any]:
        """This rank's module-specific sampler states for the checkpoint (plain types)."""
        return {}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore what ``rank_state`` saved."""

    def setup(self, stage: str) -> None:
        if self.engine is None:
            self.create_engine()
        if getattr(self, "_engine_state", None):
            self.engine.load_state_dict(self._engine_state)

    def create_engine(self) -> None:
        raise NotImplementedError


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU / CUDA, Python, NumPy) of this process, for exact resume
    of anything stochastic outside the engine (dropout, user rewards)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain types only: Lightning loads resume checkpoints with weights_only=True
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "val_max_new_tokens", "val_temperature")


def rollout_sampling_params(rollout: dict, validation: bool = False) -> SamplingParams:
    """The sampling of the training rollout, or of validation (``val_max_new_tokens`` and
    ``val_temperature``: 0 is greedy), from the ``rollout`` config group
    (``configs/rollout/*.yaml``, the one home of these values)."""
    require_keys(rollout, SAMPLING_KEYS, "rollout config", "see configs/rollout/torch.yaml; without Hydra start "
                 "from speech_rl.config_files.load_config_group('rollout', 'torch')")
    pre = "val_" if validation else ""
    return SamplingParams(max_new_tokens=int(rollout[pre + "max_new_tokens"]),
                          temperature=float(rollout[pre + "temperature"]),
                          top_p=float(rollout["top_p"]), top_k=int(rollout["top_k"]))


def finite_mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")
