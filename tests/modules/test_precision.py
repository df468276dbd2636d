"""trainer.precision=bf16-mixed on CPU (AMX here): the policy's scoring runs under bf16
autocast (its numbers move by bf16 rounding, not more), rollouts stay the engine's, and the
learning test still learns."""
import numpy as np
import pytest

from tests.conftest import length_learning_run, run_cli, scalars


def test_bf16_mixed_scores_close_to_fp32_and_learns(corpus, tmp_path):
    runs = {}
    for prec in ("32-true", "bf16-mixed"):
        run_cli("train", "experiment=asr_grpo_tiny", "trainer.max_steps=2", "trainer.val_check_interval=1000",
                "trainer.enable_progress_bar=false", f"trainer.precision={prec}", f"hydra.run.dir={tmp_path / prec}",
                cwd=tmp_path, data_dir=corpus)
        runs[prec] = scalars(tmp_path / prec)
    fp32, bf16 = runs["32-true"], runs["bf16-mixed"]
    # the same rollouts (the engine samples in fp32 either way) ...
    assert bf16["train/response_len"] == fp32["train/response_len"]
    assert bf16["train/reward/mean"] == fp32["train/reward/mean"]
    # ... scored under autocast: not bit-equal (bf16 took effect), equal to bf16 rounding
    assert bf16["train/entropy"] != fp32["train/entropy"]
    np.testing.assert_allclose(bf16["train/entropy"], fp32["train/entropy"], rtol=1e-3)
    np.testing.assert_allclose(bf16["train/grad_norm"], fp32["train/grad_norm"], rtol=0.1)
    length_learning_run(corpus, tmp_path / "learn", "trainer.precision=bf16-mixed", "optim.lr=1e-3",
                        "algorithm.beta=0.0")
