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
from speech_rl.algorithms import group_advantages, grpo_loss
from speech_rl.callbacks.phases import run_phase
from speech_rl.models.llm import build_causal_lm, response_logprobs
from speech_rl.modules.rl_base import RLModule, skip_on_reward_timeout, decoder_layers, rollout_sampling_params


class TextGRPOModule(RLModule):
    """Args:
        tokenizer: an object with ``encode``, ``decode``, ``eos_id``, ``pad_id``,
            ``vocab_size`` (e.g. ``speech_rl.data.tokenizer.HFTokenizer``).
        llm: ``build_causal_lm`` kwargs (``vocab_size`` defaults to the tokenizer's).
        algorithm: group_size, clip_eps, clip_eps_high, beta, scale_advantages,
            micro_batch_size.
        reward, rollout, optim: as for ``ASRGRPOModule``.
    """

    def __init__(self, tokenizer: Any, llm: dict, algorithm: dict, reward: dict, rollout: dict, optim: dict,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.policy = build_causal_lm(**{"vocab_size": tokenizer.vocab_size, **llm})
        self.reference = self._init_reference(self.policy) if float(algorithm.get("beta", 0.0)) > 0 else None
        self.rewards = RewardSet.from_config(reward)
        self.group_size = int(algorithm["group_size"])
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
        g, a = self.group_size, self.hparams.algorithm
        with run_phase(self, "rollout"), torch.no_grad():
            pids, pmask = self.prompt_ids([row["prompt"] for row in batch])
            rollout = self.engine.generate(self.policy.get_input_embeddings()(pids), pmask, g, self.train_params)
        with run_phase(self, "reward"):
            fields = {k: [row[k] for row in batch for _ in range(g)] for k in batch[0]}
            fields["hyp"] = [self.tokenizer.decode(t) for t in rollout.tokens]
            out = self.rewards(**fields)
            adv, adv_m = group_advantages(out.total, g, scale=bool(a.get("scale_advantages", True)))
        ids, mask, adv = rollout.tokens.to(self.device), rollout.mask.to(self.device), adv.to(self.device)
        temp = self.train_params.temperature or 1.0
        n = ids.shape[0]
        mb = int(a.get("micro_batch_size") or n)
        mb = max(g, mb - mb % g)                                      # whole groups per micro-batch
        mean_tokens = float(mask.sum()) / max(n, 1)                    # for length_norm=token
        acc: dict[str, list[float]] = {}

        def logprobs(lm: nn.Module, sl: slice) -> torch.Tensor:
            """Rows ``sl`` (whole groups); each prompt runs once for its G responses."""
            bsl = slice(sl.start // g, sl.stop // g)
            return response_logprobs(lm, lm.get_input_embeddings()(pids[bsl]), pmask[bsl], ids[sl], mask[sl], temp)[0]

        def losses():
            for start in range(0, n, mb):
                sl = slice(start, start + mb)
                ref_logp = None
                if self.reference is not None:
                    with torch.no_grad():
                        ref_logp = logprobs(self.reference, sl)
                logp = logprobs(self.policy, sl)
                loss, m = grpo_loss(logp, logp.detach(), ref_logp, adv[sl], mask[sl],
                                    clip_eps=float(a.get("clip_eps", 0.2)), beta=float(a.get("beta", 0.0)),
                                    clip_eps_high=a.get("clip_eps_high"), length_norm=a.get("length_norm", "sequence"),
                                    mean_tokens=mean_tokens)
                for k, v in {**m, "loss": loss}.items():
                    acc.setdefault(k, []).append(float(v))
                yield loss * (logp.shape[0] / n)

        with run_phase(self, "policy"):
            metrics = self.guarded_step(losses())
        metrics.update({k: sum(v) / len(v) for k, v in acc.items()})
        self.sync_engine()
        log = self.step_log(out, rollout, adv_m["zero_std_frac"], metrics)
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=len(batch))
