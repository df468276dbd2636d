"""Hugging Face datasets, Kaldi data directories and Lhotse manifests read through the same
row contract as the project's JSONL; the round trip JSONL -> Kaldi / Lhotse -> JSONL; the
broken variants named row by row."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from speech_rl.data.export import export_kaldi, export_lhotse
from speech_rl.data.formats import SourceError, as_source, detect_format
from speech_rl.data.manifest import ManifestError, read_manifest, utterance_audio, utterance_row, write_manifest

datasets = pytest.importorskip("datasets", reason="pip install -e '.[formats]'")
lhotse = pytest.importorskip("lhotse", reason="pip install -e '.[formats]'")

SR = 16000
TEXTS = ["the cat sat on the mat", "a quick brown fox", "hello world again", "seven green apples"]


def _wav(path, seconds, seed, channels=1, rate=SR):
    x = (np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)) * 0.1).astype("float32")
    sf.write(str(path), x if channels > 1 else x[:, 0], rate, subtype="PCM_16")
    return sf.read(str(path), dtype="float32")[0]


@pytest.fixture
def wavs(tmp_path):
    """Four utterance wavs (0.6-0.9 s) and their JSONL manifest."""
    d = tmp_path / "wav"
    d.mkdir()
    rows = []
    for i, text in enumerate(TEXTS):
        _wav(d / f"u{i}.wav", 0.6 + 0.1 * i, i)
        rows.append({"id": f"u{i}", "audio": f"wav/u{i}.wav", "text": text, "speaker": f"spk{i % 2}",
                     "keywords": [text.split()[-1]]})
    write_manifest(tmp_path / "m.jsonl", rows)
    return tmp_path / "m.jsonl"


def _kaldi(d, lines: dict[str, list[str]]):
    d.mkdir(parents=True, exist_ok=True)
    for name, ls in lines.items():
        (d / name).write_text("".join(x + "\n" for x in ls))
    return d


@pytest.fixture
def long_recording(tmp_path):
    """One 3 s recording with three utterances in it, as a Kaldi directory with segments."""
    audio = _wav(tmp_path / "rec.wav", 3.0, 7)
    d = _kaldi(tmp_path / "kaldi_seg", {
        "wav.scp": [f"rec1 {tmp_path / 'rec.wav'}"],
        "segments": ["a rec1 0.00 0.90", "b rec1 1.00 2.10", "c rec1 2.20 -1"],
        "text": ["a first words", "b second words", "c third words"],
        "utt2spk": ["a s1", "b s1", "c s2"]})
    return d, audio


def test_formats_are_found_from_the_path(wavs, long_recording, tmp_path):
    utts, _ = read_manifest(wavs)
    ds = datasets.Dataset.from_dict({"audio": [str(u.audio) for u in utts], "text": TEXTS})
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "hf"))
    export_lhotse(utts, tmp_path / "lh" / "cuts.jsonl.gz")
    assert detect_format(wavs) == "jsonl"
    assert detect_format(long_recording[0]) == "kaldi"
    assert detect_format(tmp_path / "hf") == "hf"
    assert detect_format(tmp_path / "lh" / "cuts.jsonl.gz") == "lhotse"
    assert detect_format(tmp_path / "lh") == "lhotse"
    with pytest.raises(SourceError, match="neither a Kaldi data directory"):
        detect_format(tmp_path / "wav")
    with pytest.raises(SourceError, match="format 'csv' is not one of"):
        as_source({"path": str(wavs), "format": "csv"})
    with pytest.raises(SourceError, match=r"fields \['transcript'\] are not row keys"):
        as_source({"path": str(wavs), "fields": {"transcript": "x"}})


def test_kaldi_directory_without_segments(wavs, tmp_path):
    utts, _ = read_manifest(wavs)
    d = _kaldi(tmp_path / "k", {"wav.scp": [f"{u.id} {u.audio}" for u in utts],
                                "text": [f"{u.id} {u.text}" for u in utts],
                                "utt2spk": [f"{u.id} {u.speaker}" for u in utts]})
    got, bad = read_manifest(d, check_audio="full")
    assert not bad.rows
    assert [(u.id, u.text, u.speaker, u.offset) for u in got] == [(u.id, u.text, u.speaker, None) for u in utts]
    assert [u.duration for u in got] == pytest.approx([u.duration for u in utts])
    np.testing.assert_array_equal(utterance_audio(got[2], SR), utterance_audio(utts[2], SR))


def test_kaldi_segments_cut_the_recording(long_recording):
    d, audio = long_recording
    utts, bad = read_manifest(d, check_audio="full")
    assert not bad.rows
    assert [(u.id, u.speaker, u.offset) for u in utts] == [("a", "s1", 0.0), ("b", "s1", 1.0), ("c", "s2", 2.2)]
    assert [u.duration for u in utts] == pytest.approx([0.9, 1.1, 0.8], abs=1e-3)   # c runs to the end (-1)
    np.testing.assert_allclose(utterance_audio(utts[1], SR), audio[16000:33600], atol=1e-6)
    np.testing.assert_allclose(utterance_audio(utts[2], SR), audio[35200:], atol=1e-6)


def test_broken_kaldi_directories_name_the_row_and_the_reason(long_recording, tmp_path):
    d, _ = long_recording
    broken = _kaldi(tmp_path / "broken", {
        "wav.scp": [f"rec1 {d.parent / 'rec.wav'}", f"rec2 {tmp_path / 'gone.wav'}", "rec3 sox in.flac -t wav - |"],
        "segments": ["ok rec1 0.0 1.0", "missing rec2 0.0 1.0", "past rec1 2.5 3.5", "noaudio rec9 0 1",
                     "pipe rec3 0 1"],
        "text": ["ok fine", "missing its wav", "past the end", "noaudio at all", "pipe command", "nosegment here"]})
    utts, bad = read_manifest(broken, on_bad_row="skip")
    assert [u.id for u in utts] == ["ok"]
    why = dict(bad.rows)
    assert "does not exist" in why["id 'missing'"] and str(tmp_path / "gone.wav") in why["id 'missing'"]
    assert "past the end of its recording (3.000s)" in why["id 'past'"]
    assert "recording 'rec9' is not in wav.scp" in why["id 'noaudio'"]
    assert "pipe command" in why["id 'pipe'"]
    assert "not in segments" in why["id 'nosegment'"]
    with pytest.raises(ManifestError, match=r"broken, id 'missing': audio file .*gone.wav does not exist"):
        read_manifest(broken)
    (tmp_path / "nowav").mkdir()
    (tmp_path / "nowav" / "text").write_text("x hello\n")
    with pytest.raises(ManifestError, match="format 'kaldi'|wav.scp|neither"):
        read_manifest({"path": str(tmp_path / "nowav"), "format": "kaldi"})


def test_hf_dataset_saved_to_disk_with_a_split_and_mapped_fields(wavs, tmp_path):
    utts, _ = read_manifest(wavs)
    ds = datasets.Dataset.from_dict({"audio": [str(u.audio) for u in utts], "sentence": TEXTS,
                                     "client": [u.speaker for u in utts], "key": [u.id for u in utts]})
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=SR))
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(str(tmp_path / "hfdd"))
    for u in utts:                              # save_to_disk embedded the audio: the files can go
        u.audio.unlink()
    with pytest.raises(ManifestError, match=r"splits \['train', 'test'\]; choose one with split"):
        read_manifest(tmp_path / "hfdd")
    with pytest.raises(ManifestError, match=r"no text column 'text' \(columns: .*sentence.*\); map it"):
        read_manifest({"path": str(tmp_path / "hfdd"), "split": "train"})
    src = {"path": str(tmp_path / "hfdd"), "split": "train", "fields": {"text": "sentence", "speaker": "client",
                                                                       "id": "key"}}
    got, _ = read_manifest(src, check_audio="full")
    assert [(u.id, u.text, u.speaker) for u in got] == [(u.id, u.text, u.speaker) for u in utts]
    assert [u.duration for u in got] == pytest.approx([u.duration for u in utts])
    assert utterance_audio(got[3], SR).shape == (int(0.9 * SR),)
    # to JSONL: the embedded audio is written out as WAV, and reads back the same
    rows = [utterance_row(u, tmp_path / "out_wav") for u in got]
    write_manifest(tmp_path / "back.jsonl", rows)
    back, _ = read_manifest(tmp_path / "back.jsonl", check_audio="full")
    np.testing.assert_allclose(utterance_audio(back[3], SR), utterance_audio(got[3], SR), atol=1e-4)


def test_parquet_with_embedded_bytes_and_one_without_text(wavs, tmp_path):
    utts, _ = read_manifest(wavs)
    cells = [{"bytes": u.audio.read_bytes(), "path": u.audio.name} for u in utts]
    ds = datasets.Dataset.from_dict({"audio": cells, "text": TEXTS}).cast_column("audio", datasets.Audio())
    ds.to_parquet(str(tmp_path / "data.parquet"))
    got, _ = read_manifest(tmp_path / "data.parquet", check_audio="full")
    assert [u.id for u in got] == ["00000000", "00000001", "00000002", "00000003"]     # no id column: the row
    np.testing.assert_array_equal(utterance_audio(got[1], SR), utterance_audio(utts[1], SR))
    datasets.Dataset.from_dict({"audio": cells, "words": TEXTS}).cast_column("audio", datasets.Audio()) \
        .to_parquet(str(tmp_path / "notext.parquet"))
    with pytest.raises(ManifestError, match=r"notext.parquet: no text column 'text' \(columns: \['audio', 'words'\]\)"):
        read_manifest(tmp_path / "notext.parquet")


def test_lhotse_recordings_and_supervisions_written_by_lhotse(long_recording, tmp_path):
    d, audio = long_recording
    rec = lhotse.Recording.from_file(d.parent / "rec.wav", recording_id="rec1")
    sups = [lhotse.SupervisionSegment(id="s1", recording_id="rec1", start=0.5, duration=1.0, channel=0,
                                      text="one two", speaker="ann", custom={"keywords": ["two"]}),
            lhotse.SupervisionSegment(id="s2", recording_id="rec1", start=2.0, duration=0.5, channel=0,
                                      text="three", speaker="bob"),
            lhotse.SupervisionSegment(id="s3", recording_id="nope", start=0.0, duration=0.5, channel=0, text="x")]
    out = tmp_path / "lh"
    out.mkdir()
    lhotse.RecordingSet.from_recordings([rec]).to_file(out / "x_recordings_train.jsonl.gz")
    lhotse.SupervisionSet.from_segments(sups).to_file(out / "x_supervisions_train.jsonl.gz")
    utts, bad = read_manifest(out, on_bad_row="skip", check_audio="full")
    assert [(u.id, u.text, u.speaker, u.keywords, u.offset) for u in utts] == [
        ("s1", "one two", "ann", ("two",), 0.5), ("s2", "three", "bob", None, 2.0)]
    assert bad.rows == [("id 's3'", "no audio: recording 'nope' is not in x_recordings_train.jsonl.gz")]
    np.testing.assert_allclose(utterance_audio(utts[0], SR), audio[8000:24000], atol=1e-6)
    # the same as a cut set (lhotse's own join of the two)
    cuts = lhotse.CutSet.from_manifests(recordings=lhotse.RecordingSet.from_recordings([rec]),
                                        supervisions=lhotse.SupervisionSet.from_segments(sups[:2])).trim_to_supervisions()
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    got, _ = read_manifest(tmp_path / "cuts.jsonl.gz", check_audio="full")
    assert [(u.text, u.speaker) for u in got] == [("one two", "ann"), ("three", "bob")]
    np.testing.assert_allclose(utterance_audio(got[1], SR), audio[32000:40000], atol=1e-6)


def test_round_trip_jsonl_to_kaldi_and_lhotse_and_back(wavs, long_recording, tmp_path):
    utts = read_manifest(wavs)[0] + read_manifest(long_recording[0])[0]
    export_kaldi(utts, tmp_path / "kaldi")
    export_lhotse(utts, tmp_path / "cuts.jsonl.gz")
    assert (tmp_path / "kaldi" / "segments").is_file()        # spans of rec.wav need segments
    for src in (tmp_path / "kaldi", tmp_path / "cuts.jsonl.gz"):
        back, bad = read_manifest(src, check_audio="full")
        assert not bad.rows
        a, b = sorted(utts, key=lambda u: u.id), back
        assert [(u.id, u.text, u.speaker) for u in b] == [(u.id, u.text, u.speaker) for u in a], src
        assert [u.duration for u in b] == pytest.approx([u.duration for u in a], abs=1e-3)
        for x, y in zip(a, b):
            np.testing.assert_allclose(utterance_audio(y, SR), utterance_audio(x, SR), atol=1e-6)
        if src.name == "cuts.jsonl.gz":
            assert [u.keywords for u in b] == [u.keywords for u in a]
    # lhotse's own Kaldi reader takes the exported directory
    from lhotse.kaldi import load_kaldi_data_dir

    recs, sups, _ = load_kaldi_data_dir(tmp_path / "kaldi", sampling_rate=SR)
    assert sorted(s.id for s in sups) == sorted(u.id for u in utts)
    assert {s.id: s.text for s in sups}["b"] == "second words"
    # ... and back to JSONL with the span kept as offset / duration
    rows = [utterance_row(u) for u in read_manifest(tmp_path / "kaldi")[0]]
    assert {r["id"]: (r.get("offset"), r["duration"]) for r in rows}["b"] == (1.0, 1.1)
    write_manifest(tmp_path / "again.jsonl", rows)
    again, _ = read_manifest(tmp_path / "again.jsonl", check_audio="full")
    np.testing.assert_allclose(utterance_audio({u.id: u for u in again}["b"], SR), long_recording[1][16000:33600],
                               atol=1e-6)


def test_jsonl_offset_channel_and_field_mapping(tmp_path):
    audio = _wav(tmp_path / "st.wav", 1.0, 3, channels=2)
    rows = [{"id": "l", "audio": "st.wav", "sentence": "left half", "offset": 0.5, "duration": 0.25, "channel": 0},
            {"id": "r", "audio": "st.wav", "sentence": "both", "channel": 5},
            {"id": "n", "audio": "st.wav", "sentence": "neg", "offset": -1},
            {"id": "p", "audio": "st.wav", "sentence": "past", "offset": 0.9, "duration": 0.5}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    utts, bad = read_manifest({"path": str(tmp_path / "m.jsonl"), "fields": {"text": "sentence"}}, on_bad_row="skip")
    assert [u.id for u in utts] == ["l"]
    np.testing.assert_allclose(utterance_audio(utts[0], SR), audio[8000:12000, 0], atol=1e-6)
    why = dict(bad.rows)
    assert why["id 'r'"] == "channel 5 asked, the recording has 2"
    assert why["id 'n'"].startswith("field 'offset' must be a number >= 0")
    assert "past the end of its recording" in why["id 'p'"]


def test_tokenize_reads_a_kaldi_directory_like_its_jsonl(wavs, tmp_path):
    from speech_rl.cli import main
    from speech_rl.tts.tokenize import read_tokens, tokens_path

    export_kaldi(read_manifest(wavs)[0], tmp_path / "kaldi")
    tok = tmp_path / "tok.pt"
    assert main(["data", "tokenize", str(wavs), "--tokenizer", str(tok), "--fit", "--codebook-size", "8"]) == 0
    assert main(["data", "tokenize", str(tmp_path / "kaldi"), "--tokenizer", str(tok)]) == 0
    assert tokens_path(tmp_path / "kaldi") == tmp_path / "kaldi.tokens.jsonl"
    assert read_tokens(tokens_path(tmp_path / "kaldi")) == read_tokens(tokens_path(wavs))
