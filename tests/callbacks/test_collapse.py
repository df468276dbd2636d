import lightning as L
import pytest
import torch

from datamodules import ASRDataModule
from speech_rl.algorithms.config import load_algorithm
from speech_rl.config_files import load_config_group
from speech_rl.modules.optim import load_optim
from speech_rl.callbacks import CollapseGuard, CollapseRules
from speech_rl.modules import ASRGRPOModule
from tests.conftest import TINY_MODEL


def test_val_wer_rise_needs_patience():
    r = CollapseRules(val_wer_rise=0.1, patience=2)
    assert r.validation(0.30) == (True, None)
    assert r.validation(0.34) == (False, None)          # 13% worse: one strike
    assert r.validation(0.31) == (False, None)          # within 10%: strikes reset
    assert r.validation(0.34) == (False, None)
    best, why = r.validation(0.40)
    assert not best and "val/wer 0.4000 more than 10% above its best 0.3000 for 2 validations" in why


def test_step_rules_use_an_ema_after_warmup():
    r = CollapseRules(kl_max=0.5, repetition_max=None, warmup_steps=3, ema=0.5)
    assert r.step({"train/kl": 2.0}) is None            # warm-up
    r2 = CollapseRules(kl_max=0.5, repetition_max=None, warmup_steps=1, ema=0.5)
    assert r2.step({"train/kl": 0.2}) is None           # EMA 0.2
    assert r2.step({"train/kl": 0.6}) is None           # EMA 0.4
    assert "KL to the reference (EMA 0.700)" in r2.step({"train/kl": 1.0})
    r3 = CollapseRules(kl_max=None, repetition_max=None, reward_drop=0.5, warmup_steps=1, ema=0.0)
    assert r3.step({"train/reward/mean": 1.0}) is None
    assert "fell more than 0.5" in r3.step({"train/reward/mean": 0.2})


def test_guard_rolls_back_to_the_best_validation_and_stops(corpus, tmp_path):
    # val/wer of an untrained model cannot improve past its first value in a few steps;
    # val_wer_rise=-1 makes every later validation "worse", so the guard fires at the 3rd one
    L.seed_everything(0)
    dm = ASRDataModule(str(corpus / "embedded" / "train.jsonl"), str(corpus / "embedded" / "val.jsonl"),
                       batch_size=3, check_audio="header")
    module = ASRGRPOModule(TINY_MODEL, load_algorithm("grpo", group_size=2, beta=0.0),
                           {"terms": {"wer": {}}}, load_config_group("rollout", "torch", max_new_tokens=8,
                                                                     val_max_new_tokens=8),
                           load_optim(lr=1e-2, grad_clip=None))
    guard = CollapseGuard(action="rollback", val_wer_rise=-1.0, patience=2, kl_max=None, repetition_max=None)
    trainer = L.Trainer(accelerator="cpu", max_steps=20, val_check_interval=2, check_val_every_n_epoch=None,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[guard], default_root_dir=tmp_path,
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert guard.reason and "rolled back to the weights of step 2" in guard.reason
    assert trainer.global_step == 6                     # stopped at the 3rd validation, not at 20
    for k, v in module.policy.state_dict().items():
        assert torch.equal(v, guard.best_state[k]), k
    eng = dict(module.engine.lm.named_parameters())
    for k, v in module.policy.llm.named_parameters():
        assert torch.equal(eng[k], v.detach()), k       # the engine got the restored weights


def test_bad_action_is_named():
    with pytest.raises(ValueError, match="'stop' or 'rollback'"):
        CollapseGuard(action="explode")
