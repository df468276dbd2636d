import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speech_rl.data.features import LogMel, pad_features
from speech_rl.data.manifest import read_manifest
from speech_rl.data.synth import make_sentence, manifest_sentences, split_sentences, synth_corpus
from speech_rl.data.tokenizer import CharTokenizer


def test_logmel_shape_and_range():
    feats = LogMel()(torch.randn(16000) * 0.1)
    assert feats.shape == (101, 80)                       # 16000 // 160 + 1 frames
    assert torch.isfinite(feats).all() and feats.max() <= 2.5 and feats.min() >= -1.5


def test_pad_features():
    x, lens = pad_features([torch.ones(3, 2), torch.ones(5, 2)])
    assert x.shape == (2, 5, 2) and lens.tolist() == [3, 5] and x[0, 3:].abs().sum() == 0


def test_char_tokenizer_roundtrip_and_specials():
    tok = CharTokenizer()
    ids = tok.encode("Acme, 42!") + [tok.eos_id, 10, 11]
    assert tok.decode(ids) == "acme, 42!"                 # stops at EOS, lowercases
    assert tok.encode("ü") == [tok.unk_id]
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(charset="aa")


def test_sentences_carry_their_keywords():
    import random

    rng = random.Random(1)
    for _ in range(50):
        text, kws = make_sentence(rng)
        assert kws and all(k in text.split() for k in kws)


def test_synth_is_deterministic_and_follows_the_contract(tmp_path):
    # texts, keywords, voices, rates, pitches and padding follow the seed exactly; eSpeak NG's own
    # waveform jitters by a few samples from call to call (see speech_rl/data/espeak.py)
    a = synth_corpus(tmp_path / "a", {"train": 3}, seed=5)["train"]
    b = synth_corpus(tmp_path / "b", {"train": 3}, seed=5)["train"]
    c = synth_corpus(tmp_path / "c", {"train": 3}, seed=6)["train"]
    ra, rb = [json.loads(x) for x in a.read_text().splitlines()], [json.loads(x) for x in b.read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "duration"} for r in rows]  # noqa: E731
    assert strip(ra) == strip(rb)
    # measured: 0-1 ms apart (19 of 20 identical); 10 ms bounds the jitter, not a real change
    assert all(abs(x["duration"] - y["duration"]) < 0.010 for x, y in zip(ra, rb)), (ra, rb)
    assert strip(ra) != strip([json.loads(x) for x in c.read_text().splitlines()])
    utts, bad = read_manifest(a, check_audio="full")
    assert len(utts) == 3 and not len(bad)
    wav, sr = sf.read(utts[0].audio)
    assert sr == 16000 and 1.0 < len(wav) / sr < 8.0 and np.abs(wav).max() > 0.05
    assert utts[0].speaker and utts[0].keywords


def test_long_split_lengths_spread_over_the_requested_range(tmp_path):
    # each long utterance draws its own target in [min, max]; earlier they all stopped just past min
    spec = {"kind": "long", "n": 12, "min_seconds": 4.0, "max_seconds": 12.0}
    rows = [json.loads(x) for x in synth_corpus(tmp_path, {"lg": spec}, seed=1)["lg"].read_text().splitlines()]
    durs = sorted(r["duration"] for r in rows)
    assert all(3.5 < d < 12.5 for d in durs), durs           # 0.2 s tail pad on top of the sentences
    assert durs[-1] - durs[0] > 3.0 and sum(d > 8.0 for d in durs) >= 3, durs
    with pytest.raises(ValueError, match="min_seconds <= max_seconds"):
        synth_corpus(tmp_path / "bad", {"lg": {"kind": "long", "n": 1, "min_seconds": 9.0, "max_seconds": 5.0}})


def test_split_sentences_recovers_the_sentences_of_a_long_text():
    import random

    rng = random.Random(3)
    sents = [make_sentence(rng)[0] for _ in range(200)]
    for i in range(0, 200, 7):
        assert split_sentences(" ".join(sents[i:i + 7])) == sents[i:i + 7]
    with pytest.raises(ValueError, match="not made of the corpus templates at 'hello"):
        split_sentences("please call bob in paris hello world")


def test_make_sentence_redraws_excluded_sentences_and_keeps_the_stream_without_them():
    import random

    plain = make_sentence(random.Random(4))
    assert make_sentence(random.Random(4), frozenset()) == plain          # no exclusion: one draw, same text
    assert make_sentence(random.Random(4), frozenset({plain[0]}))[0] != plain[0]
    with pytest.raises(ValueError, match="no sentence outside"):
        make_sentence(random.Random(4), _Everything())


class _Everything(frozenset):
    def __contains__(self, _):
        return True


def test_split_excludes_the_sentences_of_other_splits(tmp_path):
    # the test split's sentences are drawn first; a pool excluding them must share none, in short
    # and in long (concatenated) utterances, and an exclusion naming a split not yet written is refused
    small = {"test": {"n": 200}, "control": {"n": 100},
             "pool": {"n": 100, "exclude_sentences_of": ["test"]},
             "pool_long": {"kind": "long", "n": 3, "min_seconds": 8.0, "max_seconds": 12.0,
                           "exclude_sentences_of": ["test"]}}
    paths = synth_corpus(tmp_path, small, seed=2)
    test = manifest_sentences(paths["test"])
    assert test & manifest_sentences(paths["control"])     # without the exclusion sentences do repeat
    assert not test & manifest_sentences(paths["pool"]) and not test & manifest_sentences(paths["pool_long"])
    with pytest.raises(ValueError, match="exclude_sentences_of names 'later'.*list 'later' before 'early'"):
        synth_corpus(tmp_path / "b", {"early": {"n": 1, "exclude_sentences_of": ["later"]}, "later": {"n": 1}})


def test_spec_augment_masks_bands_and_spans_within_bounds():
    from speech_rl.data.features import spec_augment

    x = torch.ones(3, 200, 80)
    lens = torch.tensor([200, 100, 50])
    y = spec_augment(x, lens, freq_masks=2, freq_width=10, time_masks=2, time_width=0.1,
                     gen=torch.Generator().manual_seed(0))
    assert torch.equal(y, spec_augment(x, lens, 2, 10, 2, 0.1, gen=torch.Generator().manual_seed(0)))
    for i, n in enumerate(lens.tolist()):
        dead_bins = (y[i, :n].sum(0) == 0).sum().item()          # bins masked over the whole utterance
        dead_frames = torch.nonzero(y[i].sum(1) == 0).flatten()   # frames with every bin masked
        assert dead_bins <= 2 * 10
        assert len(dead_frames) <= 2 * int(0.1 * n) and all(f < n for f in dead_frames.tolist())
    assert (y == 0).any() and (y == 1).any()
    assert torch.equal(spec_augment(x, lens, 0, 10, 0, 0.1), x)
