"""The Whisper judge: greedy, deterministic, pinned weights, scored through Whisper's
English normaliser; `speech-rl eval --system whisper` on a manifest."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.open_world import flite_manifest, need_flite, need_whisper


def test_whisper_normaliser_spells_both_sides_alike():
    from speech_rl.evaluate import score
    from speech_rl.judge import WhisperNormalizer

    rows = [{"ref": "seven hundred and twenty people isn't it", "hyp": "720 people, is not it?"}]
    assert score(rows, WhisperNormalizer())["wer"] == 0.0
    assert score(rows)["wer"] > 0.5                       # the plain normaliser would count them wrong


@need_whisper
def test_judge_refuses_wrong_weights(tmp_path):
    from speech_rl.judge import WhisperJudge

    with pytest.raises(FileNotFoundError, match="model.bin does not exist"):
        WhisperJudge(str(tmp_path))


@need_whisper
@need_flite
def test_eval_system_whisper_cli(tmp_path):
    manifest = flite_manifest(tmp_path / "m")
    out = tmp_path / "w.json"
    proc = run_cli("eval", str(manifest), "--system", "whisper", "--save", str(out), "--hyp-out",
                   str(tmp_path / "h.jsonl"), cwd=tmp_path, data_dir=tmp_path)
    res = json.loads(out.read_text())
    assert res["system"] == "whisper" and res["normalizer"] == "whisper" and res["utterances"] == 4
    assert res["wer"] < 0.3, proc.stdout
    assert "text normaliser: whisper" in proc.stdout
    hyps = [json.loads(x) for x in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [h["id"] for h in hyps] == ["u0", "u1", "u2", "u3"]
    bad = run_cli("eval", str(manifest), cwd=tmp_path, data_dir=tmp_path, check=False)
    assert bad.returncode != 0 and "CHECKPOINT" in bad.stderr
