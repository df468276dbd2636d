"""Faults of a real cluster: preemption (SIGTERM at a random step, SIGUSR1), a rollout
engine that dies mid-run, a reward that hangs, a disk that fills during a checkpoint."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from rewards import RewardSet, RewardTimeout, register_reward
from speech_rl.checkpoint import CheckpointWriteError, atomic_torch_save, checkpoint_problem
from tests.conftest import cli_path, run_cli
from tests.modules.test_resume import ARGS, TAGS, by_step


def _start(args, run_dir: Path, corpus: Path, tmp_path: Path, new_session: bool = False) -> subprocess.Popen:
    """``speech-rl train`` in the background (``new_session``: in its own process group)."""
    env = dict(os.environ, SPEECH_RL_DATA=str(corpus), PYTHONUNBUFFERED="1")
    return subprocess.Popen(cli_path() + ["train", *args, f"hydra.run.dir={run_dir}", "resume=auto"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=new_session)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared (exit {proc.poll()})"


# ---- preemption ---------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_sigterm_at_a_random_step_then_resume_auto_is_exact(corpus, tmp_path):
    """SIGTERM lands somewhere after step 2's or step 4's checkpoint; the run finishes that step, writes
    preempted.ckpt, exits 143 saying how to resume, and resume=auto reproduces every logged
    scalar of the uninterrupted run."""
    ref = tmp_path / "ref"
    run_cli("train", *ARGS, f"hydra.run.dir={ref}", cwd=tmp_path, data_dir=corpus)
    run = tmp_path / "run"
    proc = _start(ARGS, run, corpus, tmp_path)
    rng = random.Random()
    after = rng.choice([2, 4])                          # a random point of steps 2-6
    _wait_for(run / "checkpoints" / f"step{after:06d}.ckpt", proc)
    time.sleep(rng.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, (after, out[-3000:])
    assert "preempted" in out and "resume=auto" in out, out[-3000:]
    pre = run / "checkpoints" / "preempted.ckpt"
    assert checkpoint_problem(pre) is None
    stopped_at = torch.load(pre, map_location="cpu", weights_only=False)["global_step"]
    assert 2 <= stopped_at < 8
    assert not list((run / "checkpoints").glob(".*tmp*"))
    # read before resuming: the resumed run overwrites last.ckpt
    steps = {str(p): torch.load(p, map_location="cpu", weights_only=False)["global_step"]
             for p in (run / "checkpoints").glob("*.ckpt")}
    again = run_cli("train", *ARGS, f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path, data_dir=corpus)
    # the newest checkpoint holds the preemption step (preempted.ckpt, or last.ckpt / stepN.ckpt that
    # ModelCheckpoint wrote in the same hook right after it)
    import re

    used = re.search(r"resume=auto: resuming from (\S+\.ckpt)", again.stdout + again.stderr).group(1)
    assert steps[used] == stopped_at, (used, steps)
    a, b = by_step(ref), by_step(run)
    for tag in TAGS:
        assert sorted(b[tag]) == list(range(8)), (tag, sorted(b[tag]), stopped_at)
        for step in range(8):
            assert b[tag][step] == pytest.approx(a[tag][step], rel=1e-5, abs=1e-6), (tag, step, stopped_at)


@pytest.mark.timeout(600)
def test_sigusr1_preempts_like_sigterm(corpus, tmp_path):
    run = tmp_path / "run"
    proc = _start(ARGS + ["trainer.max_steps=40"], run, corpus, tmp_path)
    _wait_for(run / "checkpoints" / "step000002.ckpt", proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out[-3000:]
    assert "received SIGUSR1" in out and checkpoint_problem(run / "checkpoints" / "preempted.ckpt") is None


@pytest.mark.timeout(600)
def test_sigterm_to_the_whole_process_group_with_dataloader_workers(corpus, tmp_path):
    """SLURM's scancel signals every process of the job, DataLoader workers included: the workers
    ignore it, the main process finishes its step, writes preempted.ckpt and exits 143 (without
    the workers' own handling the run failed with 'DataLoader worker ... killed by signal')."""
    run = tmp_path / "run"
    proc = _start(ARGS + ["trainer.max_steps=40", "data.num_workers=1"], run, corpus, tmp_path, new_session=True)
    _wait_for(run / "checkpoints" / "step000002.ckpt", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out[-3000:]
    assert "killed by signal" not in out, out[-3000:]
    assert checkpoint_problem(run / "checkpoints" / "preempted.ckpt") is None


# ---- engine death ---------------------------------------------------------------------------
def test_engine_failure_names_engine_and_step_and_keeps_checkpoints(corpus, tmp_path, monkeypatch):
    """The torch engine raises on its 4th generate call (as a dead engine process would):
    the run stops with an EngineError naming the engine, the call and the step; the
    checkpoints written before load, and no temp file is left."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from speech_rl.engines import EngineError, TorchEngine
    from speech_rl.train import train

    real = TorchEngine.generate
    calls = {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("engine worker process exited (signal 9)")
        return real(self, *a, **k)

    monkeypatch.setattr(TorchEngine, "generate", dying)
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose("train", overrides=ARGS + [f"paths.data_dir={corpus}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(EngineError, match=r"rollout engine TorchEngine\.generate failed at step 3: RuntimeError: "
                                          r"engine worker process exited"):
        train(cfg)
    ckpts = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts and all(checkpoint_problem(p) is None for p in ckpts)
    assert torch.load(tmp_path / "checkpoints" / "step000002.ckpt", weights_only=False)["global_step"] == 2
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


# ---- a reward that hangs --------------------------------------------------------------------
@register_reward("test_sleeps_forever")
def _sleeps_forever(hyp, **_):
    time.sleep(3600)
    return [0.0] * len(hyp)


def test_reward_timeout_names_the_reward():
    rs = RewardSet({"wer": {}, "test_sleeps_forever": {"weight": 0.1}}, timeout_s=0.5)
    t0 = time.perf_counter()
    with pytest.raises(RewardTimeout, match=r"reward 'test_sleeps_forever' did not return within "
                                            r"reward.timeout_s=0.5 s for 2 samples"):
        rs(hyp=["a b", "a"], ref=["a b", "a b"])
    assert time.perf_counter() - t0 < 5
    # a reward that raises inside the timeout thread is still named, not turned into a score
    rs = RewardSet({"wer": {}}, timeout_s=5)
    with pytest.raises(Exception, match="reward 'wer' raised"):
        rs(hyp=["a"], ref=None)
    with pytest.raises(Exception, match="on_timeout must be"):
        RewardSet({"wer": {}}, timeout_s=1, on_timeout="ignore")


PLUGIN = '''
import time
from rewards import register_reward

CALLS = {"n": 0}

@register_reward("sleeps_on_second_call")
def sleeps(hyp, **_):
    CALLS["n"] += 1
    if CALLS["n"] == 2:
        time.sleep(3600)
    return [0.0] * len(hyp)
'''


@pytest.mark.timeout(600)
def test_hanging_reward_stops_the_run_or_skips_the_batch(corpus, tmp_path):
    plugin = tmp_path / "sleepy.py"
    plugin.write_text(PLUGIN)
    common = ARGS + [f"reward.plugins=[{plugin}]", "+reward.terms.sleeps_on_second_call={weight: 0.1}",
                     "reward.timeout_s=3", "trainer.max_steps=4"]
    stop = run_cli("train", *common, f"hydra.run.dir={tmp_path / 'stop'}", cwd=tmp_path, data_dir=corpus,
                   check=False)
    assert stop.returncode != 0
    assert "reward 'sleeps_on_second_call' did not return within reward.timeout_s=3 s" in stop.stderr
    skip = run_cli("train", *common, "reward.on_timeout=skip", f"hydra.run.dir={tmp_path / 'skip'}", cwd=tmp_path,
                   data_dir=corpus)
    assert "batch skipped" in skip.stdout + skip.stderr
    from tests.conftest import scalars

    s = scalars(tmp_path / "skip")
    # one batch skipped: the count is 1 from that step on; the run still made its 4 optimiser steps
    assert set(s["train/reward_timeouts"]) == {1.0}
    assert torch.load(tmp_path / "skip" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


# ---- a full disk during a checkpoint --------------------------------------------------------
def test_failed_checkpoint_write_names_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, p)

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match=rf"could not write checkpoint {p}: No space left on device"):
        atomic_torch_save({"global_step": 2}, p)
    monkeypatch.undo()
    assert torch.load(p, weights_only=False)["global_step"] == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_error_that_is_not_a_write_failure_is_not_reported_as_one(tmp_path, monkeypatch):
    """A RuntimeError raised while saving that has nothing to do with the disk (here: what the
    SIGCHLD handler raises when a DataLoader worker dies) comes out as it is; the old file stays."""
    p = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, p)

    def worker_died(_fd):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    monkeypatch.setattr(os, "fsync", worker_died)
    with pytest.raises(RuntimeError, match="DataLoader worker") as info:
        atomic_torch_save({"global_step": 2}, p)
    assert not isinstance(info.value, CheckpointWriteError)
    monkeypatch.undo()
    assert torch.load(p, weights_only=False)["global_step"] == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.fixture
def small_fs(tmp_path):
    """A 30 MiB tmpfs (root only; a tiny run's checkpoint is ~12 MB); skips where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.timeout(600)
def test_run_on_a_filling_disk_stops_naming_the_checkpoint(corpus, tmp_path, small_fs):
    """Checkpoints go to a 30 MiB file system: the first ones fit, a later one does not. The
    run stops with the path and 'No space left on device'; every checkpoint written before
    still loads and no temp file is left."""
    run = tmp_path / "run"
    out = run_cli("train", *ARGS, "trainer.max_steps=40", f"callbacks.checkpoint.dirpath={small_fs}",
                  f"hydra.run.dir={run}", cwd=tmp_path, data_dir=corpus, check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "No space left on device" in text and f"could not write checkpoint {small_fs}/" in text, text[-3000:]
    left = sorted(small_fs.glob("*.ckpt"))
    assert left and all(checkpoint_problem(p) is None for p in left)
    assert not list(small_fs.glob(".*tmp*"))
