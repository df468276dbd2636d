"""The open-vocabulary corpus: manifests per split, held-out speakers only in test splits,
keywords and the OOV report; `speech-rl data synth --preset open` prints it."""
from __future__ import annotations

import json

from speech_rl.data.open_corpus import TEST_VOICES, TRAIN_VOICES, OpenSplit, synth_open_corpus
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
