"""A folder of broken inputs thrown at `speech-rl train` and `speech-rl eval`: bad rows are
skipped and counted (or stop the run, naming the row), and nothing already written is lost."""
import json

import numpy as np
import soundfile as sf

from tests.conftest import run_cli, scalars


def _broken_manifest(corpus, d):
    good = [json.loads(x) for x in (corpus / "embedded" / "train.jsonl").read_text().splitlines()]
    for r in good:
        r["audio"] = str(corpus / "embedded" / r["audio"])
    (d / "dir.wav").mkdir()
    (d / "text.wav").write_text("not audio")
    sf.write(d / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(d / "silent_empty.wav", np.zeros(0, np.float32), 16000)
    bad = [{"id": "b-missing", "audio": "nope.wav", "text": "x"},
           {"id": "b-dir", "audio": "dir.wav", "text": "x"},
           {"id": "b-text", "audio": "text.wav", "text": "x"},
           {"id": "b-nan", "audio": "nan.wav", "text": "x"},
           {"id": "b-empty", "audio": "silent_empty.wav", "text": "x"},
           {"id": "b-notext", "audio": good[0]["audio"], "text": ""},
           {"id": good[1]["id"], "audio": good[1]["audio"], "text": "duplicate id"}]
    lines = [json.dumps(r) for r in good[:12]] + [json.dumps(r) for r in bad] + ["{broken json"]
    m = d / "broken.jsonl"
    m.write_text("\n".join(lines) + "\n")
    return m


def test_train_skips_and_counts_bad_rows_or_stops_naming_one(corpus, tmp_path):
    m = _broken_manifest(corpus, tmp_path)
    out = run_cli("train", "experiment=asr_grpo_tiny", f"data.train_manifest={m}", "trainer.max_steps=2",
                  "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'r'}",
                  cwd=tmp_path, data_dir=corpus)
    log = out.stdout + out.stderr
    assert "8 bad row(s)" in log and "b-nan" in log and "duplicate id" in log and "malformed JSON" in log
    assert "train/reward/mean" in scalars(tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    fail = run_cli("train", "experiment=asr_grpo_tiny", f"data.train_manifest={m}", "data.on_bad_row=error",
                   "trainer.max_steps=4", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, data_dir=corpus,
                   check=False)
    assert fail.returncode != 0 and "b-missing" in fail.stderr and "does not exist" in fail.stderr
    assert ckpt.read_bytes() == before                  # the failed run lost nothing already written


def test_eval_stops_on_a_bad_row_or_skips_with_a_flag(corpus, tmp_path):
    m = _broken_manifest(corpus, tmp_path)
    tiny = tmp_path / "r"
    run_cli("train", "experiment=asr_grpo_tiny", "trainer.max_steps=1", "trainer.val_check_interval=1",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tiny}", cwd=tmp_path, data_dir=corpus)
    ckpt = str(tiny / "checkpoints" / "last.ckpt")
    fail = run_cli("eval", str(m), ckpt, cwd=tmp_path, data_dir=corpus, check=False)
    assert fail.returncode == 2 and "b-missing" in fail.stderr
    ok = run_cli("eval", str(m), ckpt, "--skip-bad-rows", "--json", "--max-new-tokens", "8", cwd=tmp_path,
                 data_dir=corpus)
    assert json.loads(ok.stdout)["utterances"] == 12
    other = run_cli("eval", str(m), str(tmp_path / "nope.ckpt"), cwd=tmp_path, data_dir=corpus, check=False)
    assert other.returncode == 2 and "nope.ckpt does not exist" in other.stderr
