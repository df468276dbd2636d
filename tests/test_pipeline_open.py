"""The open-world main job (``speech-rl pipeline``, ``--world open``) end to end at a tiny
scale: real voices, Whisper tiny.en as the base, real GRPO steps (the numbers mean nothing)."""
import json

import pytest

from tests.conftest import run_cli
from tests.open_world import need_flite, need_fortunes, need_whisper

TINY = ["--scale", "0.05", "--max-new-tokens", "40", "--sizes", "D0=40,D2=40"]
TINY_RL = ["--rl-steps", "2", "data.batch_size=2", "algorithm.group_size=2", "rollout.max_new_tokens=24",
           "callbacks.checkpoint.every_n_train_steps=2", "trainer.val_check_interval=2"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@need_whisper
@need_flite
@need_fortunes
def test_open_pipeline_tiny(tmp_path):
    w = tmp_path / "w"
    out = run_cli("pipeline", "--work", str(w), *TINY, *TINY_RL, cwd=tmp_path, data_dir=tmp_path, timeout=900).stdout
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[2].startswith("| - | - | 1 |") and table[3].startswith("| R1,R2 | D0,D2 | 1 |")
    assert "RL vs base: test_long WER" in out and "after Whisper's English normaliser" in out
    assert "stage times (s): synth" in out and "base/pretrained.ckpt; RL run:" in out
    sel = json.loads((w / "data" / "open" / "rl" / "selection.json").read_text())
    assert sel["selected"] == {"D0": 2, "D2": 2} and sel["systems"] == 0
    report = json.loads((w / "data" / "open" / "corpus_report.json").read_text())
    test_speakers = set(report["splits"]["test_short"]["speakers"]) | set(report["splits"]["test_long"]["speakers"])
    assert not test_speakers & set(report["splits"]["rl_pool"]["speakers"])
    for run in ("base_eval", "rl"):
        ev = json.loads((w / "runs" / run / "eval" / "test_short.json").read_text())
        assert ev["utterances"] == 5 and ev["normalizer"] == "whisper"
    overrides = (w / "runs" / "rl" / ".hydra" / "overrides.yaml").read_text()
    assert "experiment=asr_rl_open_main" in overrides and "pretrained.ckpt" in overrides
    # speech-rl eval scores a checkpoint with the normaliser its run was trained with
    ev = run_cli("eval", str(w / "data" / "open" / "test_short.jsonl"), str(w / "runs" / "rl" / "checkpoints" /
                 "last.ckpt"), "--max-new-tokens", "40", cwd=tmp_path, data_dir=tmp_path).stdout
    assert "text normaliser: whisper" in ev
    # a second run reuses every stage
    again = run_cli("pipeline", "--work", str(w), *TINY, cwd=tmp_path, data_dir=tmp_path, timeout=300).stdout
    assert again.splitlines()[:4] == out.splitlines()[:4]
    # the folder is tied to its base; D1 / D3 need a second system: both refused, nothing changes
    before = (w / "report.md").read_text()
    other = run_cli("pipeline", "--work", str(w), "--base", str(w / "runs" / "rl" / "checkpoints" / "last.ckpt"),
                    cwd=tmp_path, data_dir=tmp_path, check=False)
    assert other.returncode == 2 and "holds stages made from base" in other.stderr, other.stderr[-2000:]
    d1 = run_cli("pipeline", "--work", str(tmp_path / "w2"), "--sizes", "D1=10", cwd=tmp_path, data_dir=tmp_path,
                 check=False)
    assert d1.returncode == 2 and "D1 need a second system's hypotheses" in d1.stderr, d1.stderr[-2000:]
    assert (w / "report.md").read_text() == before
