"""The open-vocabulary corpus: manifests per split, held-out speakers only in test splits,
keywords and the OOV report; `speech-rl data synth --preset open` prints it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from speech_rl.data.open_corpus import DEFAULT_SPLITS, TEST_VOICES, TRAIN_VOICES, OpenSplit, parse_splits, split_jobs, synth_open_corpus
from tests.open_world import need_flite, need_fortunes


@need_fortunes
@need_flite
def test_small_open_corpus(tmp_path):
    splits = {"test_short": OpenSplit(5, "test", "test"), "train": OpenSplit(6, "sft"),
              "train_long": OpenSplit(1, "sft", kind="long", min_seconds=8.0, max_seconds=12.0)}
    report = synth_open_corpus(tmp_path, splits, seed=0, jobs=2, progress=False)
    assert report["oov_rate_test_vs_training_text"] >= 0.30
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()] for s in splits}
    test_speakers = {v.speaker for v in TEST_VOICES}
    train_speakers = {v.speaker for v in TRAIN_VOICES}
    assert {r["speaker"] for r in rows["test_short"]} <= test_speakers
    assert {r["speaker"] for r in rows["train"] + rows["train_long"]} <= train_speakers
    long = rows["train_long"][0]
    assert 8.0 <= long["duration"] <= 12.5 and len(long["text"].split()) > 10
    for r in rows["test_short"] + rows["train"]:
        assert (tmp_path / r["audio"]).is_file() and r["text"] == r["text"].lower()
        assert isinstance(r["keywords"], list)
    assert report["splits"]["test_short"]["utterances"] == 5
    # a second call keeps what exists (no re-synthesis) and reports the same
    again = synth_open_corpus(tmp_path, splits, seed=0, jobs=1, progress=False)
    assert again["splits"] == report["splits"]


def test_parse_splits_sizes_and_errors():
    splits = parse_splits("test_long=20, rl_pool=400")
    assert list(splits) == ["test_long", "rl_pool"]
    assert splits["test_long"].kind == "long" and splits["test_long"].voices == "test" and splits["rl_pool"].n == 400
    # the TTS split only when asked for: SFT sentences, training voices, no added noise
    tts = parse_splits("tts_train=50")["tts_train"]
    assert (tts.n, tts.pool, tts.voices, tts.noise_share) == (50, "sft", "train", 0.0)
    assert "tts_train" not in DEFAULT_SPLITS
    for bad in ("rl_pool=ten", "nope=3", "rl_pool=0", ""):
        with pytest.raises(ValueError, match="splits"):
            parse_splits(bad)


@need_fortunes
@need_flite
def test_smaller_split_is_a_prefix_of_the_larger():
    """--splits rl_pool=N gives the first N jobs of the full split: the same sentences and voices."""
    from speech_rl.data.opentext import build_splits

    pools = build_splits(0)
    small = split_jobs("rl_pool", parse_splits("rl_pool=5")["rl_pool"], pools, Path("x"), 0)
    large = split_jobs("rl_pool", parse_splits("rl_pool=12")["rl_pool"], pools, Path("x"), 0)
    assert [(j[0], j[4], j[5]) for j in small] == [(j[0], j[4], j[5]) for j in large[:5]]


def test_synth_splits_needs_open_preset(capsys):
    from speech_rl.cli_data import data_command

    with pytest.raises(SystemExit):
        data_command(["synth", "out", "--splits", "rl_pool=4"])
    assert "--splits needs --preset open" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_command(["synth", "out", "--preset", "open", "--splits", "rl_poool=4"])
    assert "splits are test_short" in capsys.readouterr().err
