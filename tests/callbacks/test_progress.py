"""The run's progress bar counts optimiser steps out of max_steps and reaches a pipe."""
from tests.conftest import run_cli


def test_progress_bar_shows_steps_through_a_pipe(corpus, tmp_path):
    out = run_cli("train", "experiment=asr_grpo_tiny", "trainer.max_steps=3", "trainer.val_check_interval=1000",
                  f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, data_dir=corpus)
    text = (out.stdout + out.stderr).replace("\r", "\n")
    assert "step: 100%" in text and "3/3" in text, text[-2000:]
    assert "/-2" not in text                     # Lightning's "Epoch 0/-2" for max_epochs=-1 runs
