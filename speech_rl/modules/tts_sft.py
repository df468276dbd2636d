"""Supervised training of the TTS system RL starts from (``experiment=tts_sft_base``).

The three trainable parts have disjoint parameters and are trained side by side on the
same batches (one pass over the audio for all three):

  lm         cross-entropy of ``speech tokens + eos`` given ``[spk | text | sos]``
  flow       conditional flow-matching loss of the log-mel given tokens and speaker (with a
             mel prior, + prior_weight x its MSE; both also logged alone: flow_cfm, flow_prior)
  token_asr  CTC ``-log P(text | tokens)`` per character, on the tokenised corpus

``loss = lm + flow + token_asr`` (each weight from ``loss_weights``). A part whose
weight is 0 is frozen and its loss is not computed in training
(``experiment=tts_token_asr`` trains the token ASR further on its own, from a supervised
checkpoint); validation still reports all three, and the token ASR's WER on ground-truth
tokens. The system lives at ``self.tts`` so that RL's ``model.init_from`` and
``speech-rl eval-tts`` read the checkpoint directly.
"""
from __future__ import annotations

import lightning as L
import torch

from datamodules.tts import TTSBatch
from speech_rl.metrics import ASRErrorRates, TextNormalizer
from speech_rl.modules.optim import adamw_warmup_cosine
from speech_rl.tts.system import TTSSystem, build_tts_system

PARTS = ("lm", "flow", "token_asr")        # the trained parts of the system, one loss term each


class TTSSFTModule(L.LightningModule):
    """Args: model (``build_tts_system`` kwargs), optim (see ``adamw_warmup_cosine``),
    loss_weights ({lm, flow, token_asr})."""

    def __init__(self, model: dict, optim: dict, loss_weights: dict | None = None, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.tts: TTSSystem = build_tts_system(**model)
        self.weights = {**dict.fromkeys(PARTS, 1.0), **(loss_weights or {})}
        unknown = set(self.weights) - set(PARTS)
        if unknown:
            raise ValueError(f"loss_weights: unknown terms {sorted(unknown)} (known: {', '.join(PARTS)})")
        self.active = tuple(k for k in PARTS if float(self.weights[k]) != 0.0)
        if not self.active:
            raise ValueError(f"loss_weights: every weight is 0 ({self.weights}); nothing would be trained")
        for k in PARTS:
            if k not in self.active:
                getattr(self.tts, k).requires_grad_(False)
        self.val_metric = ASRErrorRates(TextNormalizer())

    def on_fit_start(self) -> None:
        """A flow decoder with mel normalisation (``model.flow.mel_norm_utts`` N > 0) whose
        statistics are not yet fitted (not restored from a checkpoint or ``init_from``) gets
        them from N evenly spaced training utterances: the same rows on every rank."""
        flow = self.tts.flow
        if not flow.mel_norm_utts or bool(flow.mel_stats_fitted) or "flow" not in self.active:
            return
        ds = getattr(self.trainer.datamodule, "train_set", None) if self.trainer.datamodule is not None else None
        if ds is None or not len(ds):
            raise ValueError("model.flow.mel_norm_utts > 0 needs the training set of a TTS datamodule "
                             "(trainer.datamodule.train_set) to fit the mel statistics")
        idx = torch.linspace(0, len(ds) - 1, min(flow.mel_norm_utts, len(ds))).round().long().unique()
        flow.fit_mel_stats([ds[int(i)]["mel"] for i in idx])

    def losses(self, batch: TTSBatch, terms: tuple[str, ...] = PARTS) -> dict[str, torch.Tensor]:
        """The named loss terms of a batch, and ``loss``: their weighted sum."""
        tts, dev = self.tts, self.device
        out = {}
        if "lm" in terms:
            toks = [batch.tokens[i, : int(n)].tolist() for i, n in enumerate(batch.token_lens)]
            ids, mask = tts.lm.target_ids(toks, device=dev)
            logp, _ = tts.lm(batch.texts, batch.speakers, ids, mask)
            out["lm"] = -(logp * mask).sum() / mask.sum()
        if "flow" in terms:
            spk = tts.lm.speaker_ids(batch.speakers, dev)
            # with a prior also flow_cfm / flow_prior, logged apart (flow_cfm is comparable across prior weights)
            out.update(tts.flow.loss_terms(batch.mel, batch.tokens, batch.token_lens, spk))
        if "token_asr" in terms:
            chars = torch.tensor([max(len(tts.token_asr.tokenizer.encode(t)), 1) for t in batch.texts], device=dev)
            nll = -tts.token_asr.log_p_text(batch.tokens, batch.token_lens, batch.texts)
            ok = torch.isfinite(nll)             # a text too long for its tokens cannot be aligned: left out
            out["token_asr"] = (nll[ok] / chars[ok]).mean() if bool(ok.any()) else nll.new_zeros(())
        out["loss"] = sum(self.weights[k] * out[k] for k in terms)
        return out

    def training_step(self, batch: TTSBatch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch, self.active)
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False,
                      batch_size=len(batch))
        return out["loss"]

    @torch.no_grad()
    def validation_step(self, batch: TTSBatch, batch_idx: int) -> None:
        out = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, batch_size=len(batch), sync_dist=True)
        hyps = self.tts.token_asr.transcribe(batch.tokens, batch.token_lens)
        self.val_metric.update(batch.texts, hyps, None)

    def on_validation_epoch_end(self) -> None:
        res = self.val_metric.compute()
        self.val_metric.reset()
        self.log_dict({f"val/token_asr_{k}": float(v) for k, v in res.items() if k != "keyword_recall"},
                      sync_dist=True)

    def configure_optimizers(self):
        return adamw_warmup_cosine([p for p in self.parameters() if p.requires_grad], self.hparams.optim)
