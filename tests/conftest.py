"""Shared fixtures: a small eSpeak NG corpus synthesised once per session, a tiny model
config, and a helper that runs the real `speech-rl` command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_MODEL = {
    "tokenizer": {"_target_": "speech_rl.data.tokenizer.CharTokenizer"},
    "encoder": {"_target_": "speech_rl.models.ConvTransformerEncoder", "n_mels": 80, "d_model": 64,
                "n_layers": 2, "n_heads": 4, "dropout": 0.0},
    "projector": {"stack": 2},
    "llm": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2},
}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Directory with train.jsonl (24 utts), val.jsonl (8) and their wavs; also the
    layout `speech-rl train` expects under SPEECH_RL_DATA (embedded/...)."""
    from speech_rl.data.synth import synth_corpus

    root = tmp_path_factory.mktemp("data")
    synth_corpus(root / "embedded", {"train": 24, "val": 8}, seed=0)
    return root


def cli_path() -> list[str]:
    exe = Path(sys.executable).parent / "speech-rl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "speech_rl.cli"]


def run_cli(*args: str, cwd: Path, data_dir: Path, timeout: int = 300, check: bool = True
            ) -> subprocess.CompletedProcess:
    """Run the real `speech-rl ARGS...` in a subprocess with ``data_dir`` as SPEECH_RL_DATA."""
    env = dict(os.environ, SPEECH_RL_DATA=str(data_dir), PYTHONUNBUFFERED="1")
    proc = subprocess.run(cli_path() + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"speech-rl {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """All TensorBoard scalars under run_dir: tag -> values in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[float]] = {}
    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {run_dir}"
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in ea.Scalars(tag))
    return out




LENGTH_PLUGIN = '''
from rewards import register_reward


@register_reward("my_len")
def my_len(hyp, **_):
    """Shorter is better: minus the characters of the hypothesis / 10."""
    return [-len(h) / 10.0 for h in hyp]
'''


def length_learning_run(corpus: Path, run_dir: Path, *overrides: str) -> dict[str, list[float]]:
    """The learning test of every engine and model path: 24 GRPO steps of the tiny ASR model
    with one reward from a plugin file outside the package (shorter is better); asserts the
    response length halves and the reward rises, returns the run's scalars."""
    import numpy as np

    plugin = run_dir / "outside" / "my_rewards.py"
    plugin.parent.mkdir(parents=True)
    plugin.write_text(LENGTH_PLUGIN)
    run_cli("train", "experiment=asr_grpo_tiny", f"reward.plugins=[{plugin}]", "~reward.terms",
            "+reward.terms={my_len:{weight:1.0}}", "trainer.max_steps=24", "trainer.val_check_interval=1000",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", "rollout.max_new_tokens=64",
            "rollout.val_max_new_tokens=96", *overrides, cwd=run_dir, data_dir=corpus)
    tags = scalars(run_dir)
    assert "train/reward/my_len" in tags
    length, reward = tags["train/response_len"], tags["train/reward/mean"]
    first, last = np.mean(length[:3]), np.mean(length[-5:])
    assert last < 0.5 * first, f"response length did not fall: {first:.1f} -> {last:.1f} ({length})"
    assert np.mean(reward[-5:]) > np.mean(reward[:3]) + 0.5, f"reward did not rise: {reward}"
    return tags
