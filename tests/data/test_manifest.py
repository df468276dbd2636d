import json

import numpy as np
import pytest
import soundfile as sf

from speech_rl.data.audio import AudioError, load_audio
from speech_rl.data.manifest import ManifestError, read_manifest, write_manifest


def _wav(path, seconds=0.5, sr=16000, channels=1, value=None):
    n = int(seconds * sr)
    x = (np.random.default_rng(0).standard_normal((n, channels)) * 0.1).astype(np.float32)
    if value is not None:
        x[:] = value
    sf.write(path, x if channels > 1 else x[:, 0], sr, subtype="FLOAT")
    return path


def _manifest(tmp_path, rows, name="m.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


@pytest.fixture
def good(tmp_path):
    _wav(tmp_path / "a.wav")
    return {"id": "a", "audio": "a.wav", "text": "hello there", "duration": 0.5}


def test_good_rows_and_relative_paths(tmp_path, good):
    utts, bad = read_manifest(_manifest(tmp_path, [good, dict(good, id="b", keywords=["hello"], speaker="s1")]))
    assert [u.id for u in utts] == ["a", "b"] and len(bad) == 0
    assert utts[0].audio == tmp_path / "a.wav" and utts[1].keywords == ("hello",)
    assert utts[0].duration == pytest.approx(0.5)


BAD_CASES = {
    "missing file": ({"audio": "nope.wav"}, "does not exist"),
    "directory": ({"audio": "."}, "is a directory"),
    "not audio": ({"audio": "text.wav"}, "not readable audio"),
    "empty text": ({"text": "   "}, "empty text"),
    "text wrong type": ({"text": 3}, "field 'text' must be str"),
    "id wrong type": ({"id": 7}, "field 'id' must be str"),
    "keywords wrong type": ({"keywords": "acme"}, "must be a list of strings"),
    "negative duration": ({"duration": -1}, "positive number"),
    "nan audio": ({"audio": "nan.wav"}, "NaN or infinite"),
    "too long": ({"audio": "long.wav"}, "longer than max_duration"),
    "empty audio": ({"audio": "empty.wav"}, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_row_is_named_and_skippable(tmp_path, good, case):
    (tmp_path / "text.wav").write_text("this is not audio")
    _wav(tmp_path / "nan.wav", value=np.nan)
    _wav(tmp_path / "long.wav", seconds=3.0)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    patch, reason = BAD_CASES[case]
    row = dict(good, id="broken", **patch) if "id" not in patch else dict(good, **patch)
    m = _manifest(tmp_path, [good, row])
    with pytest.raises(ManifestError, match=reason):
        read_manifest(m, on_bad_row="error", check_audio="full", max_duration=2.0)
    utts, bad = read_manifest(m, on_bad_row="skip", check_audio="full", max_duration=2.0)
    assert [u.id for u in utts] == ["a"] and len(bad) == 1 and reason in bad.rows[0][1]


def test_malformed_json_duplicate_id_and_missing_field(tmp_path, good):
    m = _manifest(tmp_path, [good, "{not json", good, {"id": "x", "text": "t"}])
    utts, bad = read_manifest(m, on_bad_row="skip")
    reasons = [r for _, r in bad.rows]
    assert len(utts) == 1
    assert any("malformed JSON" in r for r in reasons)
    assert any("duplicate id" in r for r in reasons)
    assert any("missing field 'audio'" in r for r in reasons)
    assert bad.rows[0][0] == "line 2"


def test_non_utf8_and_missing_manifest_and_all_bad(tmp_path, good):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"id": "é"}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(p)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no usable rows"):
        read_manifest(_manifest(tmp_path, [dict(good, audio="nope.wav")]), on_bad_row="skip")


def test_stereo_and_other_rates_are_converted(tmp_path):
    _wav(tmp_path / "st.wav", seconds=1.0, sr=44100, channels=2)
    x = load_audio(tmp_path / "st.wav", 16000)
    assert x.ndim == 1 and x.dtype == np.float32 and abs(len(x) - 16000) <= 1


def test_truncated_file(tmp_path):
    p = _wav(tmp_path / "t.wav", seconds=1.0)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|cannot be decoded"):
        load_audio(p, 16000)


def test_write_manifest_is_atomic(tmp_path):
    p = write_manifest(tmp_path / "out.jsonl", [{"id": "a"}])
    with pytest.raises(TypeError):
        write_manifest(p, [{"id": object()}])            # fails mid-write
    assert p.read_text() == '{"id": "a"}\n'                # the previous manifest is intact


def test_length_buckets_cover_every_index_once_and_reduce_padding():
    import random as _r

    from datamodules.sampler import EpochBatchSampler

    rng = _r.Random(0)
    durs = [rng.choice([2.0, 12.0]) + rng.random() for _ in range(200)]
    s = EpochBatchSampler(durs, batch_size=8, bucket_by_length=True, pool_batches=25, seed=3)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(200)) and len(batches) == len(s) == 25
    padded = sum(len(b) * max(durs[i] for i in b) for b in batches)
    plain = sum(8 * max(durs[i] for i in range(k, k + 8)) for k in range(0, 200, 8))
    assert padded < 0.7 * plain                       # mostly-homogeneous batches
    assert batches == list(EpochBatchSampler(durs, 8, 3, bucket_by_length=True, pool_batches=25))
    s.set_epoch(1)
    assert list(s) != batches


def test_ranks_get_disjoint_equal_shares_and_a_resumed_epoch_continues():
    from datamodules.sampler import EpochBatchSampler, ResumableDataLoader

    durs = [1.0] * 50
    r0 = EpochBatchSampler(durs, 4, seed=1, rank=0, world_size=2)
    r1 = EpochBatchSampler(durs, 4, seed=1, rank=1, world_size=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == 6 and not {i for b in b0 for i in b} & {i for b in b1 for i in b}
    full = ResumableDataLoader(list(range(50)), EpochBatchSampler(durs, 4, seed=1))
    it = iter(full)
    first = [next(it).tolist() for _ in range(3)]
    state = full.state_dict()
    assert state["consumed"] == 3
    resumed = ResumableDataLoader(list(range(50)), EpochBatchSampler(durs, 4, seed=1))
    resumed.load_state_dict(state)
    rest = [b.tolist() for b in resumed]
    assert first + rest == [b.tolist() for b in ResumableDataLoader(list(range(50)), EpochBatchSampler(durs, 4, seed=1))]
    assert len(list(resumed)) == 13                   # the next epoch is whole again
    from lightning.fabric.utilities.data import _set_sampler_epoch

    _set_sampler_epoch(resumed, 4)                    # what Lightning calls at each epoch start
    assert resumed.batch_sampler.epoch == 4


def test_resume_at_an_epoch_boundary_neither_skips_nor_repeats_an_epoch():
    """A checkpoint taken at an epoch's last batch: whether Lightning then re-enters that
    epoch (empty) or moves on and sets the next epoch, the next batches are the next epoch's."""
    from datamodules.sampler import EpochBatchSampler, ResumableDataLoader

    durs = [1.0] * 24
    make = lambda: ResumableDataLoader(list(range(24)), EpochBatchSampler(durs, 4, seed=1))   # noqa: E731
    done = make()
    assert len(list(done)) == 6
    state = done.state_dict()
    assert state == {"epoch": 0, "consumed": 6, "seed": 1}
    ref = make()
    ref.batch_sampler.set_epoch(1)
    epoch1 = [b.tolist() for b in ref]
    same_epoch = make()
    same_epoch.load_state_dict(state)                 # Lightning finishes epoch 0 (nothing left) ...
    assert list(same_epoch) == []
    same_epoch.batch_sampler.set_epoch(1)             # ... then starts epoch 1
    assert [b.tolist() for b in same_epoch] == epoch1
    next_epoch = make()
    next_epoch.load_state_dict(state)
    next_epoch.batch_sampler.set_epoch(1)             # Lightning moved to epoch 1 itself
    assert [b.tolist() for b in next_epoch] == epoch1


def test_train_weights_oversample_and_thin_manifests(corpus):
    from collections import Counter

    from datamodules import ASRDataModule

    train, val = str(corpus / "embedded" / "train.jsonl"), str(corpus / "embedded" / "val.jsonl")

    def ids(weights, seed=0):
        dm = ASRDataModule([train, val], check_audio="header", train_weights=weights, seed=seed)
        dm.setup("fit")
        return Counter(u.id for u in dm.train_set.utts)

    c = ids([0.5, 2])                                  # 24 train utts thinned to 12, 8 val utts twice
    assert sum(n for k, n in c.items() if k.startswith("train")) == 12
    assert {n for k, n in c.items() if k.startswith("train")} == {1}
    assert [n for k, n in c.items() if k.startswith("val")] == [2] * 8
    assert ids([0.5, 2]) == c and ids([0.5, 2], seed=1) != c      # the thinned share is seeded
    assert sum(ids(None).values()) == 32 and ids([1, 0]).keys() == {k for k in ids(None) if k.startswith("train")}
    for bad, msg in (([1.0], "2 train manifests"), ([1.0, -1.0], ">= 0"), ([0, 0], "no utterances")):
        with pytest.raises(ValueError, match=msg):
            ids(bad)


def test_an_empty_subset_leaves_a_union_but_not_a_single_manifest(corpus, tmp_path, caplog):
    """`speech-rl data select` writes an empty D1 when no utterance qualifies; a union of
    subsets goes on without it (warned), a lone empty manifest is still an error."""
    from datamodules import ASRDataModule
    from speech_rl.data.manifest import ManifestError

    train = str(corpus / "embedded" / "train.jsonl")
    empty = tmp_path / "D1.jsonl"
    empty.write_text("")
    dm = ASRDataModule([train, str(empty)], check_audio="header")
    dm.setup("fit")
    assert len(dm.train_set) == 24 and "D1.jsonl is empty" in caplog.text
    with pytest.raises(ManifestError, match="D1.jsonl has no usable rows"):
        ASRDataModule(str(empty)).setup("fit")
    with pytest.raises(ValueError, match="no utterances left"):
        ASRDataModule([str(empty), str(empty)]).setup("fit")
