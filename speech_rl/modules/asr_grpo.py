"""ASR post-training of an audio LLM with GRPO (PAPER.md eq. 1-4) or MWER.

One training step (each part a timed phase; see ``speech_rl.callbacks``):
  encode   audio -> encoder frames, once per utterance (frozen encoder)
  rollout  prompt [prefix | audio | suffix] -> engine samples G hypotheses each
  reward   decode -> RewardSet (by name and weight, gates) -> group advantages (eq. 1)
  policy   reference log-probs, then clipped surrogate + k3 KL (eq. 2-4) or MWER;
           guarded optimiser step
  sync     full policy LM weights -> engine (on-policy)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from speech_rl.data.dataset import ASRBatch
from rewards import RewardSet
from rewards.asr import HallucinationReward
from speech_rl.algorithms import group_advantages, mwer_loss, parse_algorithm
from speech_rl.callbacks.phases import run_phase
from speech_rl.engines import SamplingParams
from speech_rl.metrics import PerSetErrorRates, make_normalizer, val_set_names, word_errors
from speech_rl.models.audio_llm import AudioLLM, build_audio_llm
from speech_rl.models.lora import is_lora
from speech_rl.modules.rl_base import RLModule, skip_on_reward_timeout, decoder_layers, finite_mean, rollout_sampling_params

LOSSES = ("grpo", "mwer")


class ASRGRPOModule(RLModule):
    """Args (each a config group; see ``configs/``):
        model: ``build_audio_llm`` kwargs (tokenizer, encoder, llm, projector, init_from).
        algorithm: name (grpo | mwer), group_size, clip_eps, clip_eps_high, beta,
            scale_advantages, ppo_epochs, micro_batch_size.
        reward: plugins (files or modules), terms ({name: {weight, gate, params...}}).
        rollout: engine, engine_kwargs, max_new_tokens, temperature, top_p, top_k,
            val_max_new_tokens.
        optim: lr, weight_decay, betas, grad_clip, warmup_steps.
        freeze_encoder: keep the audio encoder fixed (trained: projector + LM).
        normalizer: plain | whisper, references and hypotheses before validation WER (text_normalizer).
    """

    def __init__(self, model: dict, algorithm: dict, reward: dict, rollout: dict, optim: dict,
                 freeze_encoder: bool = True, normalizer: str = "plain", seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.algo = parse_algorithm(algorithm, LOSSES)
        self.policy: AudioLLM = build_audio_llm(**model)
        if freeze_encoder:
            self.policy.encoder.requires_grad_(False)
        self.reference = AudioLLM(self.policy.tokenizer, nn.Identity(), self._init_reference(self.policy.projector),
                                  self._init_reference(self.policy.llm)).requires_grad_(False)
        self.rewards = RewardSet.from_config(reward)
        self.hallucination_probe = HallucinationReward(normalizer=normalizer)
        self.normalizer = make_normalizer(normalizer)
        self.val_metrics = PerSetErrorRates(self.normalizer)     # one per validation set (data.extra_val)
        self.group_size = self.algo.group_size
        self.train_params = rollout_sampling_params(rollout)
        self.val_params = rollout_sampling_params(rollout, validation=True)

    # ---- RLModule hooks -----------------------------------------------------------------
    def create_engine(self) -> None:
        tok = self.policy.tokenizer
        self._build_engine(self.policy.llm, tok.eos_id, tok.pad_id)

    def engine_source(self) -> nn.Module:
        return self.policy.llm

    def fsdp_units(self) -> list[nn.Module]:
        if is_lora(self.policy.llm):
            raise ValueError("model.lora under FSDP2 is not supported yet: train LoRA under DDP or one device, "
                             "or set model.lora.r=0 for FSDP2")
        return [*decoder_layers(self.policy.llm), self.policy, *decoder_layers(self.reference.llm), self.reference]

    def fsdp_replicated(self) -> list[nn.Module]:
        if not self.hparams.freeze_encoder:
            raise ValueError("FSDP2 needs freeze_encoder=true (a trained encoder would have to be its own "
                             "FSDP root, called before the policy)")
        return [self.policy.encoder]

    def handoff_components(self) -> dict[str, Any]:
        return {"encoder": self.policy.encoder, "engine": self.engine, "reference": self.reference,
                "reward_models": [fn for fn in self.rewards.fns.values() if isinstance(fn, nn.Module)]}

    # ---- pieces of the step -------------------------------------------------------------
    @torch.no_grad()
    def encode(self, batch: ASRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) features -> (B, T', D) frames, once per utterance."""
        with run_phase(self, "encode"):
            return self.policy.encode(batch.feats, batch.feat_lens)

    @torch.no_grad()
    def generate(self, frames: torch.Tensor, frame_lens: torch.Tensor, group_size: int,
                 params: SamplingParams):
        with run_phase(self, "rollout"):
            prompt, mask = self.policy(frames, frame_lens)
            return self.engine.generate(prompt, mask, group_size, params)

    def score(self, batch: ASRBatch, rollout) -> tuple[list[str], Any, torch.Tensor, dict]:
        """Decode hypotheses, compute rewards and group advantages."""
        g = self.group_size
        with run_phase(self, "reward"):
            hyps = [self.policy.tokenizer.decode(t) for t in rollout.tokens]
            rep = lambda xs: [x for x in xs for _ in range(g)]       # noqa: E731  (B,) -> (B*G,)
            fields = {"hyp": hyps, "ref": rep(batch.texts), "keywords": rep(batch.keywords),
                      "duration": rep(batch.durations), "id": rep(batch.ids),
                      "tokens": [t[m.bool()].tolist() for t, m in zip(rollout.tokens, rollout.mask)]}
            out = self.rewards(**fields)
            adv, adv_m = group_advantages(out.total, g, scale=self.algo.scale_advantages)
            self.hallucination_probe(**fields)
            stats = {"hallucination_rate": finite_mean([float(r is not None) for r in self.hallucination_probe.last_reasons]),
                     **{f"adv_{k}": float(v) for k, v in adv_m.items()}}
        return hyps, out, adv, {**fields, **stats}

    def policy_phase(self, frames, frame_lens, rollout, adv, fields) -> dict[str, float]:
        """The shared policy update (``RLModule.policy_update``) with the audio LLM's scoring:
        GRPO's surrogate + KL, or MWER over each group's hypotheses."""
        g, dev = self.group_size, self.device
        ids, mask, adv = rollout.tokens.to(dev), rollout.mask.to(dev), adv.to(dev)
        temp = self.train_params.temperature or 1.0
        p = self.prompts_of
        if self.algo.name == "mwer":     # word errors of each hypothesis (N,) and reference lengths (B,): once
            errs = torch.tensor([word_errors(self.normalizer(r), self.normalizer(h)).errors
                                 for r, h in zip(fields["ref"], fields["hyp"])], device=dev)
            ref_len = torch.tensor([len(self.normalizer(r).split()) for r in fields["ref"][::g]], device=dev)

        def policy_logp(sl):
            logp, ent = self.policy(frames[p(sl)], frame_lens[p(sl)], ids[sl], mask[sl], g, temp, with_entropy=True)
            return logp, ent, None

        def reference_logp(sl):
            return self.reference(frames[p(sl)], frame_lens[p(sl)], ids[sl], mask[sl], g, temp)[0]

        def loss_terms(sl, logp, old_logp, ref_logp, aux, mean_tokens):
            if self.algo.name == "grpo":
                return self.grpo_term(logp, old_logp, ref_logp, adv[sl], mask[sl], mean_tokens)
            return mwer_loss((logp * mask[sl]).sum(1), errs[sl], g,
                             normalise_by_ref_len=ref_len[p(sl)] if self.algo.mwer_normalise else None)

        return self.policy_update(mask, policy_logp, loss_terms,
                                  reference_logp if self.algo.needs_reference else None)

    # ---- Lightning ----------------------------------------------------------------------
    @skip_on_reward_timeout
    def training_step(self, batch: ASRBatch, batch_idx: int) -> None:
        frames, frame_lens = self.encode(batch)
        rollout = self.generate(frames, frame_lens, self.group_size, self.train_params)
        hyps, rewards, adv, fields = self.score(batch, rollout)
        with run_phase(self, "policy"):
            metrics = self.policy_phase(frames, frame_lens, rollout, adv, fields)
        self.sync_engine()
        log = self.step_log(rewards, rollout, fields["adv_zero_std_frac"], metrics,
                            hallucination_rate=fields["hallucination_rate"],
                            gate_rate=rewards.gated.float().mean().item(),
                            audio_seconds=float(sum(batch.durations)))
        self.log_dict(log, on_step=True, on_epoch=False, prog_bar=False, batch_size=len(batch))
        self.log("reward", log["train/reward/mean"], prog_bar=True, logger=False, batch_size=len(batch))

    def validation_step(self, batch: ASRBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        with run_phase(self, "validate"):
            hyps = self.policy.transcribe(batch.feats, batch.feat_lens, self.engine, self.val_params)
        self.val_metrics.get(dataloader_idx, self.device).update(batch.texts, hyps, batch.keywords)

    def on_validation_epoch_end(self) -> None:
        # val/* on data.val_manifest, <name>/* on each data.extra_val set (e.g. val_long/wer)
        self.log_dict(self.val_metrics.compute_and_reset(val_set_names(self._trainer)),
                      sync_dist=True)   # equal on all ranks already
