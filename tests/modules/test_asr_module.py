"""ASRGRPOModule in-process with a real Trainer: encode once per utterance, the
non-finite guard, exclusive phase timing, on-policy sync."""
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from datamodules import ASRDataModule
from speech_rl.algorithms.config import load_algorithm
from speech_rl.config_files import load_config_group
from speech_rl.modules.optim import load_optim
from speech_rl.callbacks import DeviceHandoff, PhaseTimer, WeightSyncCheck
from speech_rl.modules import ASRGRPOModule
from tests.conftest import TINY_MODEL

ALGO = load_algorithm("grpo", group_size=4, clip_eps=0.2, beta=0.1)
ROLLOUT = load_config_group("rollout", "torch", max_new_tokens=16)
OPTIM = load_optim(lr=1e-3, betas=[0.9, 0.999], grad_clip=1.0)
REWARD = {"terms": {"wer": {"weight": 1.0}, "hallucination": {"gate": True}}}


def _fit(corpus, tmp_path, callbacks, steps=3, **module_kw):
    L.seed_everything(0)
    dm = ASRDataModule(str(corpus / "embedded" / "train.jsonl"), batch_size=3, check_audio="header")
    module = ASRGRPOModule(TINY_MODEL, dict(ALGO, **module_kw.pop("algorithm", {})), REWARD, ROLLOUT,
                           dict(OPTIM, **module_kw.pop("optim", {})))
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    return module, trainer


class CountEncoderRows(Callback):
    def __init__(self):
        self.rows = []

    def on_fit_start(self, trainer, pl_module):
        pl_module.policy.encoder.register_forward_pre_hook(lambda m, args: self.rows.append(args[0].shape[0]))


def test_audio_is_encoded_once_per_utterance_not_per_sample(corpus, tmp_path):
    counter = CountEncoderRows()
    _fit(corpus, tmp_path, [counter], steps=2)
    assert counter.rows == [3, 3]                       # batch of 3 utterances, G = 4 -> never 12


class NaNGradAt(Callback):
    """At step ``step``, make one parameter's gradient NaN (a numerical blow-up in backward)."""

    def __init__(self, step):
        self.step, self.snapshot = step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.snapshot is None:
            p = pl_module.policy.llm.model.layers[0].mlp.up_proj.weight
            self.handle = p.register_hook(lambda g: g * float("nan"))
            self.snapshot = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.snapshot is not None and not hasattr(self, "after"):
            self.handle.remove()
            self.after = {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}


def test_non_finite_gradient_skips_the_step_and_keeps_weights(corpus, tmp_path):
    cb = NaNGradAt(step=1)
    module, trainer = _fit(corpus, tmp_path, [cb, WeightSyncCheck(every_n_steps=1)], steps=3)
    assert module.skipped_steps == 1
    assert all(torch.equal(cb.snapshot[k], cb.after[k]) for k in cb.snapshot)     # skipped step changed nothing
    assert all(torch.isfinite(v).all() for v in module.policy.state_dict().values())
    assert trainer.global_step == 3                     # training went on (a skipped step is not a step)


class NaNGradAlways(Callback):
    def on_train_start(self, trainer, pl_module):
        pl_module.policy.llm.model.layers[0].mlp.up_proj.weight.register_hook(lambda g: g * float("nan"))


def test_persistent_non_finite_gradients_stop_the_run(corpus, tmp_path):
    with pytest.raises(FloatingPointError, match="3 optimiser steps in a row"):
        _fit(corpus, tmp_path, [NaNGradAlways()], steps=5, optim={"max_consecutive_skips": 3})


def test_phase_times_are_exclusive_and_add_up(corpus, tmp_path):
    timer, handoff = PhaseTimer(), DeviceHandoff()
    _fit(corpus, tmp_path, [timer, handoff], steps=2)
    t = timer.last
    for phase in ("encode", "rollout", "reward", "policy", "sync", "handoff", "other", "step"):
        assert phase in t and t[phase] >= 0, phase
    parts = sum(v for k, v in t.items() if k != "step")
    assert parts == pytest.approx(t["step"], rel=1e-6)
    assert handoff.moves > 0 and math.isfinite(handoff.memory["rollout"])


