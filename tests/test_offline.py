"""Training and evaluation with the network cut: HF offline variables plus a socket guard
that fails any connection attempt."""
import socket

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from speech_rl.evaluate import load_policy, score, transcribe_manifest
from speech_rl.train import train


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"network disabled in this test: connection to {args[1:] or args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_train_and_eval_without_network(no_network, corpus, tmp_path):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=asr_grpo_tiny", "trainer.max_steps=2",
                                          "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                                          f"paths.data_dir={corpus}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    metrics = train(cfg)
    assert "val/wer" in metrics
    policy = load_policy(tmp_path / "checkpoints" / "last.ckpt")
    res = score(transcribe_manifest(policy, corpus / "embedded" / "val.jsonl", max_new_tokens=16))
    assert res["utterances"] == 8
    assert no_network == []                              # nothing even tried to connect
