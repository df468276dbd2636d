"""kill -9 in the middle of a run, `resume=auto`, and the same trajectory as a run that
was never interrupted; a corrupt newest checkpoint is skipped for the previous good one."""
import os
import signal
import subprocess
import time

import pytest
import torch

from speech_rl.checkpoint import AtomicCheckpointIO, find_resume_checkpoint
from tests.conftest import cli_path, run_cli

ARGS = ["experiment=asr_grpo_tiny", "trainer.max_steps=8", "trainer.val_check_interval=1000",
        "callbacks.checkpoint.every_n_train_steps=2", "trainer.enable_progress_bar=false", "optim.lr=1e-3"]
TAGS = ("train/reward/mean", "train/loss", "train/kl", "train/response_len")


def by_step(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for f in sorted(run_dir.rglob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in TAGS:
            if tag in ea.Tags()["scalars"]:
                for e in ea.Scalars(tag):
                    out.setdefault(tag, {})[e.step] = e.value      # a resumed run overwrites the same steps
    return out


@pytest.mark.timeout(600)
def test_sigkill_then_resume_auto_reproduces_the_uninterrupted_run(corpus, tmp_path):
    ref = tmp_path / "ref"
    run_cli("train", *ARGS, f"hydra.run.dir={ref}", cwd=tmp_path, data_dir=corpus)
    broken = tmp_path / "broken"
    env = dict(os.environ, SPEECH_RL_DATA=str(corpus))
    proc = subprocess.Popen(cli_path() + ["train", *ARGS, f"hydra.run.dir={broken}", "resume=auto"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = broken / "checkpoints" / "step000004.ckpt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists()
    ck = torch.load(target, map_location="cpu", weights_only=False)
    assert ck["global_step"] in (4, 6)
    out = run_cli("train", *ARGS, f"hydra.run.dir={broken}", "resume=auto", cwd=tmp_path, data_dir=corpus)
    assert "resume=auto: resuming from" in out.stdout + out.stderr
    a, b = by_step(ref), by_step(broken)
    resumed_at = ck["global_step"]
    for tag in TAGS:
        assert sorted(a[tag]) == list(range(8)), tag
        # steps logged after the last checkpoint and before the kill can be lost (TensorBoard had
        # not written them); every step from the resume point on is there again
        assert set(range(resumed_at, 8)) <= set(b[tag]) and set(range(8)) - set(b[tag]) <= set(range(resumed_at - 2, resumed_at))
        for step in b[tag]:
            assert b[tag][step] == pytest.approx(a[tag][step], rel=1e-5, abs=1e-6), (tag, step, a[tag], b[tag])


def test_corrupt_newest_checkpoint_is_skipped(tmp_path, caplog):
    io = AtomicCheckpointIO()
    good = {"state_dict": {}, "global_step": 2, "loops": {}, "optimizer_states": []}
    io.save_checkpoint(good, tmp_path / "step000002.ckpt")
    time.sleep(0.01)
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level("WARNING"):
        assert find_resume_checkpoint(tmp_path) == tmp_path / "step000002.ckpt"
    assert "skipping checkpoint" in caplog.text and "last.ckpt" in caplog.text
    assert not list(tmp_path.glob(".*tmp*"))            # no temp file left behind
    assert find_resume_checkpoint(tmp_path / "none") is None


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    io = AtomicCheckpointIO()
    p = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, p)
    with pytest.raises(Exception):
        io.save_checkpoint({"bad": lambda: 0}, p)        # lambdas do not pickle: fails mid-write
    assert torch.load(p, weights_only=False)["global_step"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from speech_rl.modules.rl_base import rng_state, set_rng_state

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    st = rng_state()
    torch.save({"rng": st}, tmp_path / "c.ckpt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"]      # as Lightning resumes
    set_rng_state(loaded)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