def test_handoff_plan_with_unknown_component_is_named(corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown components \\['vocoder'\\]"):
        _fit(corpus, tmp_path, [DeviceHandoff(plan={"rollout": ["vocoder"]})], steps=1)


def test_extra_validation_sets_are_logged_apart_and_can_pick_the_checkpoint(corpus, tmp_path):
    """data.extra_val: each set is its own loader, logged as <name>/*, with the same
    numbers `speech-rl eval` gives on that manifest; a ModelCheckpoint can monitor it."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from speech_rl.evaluate import score, transcribe_manifest

    emb = corpus / "embedded"
    other = emb / "val_long_test.jsonl"                 # a second set: 6 training utterances (relative wavs)
    other.write_text("".join((emb / "train.jsonl").read_text().splitlines(keepends=True)[:6]))
    L.seed_everything(0)
    dm = ASRDataModule(str(emb / "train.jsonl"), str(emb / "val.jsonl"), batch_size=3, check_audio="header",
                       extra_val={"val_long": str(other)})
    module = ASRGRPOModule(TINY_MODEL, ALGO, REWARD, ROLLOUT, OPTIM)
    best = ModelCheckpoint(dirpath=tmp_path / "ck", monitor="val_long/wer", mode="min", filename="best_val_long",
                           save_top_k=1)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, val_check_interval=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[best],
                        default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert dm.val_names == ["val", "val_long"]
    got = trainer.callback_metrics
    for name, path in (("val", emb / "val.jsonl"), ("val_long", other)):
        want = score(transcribe_manifest(module.policy, path, batch_size=3, max_new_tokens=ROLLOUT["max_new_tokens"]))
        for k in ("wer", "ins", "del"):
            assert float(got[f"{name}/{k}"]) == pytest.approx(want[k], abs=1e-6), (name, k)
    assert (tmp_path / "ck" / "best_val_long.ckpt").is_file() and best.monitor == "val_long/wer"


def test_extra_validation_set_names_are_checked():
    with pytest.raises(ValueError, match="'val' cannot name a validation set"):
        ASRDataModule("t.jsonl", "v.jsonl", extra_val={"val": "x.jsonl"})
    with pytest.raises(ValueError, match="'val long' cannot name"):
        ASRDataModule("t.jsonl", "v.jsonl", extra_val={"val long": "x.jsonl"})
    with pytest.raises(ValueError, match="needs data.val_manifest"):
        ASRDataModule("t.jsonl", extra_val={"val_long": "x.jsonl"})


def test_supervised_module_logs_each_validation_set_apart(corpus, tmp_path):
    from speech_rl.modules.asr_sft import ASRSFTModule

    emb = corpus / "embedded"
    other = emb / "val_long_sft_test.jsonl"
    other.write_text("".join((emb / "train.jsonl").read_text().splitlines(keepends=True)[:4]))
    dm = ASRDataModule(str(emb / "train.jsonl"), str(emb / "val.jsonl"), batch_size=4, check_audio="header",
                       extra_val={"val_long": str(other)})
    trainer = L.Trainer(accelerator="cpu", max_steps=1, val_check_interval=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    trainer.fit(ASRSFTModule(TINY_MODEL, load_optim(lr=1e-3, betas=[0.9, 0.98]), val_max_new_tokens=8), datamodule=dm)
    got = trainer.callback_metrics
    for key in ("val/ce", "val/wer", "val_long/ce", "val_long/wer"):
        assert key in got and math.isfinite(float(got[key])), key
    assert float(got["val/ce"]) != float(got["val_long/ce"])       # two sets, two numbers
