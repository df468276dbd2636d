"""Supervised training of the audio LLM (the base model RL starts from).

Loss: cross-entropy of the reference text (+ EOS) given ``[prefix | audio | suffix]``,
plus ``ctc_weight`` x CTC of the characters on the encoder frames (an auxiliary loss that
makes the encoder learn alignments early). Validation decodes greedily through the
same torch engine RL uses. The AudioLLM lives at ``self.policy`` so that RL's
``model.init_from`` and ``speech-rl eval`` read the checkpoint directly.
"""
from __future__ import annotations

import lightning as L
import torch
from torch import nn

from speech_rl.data.dataset import ASRBatch
from speech_rl.data.features import spec_augment
from speech_rl.engines import SamplingParams, TorchEngine
from speech_rl.metrics import PerSetErrorRates, make_normalizer, val_set_names
from speech_rl.models.audio_llm import AudioLLM, build_audio_llm
from speech_rl.modules.optim import adamw_warmup_cosine


class ASRSFTModule(L.LightningModule):
    """Args: model (``build_audio_llm`` kwargs), optim (lr, weight_decay, betas,
    warmup_steps, grad_clip is the Trainer's ``gradient_clip_val``), ctc_weight,
    label_smoothing, val_max_new_tokens, spec_augment (``spec_augment`` kwargs, applied to
    training batches only; null: off), normalizer (plain | whisper: references and
    hypotheses before validation WER; the config's ``text_normalizer``)."""

    def __init__(self, model: dict, optim: dict, ctc_weight: float = 0.3, label_smoothing: float = 0.0,
                 val_max_new_tokens: int = 256, spec_augment: dict | None = None, normalizer: str = "plain",
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.policy: AudioLLM = build_audio_llm(**model)
        enc_dim = self.policy.encoder.d_model
        self.ctc_head = nn.Linear(enc_dim, self.policy.tokenizer.vocab_size) if ctc_weight > 0 else None
        self.val_metrics = PerSetErrorRates(make_normalizer(normalizer))   # one per validation set (data.extra_val)
        self.val_params = SamplingParams(max_new_tokens=val_max_new_tokens, temperature=0.0)
        self.engine: TorchEngine | None = None

    def losses(self, batch: ASRBatch) -> dict[str, torch.Tensor]:
        feats = batch.feats
        if self.training and self.hparams.spec_augment:
            feats = spec_augment(feats, batch.feat_lens, **self.hparams.spec_augment)
        frames, lens = self.policy.encode(feats, batch.feat_lens)
        ids, mask = self.policy.target_ids(batch.texts, device=self.device)
        prompt, pmask = self.policy(frames, lens)
        llm = self.policy.llm
        emb = llm.get_input_embeddings()(ids)
        inputs = torch.cat([prompt, emb], 1)
        am = torch.cat([pmask, torch.ones_like(ids)], 1)
        pos = (am.cumsum(1) - 1).clamp(min=0)
        t = ids.shape[1]
        logits = llm(inputs_embeds=inputs, attention_mask=am, position_ids=pos, use_cache=False,
                     logits_to_keep=t + 1).logits[:, :t].float()
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), ids.masked_fill(mask == 0, -100),
                                         label_smoothing=self.hparams.label_smoothing)
        out = {"ce": ce, "loss": ce}
        if self.ctc_head is not None:
            tok = self.policy.tokenizer
            targets = [torch.tensor(tok.encode(s), dtype=torch.long) for s in batch.texts]
            logp = torch.log_softmax(self.ctc_head(frames).float(), -1).transpose(0, 1)      # (T', B, V)
            ctc = nn.functional.ctc_loss(logp, torch.cat(targets).to(self.device), lens,
                                         torch.tensor([len(x) for x in targets], device=self.device),
                                         blank=tok.pad_id, zero_infinity=True)
            out["ctc"] = ctc
            out["loss"] = ce + self.hparams.ctc_weight * ctc
        return out

    def training_step(self, batch: ASRBatch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, on_step=True, on_epoch=False,
                      batch_size=len(batch))
        return out["loss"]

    def on_validation_start(self) -> None:
        tok = self.policy.tokenizer
        if self.engine is None:
            self.engine = TorchEngine(self.policy.llm, tok.eos_id, tok.pad_id, device=self.device)
        self.engine.update_weights((n, p.detach()) for n, p in self.policy.llm.named_parameters())

    @torch.no_grad()
    def validation_step(self, batch: ASRBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        hyps = self.policy.transcribe(batch.feats, batch.feat_lens, self.engine, self.val_params)
        self.val_metrics.get(dataloader_idx, self.device).update(batch.texts, hyps, batch.keywords)
        name = val_set_names(self._trainer)[dataloader_idx]
        self.log(f"{name}/ce", self.losses(batch)["ce"], batch_size=len(batch), sync_dist=True,
                 add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute_and_reset(val_set_names(self._trainer)), sync_dist=True)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.parameters(), self.hparams.optim)
