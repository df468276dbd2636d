"""The ASR module under 2 CPU processes: DDP (gloo) and FSDP2 (ModelParallelStrategy +
fully_shard). WeightSyncCheck fails the run if the engine stops mirroring the
(gathered) policy weights or the replicas drift apart."""
import pytest
import torch

from tests.conftest import run_cli, scalars

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize("trainer", ["ddp_cpu", "fsdp2_cpu"])
def test_two_process_training(trainer, corpus, tmp_path):
    proc = run_cli("train", "experiment=asr_grpo_tiny", f"trainer={trainer}", "trainer.max_steps=4",
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
