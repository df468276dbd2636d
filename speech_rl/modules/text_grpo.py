"""GRPO on a causal LM from text prompts: the ASR step with the audio taken out.

It is the LLM-only path of the framework (text-side sanity checks, reward debugging)
and the workload ``benchmarks/grpo_step_vs_trl.py`` runs against TRL's
GRPOTrainer. Phases: rollout (prompt embeddings -> engine samples G completions),
reward, policy (reference log-probs if ``beta > 0``, clipped surrogate + KL, guarded
optimiser step), sync.

A batch is a list of rows (dicts) with a ``prompt`` string; every other field of a
row reaches the rewards, repeated for the G samples, beside ``hyp`` and ``prompt``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rewards import RewardSet
from speech_rl.algorithms import group_advantages, parse_algorithm
from speech_rl.callbacks.phases import run_phase
from speech_rl.models.llm import build_causal_lm, response_logprobs
from speech_rl.modules.rl_base import RLModule, skip_on_reward_timeout, decoder_layers, rollout_sampling_params


class TextGRPOModule(RLModule):
    """Args:
        tokenizer: an object with ``encode``, ``decode``, ``eos_id``, ``pad_id``,
            ``vocab_size`` (e.g. ``speech_rl.data.tokenizer.HFTokenizer``).
        llm: ``build_causal_lm`` kwargs (``vocab_size`` defaults to the tokenizer's).
        algorithm: the ``grpo`` algorithm config (``configs/algorithm/grpo.yaml``).
        reward, rollout, optim: as for ``ASRGRPOModule``.
    """

    def __init__(self, tokenizer: Any, llm: dict, algorithm: dict, reward: dict, rollout: dict, optim: dict,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.policy = build_causal_lm(**{"vocab_size": tokenizer.vocab_size, **llm})
        self.algo = parse_algorithm(algorithm, ("grpo",))
        self.reference = self._init_reference(self.policy) if self.algo.needs_reference else None
        self.rewards = RewardSet.from_config(reward)
        self.group_size = self.algo.group_size
        self.train_params = rollout_sampling_params(rollout)

    # ---- RLModule hooks -----------------------------------------------------------------
    def create_engine(self) -> None:
        self._build_engine(self.policy, self.tokenizer.eos_id, self.tokenizer.pad_id)

    def engine_source(self) -> nn.Module:
        return self.policy

    def fsdp_units(self) -> list[nn.Module]:
        units = [*decoder_layers(self.policy), self.policy]
        if self.reference is not None:
            units += [*decoder_layers(self.reference), self.reference]
        return units

    def handoff_components(self) -> dict[str, Any]:
        return {"engine": self.engine, "reference": self.reference,
                "reward_models": [fn for fn in self.rewards.fns.values() if isinstance(fn, nn.Module)]}

    # ---- pieces of the step -------------------------------------------------------------
    def prompt_ids(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> left-padded token ids (B, L) and mask (B, L)."""
        seqs = [self.tokenizer.encode(p) for p in prompts]
        if not all(seqs):
            raise ValueError(f"prompt {prompts[[bool(s) for s in seqs].index(False)]!r} encodes to no tokens")
        n = max(map(len, seqs))
        ids = torch.full((len(seqs), n), self.tokenizer.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros(len(seqs), n, dtype=torch.long, device=self.device)
        for i, s in enumerate(seqs):
            ids[i, n - len(s):] = torch.tensor(s, device=self.device)
            mask[i, n - len(s):] = 1
        return ids, mask

    @skip_on_reward_timeout
    def training_step(self, batch: list[dict], batch_idx: int) -> None:
        g = self.group_size
        with run_phase(self, "rollout"), torch.no_grad():
            pids, pmask = self.prompt_ids([row["prompt"] for row in batch])
            rollout = self.engine.generate(self.policy.get_input_embeddings()(pids), pmask, g, self.train_params)
        with run_phase(self, "reward"):
            fields = {k: [row[k] for row in batch for _ in range(g)] for k in batch[0]}
            fields["hyp"] = [self.tokenizer.decode(t) for t in rollout.tokens]
            out = self.rewards(**fields)
            adv, adv_m = group_advantages(out.total, g, scale=self.algo.scale_advantages)
        ids, mask, adv = rollout.tokens.to(self.device), rollout.mask.to(self.device), adv.to(self.device)
        temp = self.train_params.temperature or 1.0

        def logprobs(lm: nn.Module, sl: slice) -> torch.Tensor:
            """Rows ``sl`` (whole groups); each prompt runs once for its G responses."""
            p = self.prompts_of(sl)
            return response_logprobs(lm, lm.get_input_embeddings()(pids[p]), pmask[p], ids[sl], mask[sl], temp)[0]

        with run_phase(self, "policy"):
            metrics = self.policy_update(
                mask, lambda sl: (logprobs(self.policy, sl), None, None),
                lambda sl, logp, old, ref, aux, mean_tokens: self.grpo_term(logp, old, ref, adv[sl], mask[sl], mean_tokens),
                (lambda sl: logprobs(self.reference, sl)) if self.reference is not None else None)
        self.sync_engine()
        log = self.step_log(out, rollout, adv_m["zero_std_frac"], metrics)
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=len(batch))
