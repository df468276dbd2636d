"""The ASR pipeline end to end at a tiny scale (every stage really runs; the numbers mean nothing)."""
import json

import pytest

from tests.conftest import run_cli

TINY = ["--scale", "0.01", "--max-new-tokens", "40", "--sizes", "D0=100,D1=100,D2=100,D3=100"]
TINY_RL = ["--rl-steps", "2", "trainer.val_check_interval=2", "data.batch_size=2", "rollout.max_new_tokens=24",
           "rollout.val_max_new_tokens=24"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pipeline_tiny(tmp_path, corpus):
    w = tmp_path / "w"
    out = run_cli("pipeline", "--world", "template", "--work", str(w), "--base", "train", "--base-steps", "8", "--base-long-steps", "1",
                  *TINY, *TINY_RL, cwd=tmp_path, data_dir=corpus, timeout=900).stdout
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[2].startswith("| - | - | 1 |") and table[3].startswith("| R1,R2")
    assert "RL vs base: test_long WER" in out and "stage times (s): synth" in out
    assert "RL vs base on the RL pool's voices (held-out long audio): val_long WER" in out
    # the base trained in two stages, stage 2 from stage 1
    assert (w / "base" / "stage1.ckpt").exists() and (w / "base" / "base.ckpt").exists()
    assert "model.init_from=" in (w / "runs" / "base_long" / ".hydra" / "overrides.yaml").read_text()
    sel = json.loads((w / "data" / "asr" / "rl" / "selection.json").read_text())
    assert sel["systems"] == 2 and set(sel["selected"]) == {"D0", "D1", "D2", "D3"}
    # RL data comes from the pools with no sentence of the test sets, and the pipeline checks it
    assert sel["pools"] == ["rl_pool_heldout", "rl_pool_long_heldout"] and sel["share_a_test_sentence"] == 0
    assert "from rl_pool_heldout, rl_pool_long_heldout; RL utterances sharing a sentence with the test sets: 0" in out
    for run in ("base_eval", "rl"):
        for s in ("test_short", "test_long"):
            assert json.loads((w / "runs" / run / "eval" / f"{s}.json").read_text())["utterances"] >= 2
    # a second run reuses every stage
    again = run_cli("pipeline", "--world", "template", "--work", str(w), "--base", "train", *TINY, cwd=tmp_path, data_dir=corpus,
                    timeout=300).stdout
    assert again.splitlines()[:3] == out.splitlines()[:3]
    # the default, the shipped base: no base training and no training splits; its CTC
    # head is the second system
    w2 = tmp_path / "w2"
    out2 = run_cli("pipeline", "--world", "template", "--work", str(w2), *TINY, *TINY_RL, cwd=tmp_path, data_dir=corpus, timeout=600).stdout
    assert "speech_rl/assets/asr_base.pt; RL run:" in out2
    assert not (w2 / "runs" / "base").exists() and not (w2 / "data" / "asr" / "train.jsonl").exists()
    assert (w2 / "data" / "asr" / "test_long.jsonl").exists()
    assert {p.name for p in (w2 / "hyps").iterdir()} == {"llm.jsonl", "ctc.jsonl"}
    # a work folder is tied to its base: another base is refused, nothing there changes
    report = (w2 / "report.md").read_text()
    for other in (["--base", str(w / "base" / "base.ckpt")], ["--base", "train"]):
        res = run_cli("pipeline", "--world", "template", "--work", str(w2), *other, cwd=tmp_path, data_dir=corpus, check=False)
        assert res.returncode == 2 and "holds stages made from base" in res.stderr, res.stderr[-2000:]
        assert "use another --work" in res.stderr and (w2 / "report.md").read_text() == report
    # ... and to its RL pools; an unknown pool is named
    res = run_cli("pipeline", "--world", "template", "--work", str(w2), "--pools", "rl_pool,rl_pool_long", cwd=tmp_path, data_dir=corpus,
                  check=False)
    assert res.returncode == 2 and "holds hypotheses and RL data of the pools rl_pool_heldout" in res.stderr
    res = run_cli("pipeline", "--world", "template", "--work", str(tmp_path / "w4"), "--pools", "rl_pool,nope", cwd=tmp_path,
                  data_dir=corpus, check=False)
    assert res.returncode == 2 and "unknown corpus splits ['nope']" in res.stderr and not (tmp_path / "w4").exists()
    missing = run_cli("pipeline", "--world", "template", "--work", str(tmp_path / "w3"), "--base", str(tmp_path / "nope.ckpt"),
                      cwd=tmp_path, data_dir=corpus, check=False)
    assert missing.returncode == 2 and "nope.ckpt does not exist" in missing.stderr
    assert not (tmp_path / "w3").exists()
