"""RL post-training of the TTS LM: GRPO, DiffRO, or both through the sample filter.

One step (phases timed by the PhaseTimer, the device handed over by DeviceHandoff):

  rollout  [spk | text | sos] -> engine samples G acoustic-token sequences per text
  flow     (when a reward needs audio) flow-matching decoder + vocoder -> waveforms
  reward   recogniser transcribes each sample (the token ASR on its tokens, or a
           speech-rl ASR checkpoint on its waveform) -> RewardSet (``wer`` = R1,
           ``duration`` = R2, ``diversity`` = R3, any plugin) -> group advantages
  policy   algorithm.name:
             grpo      clipped surrogate + KL (eq. 2-4)
             diffro    eq. 5-6: straight-through tokens -> token ASR -> -log P(text)
                       per character (+ KL to the reference)
             combined  GRPO on every sample + ``diffro_weight`` x DiffRO on the rows the
                       sample filter keeps (A_i > 0 and stopped); ``sample_filter:
                       false`` applies DiffRO to every row
  sync     push the LM's weights to the engine

Reward fields: ``text`` and ``ref`` (the input text), ``hyp`` (the recogniser's
transcript), ``tokens`` (sampled codes, stop token excluded), ``group``, ``speaker``,
and with audio ``audio`` / ``sample_rate``.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from datamodules.tts import TTSBatch
from rewards import RewardSet
from speech_rl.algorithms import (diffro_loss, group_advantages, kl_penalty, parse_algorithm, sample_filter,
                                  straight_through_tokens)
from speech_rl.callbacks.phases import run_phase
from speech_rl.config_files import require_keys
from speech_rl.metrics import ASRErrorRates, TextNormalizer
from speech_rl.models.lora import AdaptersOff, is_lora
from speech_rl.modules.rl_base import RLModule, skip_on_reward_timeout, decoder_layers, rollout_sampling_params
from speech_rl.tts.system import TTSSystem, build_tts_system

ALGORITHMS = ("grpo", "diffro", "combined")


class TTSRLModule(RLModule):
    """Args:
        model: ``build_tts_system`` kwargs (``init_from`` the supervised TTS checkpoint).
        algorithm: name (grpo | diffro | combined), group_size, clip_eps, clip_eps_high,
            beta, scale_advantages, sample_filter, diffro_weight, gumbel_tau,
            hard_sample (rollout | gumbel), micro_batch_size.
        reward: plugins, terms (as for ASR; ``wer`` reads the recogniser's ``hyp``).
        rollout: engine, engine_kwargs, max_new_tokens, temperature, top_p, top_k,
            val_max_new_tokens, needs_audio (synthesise waveforms for the rewards),
            recognizer (``token`` or the path of a speech-rl ASR checkpoint, which then
            transcribes the synthesised audio).
        optim: lr, weight_decay, betas, grad_clip, warmup_steps.
    """

    def __init__(self, model: dict, algorithm: dict, reward: dict, rollout: dict, optim: dict, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.algo = parse_algorithm(algorithm, ALGORITHMS)
        self.tts: TTSSystem = build_tts_system(**model)
        for part in (self.tts.flow, self.tts.token_asr, self.tts.vocoder):      # only the LM learns
            part.requires_grad_(False).eval()
        self.reference = self._tts_reference() if self.algo.needs_reference else None
        self.rewards = RewardSet.from_config(reward)
        self.group_size = self.algo.group_size
        self.train_params = rollout_sampling_params(rollout)
        self.val_params = rollout_sampling_params(rollout, validation=True)
        require_keys(rollout, ("recognizer", "needs_audio"), "TTS rollout config", "see configs/experiment/tts_rl.yaml")
        rec = rollout["recognizer"]
        self.waveform_asr = None
        if rec != "token":
            from speech_rl.models.audio_llm import load_policy

            self.waveform_asr = load_policy(rec).requires_grad_(False)
        self.needs_audio = bool(rollout["needs_audio"]) or self.waveform_asr is not None
        self.val_metric = ASRErrorRates(TextNormalizer())
        self._flow_gen = torch.Generator().manual_seed(int(seed))      # re-seeded per rank in setup

    def _tts_reference(self) -> nn.Module:
        """The frozen reference TTS LM: a copy; under LoRA the same TTS LM (its prompt tables are
        frozen then) over the causal LM with adapters off (``AdaptersOff``): no second copy."""
        lm = self.tts.lm
        if not is_lora(lm.llm):
            return self._init_reference(lm)
        ref = copy.copy(lm)
        ref._modules, ref._parameters = dict(lm._modules), dict(lm._parameters)   # shared, not copied
        ref.llm = AdaptersOff(lm.llm)
        return ref

    def train(self, mode: bool = True) -> "TTSRLModule":
        """Frozen parts (flow, vocoder, token ASR, reference, waveform ASR) stay in eval mode."""
        super().train(mode)
        for part in (self.tts.flow, self.tts.token_asr, self.tts.vocoder, self.reference, self.waveform_asr):
            if part is not None:
                part.eval()
        return self

    def setup(self, stage: str) -> None:
        if not getattr(self, "_flow_gen_loaded", False):
            self._flow_gen.manual_seed(int(self.hparams.seed) + 1000 * self.global_rank)
        super().setup(stage)

    def rank_state(self) -> dict[str, Any]:
        """The flow decoder's noise generator: a resumed run draws the same audio."""
        return {"flow_gen": self._flow_gen.get_state()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        if "flow_gen" in state:
            self._flow_gen.set_state(state["flow_gen"])
            self._flow_gen_loaded = True

    @property
    def policy(self) -> nn.Module:
        """The trainable part: the TTS LM (prompt tables + causal LM)."""
        return self.tts.lm

    # ---- RLModule hooks -----------------------------------------------------------------
    def create_engine(self) -> None:
        self._build_engine(self.tts.lm.llm, self.tts.lm.eos_id, self.tts.lm.pad_id)

    def engine_source(self) -> nn.Module:
        return self.tts.lm.llm

    def fsdp_units(self) -> list[nn.Module]:
        if is_lora(self.tts.lm.llm):
            raise ValueError("model.lora under FSDP2 is not supported yet: train LoRA under DDP or one device, "
                             "or set model.lora.r=0 for FSDP2")
        units = [*decoder_layers(self.tts.lm.llm), self.tts.lm]
        if self.reference is not None:
            units += [*decoder_layers(self.reference.llm), self.reference]
        return units

    def fsdp_replicated(self) -> list[nn.Module]:
        return [self.tts.flow, self.tts.token_asr, self.tts.vocoder]

    def handoff_components(self) -> dict[str, Any]:
        return {"engine": self.engine, "reference": self.reference, "flow": [self.tts.flow, self.tts.vocoder],
                "token_asr": self.tts.token_asr,
                "reward_models": [fn for fn in self.rewards.fns.values() if isinstance(fn, nn.Module)]
                + ([self.waveform_asr] if self.waveform_asr is not None else [])}

    # ---- pieces of the step -------------------------------------------------------------
    def recognise(self, tokens: list[list[int]], audio: list[torch.Tensor] | None) -> list[str]:
        """Transcripts of the samples: the token ASR, or the waveform ASR on the audio."""
        if self.waveform_asr is None:
            lens = torch.tensor([max(len(t), 1) for t in tokens], device=self.device)
            x = torch.zeros(len(tokens), int(lens.max()), dtype=torch.long, device=self.device)
            for i, t in enumerate(tokens):
                x[i, : len(t)] = torch.tensor(t, dtype=torch.long, device=self.device)
            hyps = self.tts.token_asr.transcribe(x, lens)
            return [h if t else "" for h, t in zip(hyps, tokens)]
        from speech_rl.engines import TorchEngine

        asr = self.waveform_asr
        if getattr(self, "_asr_engine", None) is None:
            self._asr_engine = TorchEngine(asr.llm, asr.tokenizer.eos_id, asr.tokenizer.pad_id, device=self.device)
        return asr.transcribe_waveforms(audio, self._asr_engine, sample_rate=self.tts.vocoder.sample_rate)

    @skip_on_reward_timeout
    def training_step(self, batch: TTSBatch, batch_idx: int) -> None:
        g = self.group_size
        with run_phase(self, "rollout"), torch.no_grad():
            prompt, pmask = self.tts.lm(batch.texts, batch.speakers)
            rollout = self.engine.generate(prompt, pmask, g, self.train_params)
        texts = [t for t in batch.texts for _ in range(g)]
        speakers = [s for s in batch.speakers for _ in range(g)]
        tokens = rollout.response_ids()
        audio = None
        if self.needs_audio:
            with run_phase(self, "flow"):
                audio, _, _ = self.tts.synthesise(tokens, speakers, gen=self._flow_gen)
        with run_phase(self, "reward"), torch.no_grad():
            fields = {"text": texts, "ref": texts, "hyp": self.recognise(tokens, audio), "tokens": tokens,
                      "group": [i // g for i in range(len(texts))], "speaker": speakers}
            if audio is not None:
                fields["audio"] = [w.cpu().numpy() for w in audio]
                fields["sample_rate"] = [self.tts.vocoder.sample_rate] * len(texts)
            out = self.rewards(**fields)
            adv, adv_m = group_advantages(out.total, g, scale=self.algo.scale_advantages)
        with run_phase(self, "policy"):
            metrics, keep = self.policy_phase(batch, rollout, adv, texts, speakers, tokens)
        self.sync_engine()
        extra = {"finished_frac": float(rollout.finished.float().mean())}
        if keep is not None:
            extra["filter_keep_frac"] = float(keep.float().mean())
        log = self.step_log(out, rollout, adv_m["zero_std_frac"], metrics, **extra)
        self.log_dict(log, on_step=True, on_epoch=False, batch_size=len(batch))

    def policy_phase(self, batch: TTSBatch, rollout, adv: torch.Tensor, texts: list[str], speakers: list,
                     tokens: list[list[int]]) -> tuple[dict[str, float], torch.Tensor | None]:
        """The shared policy update (``RLModule.policy_update``) with the TTS LM's scoring and
        this algorithm's terms: GRPO's surrogate + KL, DiffRO (eq. 5-6) + KL, or both with
        DiffRO on the rows the sample filter keeps. Returns the metrics and, with DiffRO, the
        (N,) rows it was applied to."""
        a, g, dev = self.algo, self.group_size, self.device
        ids, mask = rollout.tokens.to(dev), rollout.mask.to(dev)
        adv, finished = adv.to(dev), rollout.finished.to(dev)
        temp = self.train_params.temperature or 1.0
        p = self.prompts_of
        keep = None
        if a.uses_diffro:
            keep = sample_filter(finished, adv if a.name == "combined" else None) if a.sample_filter \
                else torch.ones_like(finished)
            chars = torch.tensor([len(self.tts.lm.tokenizer.encode(t)) for t in texts], device=dev)

        def policy_logp(sl):
            if a.uses_diffro:      # one teacher-forced pass gives both log-probs and the logits DiffRO needs
                logits = self.tts.lm.response_logits(texts[sl], speakers[sl], ids[sl]).float()
                return (logits / temp).log_softmax(-1).gather(-1, ids[sl, :, None])[..., 0] * mask[sl], None, logits
            logp, _ = self.tts.lm(batch.texts[p(sl)], batch.speakers[p(sl)], ids[sl], mask[sl],
                                  group_size=g, temperature=temp)
            return logp, None, None

        def reference_logp(sl):
            return self.reference(batch.texts[p(sl)], batch.speakers[p(sl)], ids[sl], mask[sl],
                                  group_size=g, temperature=temp)[0]

        def loss_terms(sl, logp, old_logp, ref_logp, logits, mean_tokens):
            if a.policy_gradient:
                loss, m = self.grpo_term(logp, old_logp, ref_logp, adv[sl], mask[sl], mean_tokens)
            elif ref_logp is not None:
                loss, m = kl_penalty(logp, ref_logp, mask[sl], beta=a.beta, length_norm=a.length_norm,
                                     mean_tokens=mean_tokens)
            else:
                loss, m = logp.sum() * 0.0, {}
            if a.uses_diffro:
                st = straight_through_tokens(logits, ids[sl], self.tts.lm.n_codes, a.gumbel_tau, a.hard_sample)
                lens = torch.tensor([max(len(t), 1) for t in tokens[sl]], device=dev)
                lp = self.tts.token_asr.log_p_text(st, lens, texts[sl])
                d_loss, dm = diffro_loss(lp, chars[sl], keep[sl] & (lens > 0))
                loss, m = loss + a.diffro_weight * d_loss, {**m, **dm}
            return loss, m

        metrics = self.policy_update(mask, policy_logp, loss_terms,
                                     reference_logp if self.reference is not None else None)
        return metrics, keep

    # ---- validation ---------------------------------------------------------------------
    @torch.no_grad()
    def validation_step(self, batch: TTSBatch, batch_idx: int) -> None:
        with run_phase(self, "validate"):
            prompt, pmask = self.tts.lm(batch.texts, batch.speakers)
            ro = self.engine.generate(prompt, pmask, 1, self.val_params)
            tokens = ro.response_ids()
            audio = self.tts.synthesise(tokens, batch.speakers, gen=torch.Generator().manual_seed(0))[0] \
                if self.waveform_asr is not None else None
            self.val_metric.update(batch.texts, self.recognise(tokens, audio), None)
        ratio = torch.tensor([len(t) / max(int(n), 1) for t, n in zip(tokens, batch.token_lens)])
        self.log("val/len_ratio", ratio.mean(), batch_size=len(batch), sync_dist=True)
        self.log("val/finished_frac", ro.finished.float().mean(), batch_size=len(batch), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        res = self.val_metric.compute()
        self.val_metric.reset()
        self.log_dict({f"val/{k}": float(v) for k, v in res.items() if k != "keyword_recall"}, sync_dist=True)
