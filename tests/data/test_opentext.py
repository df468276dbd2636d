"""Open text: sentence-disjoint pools, held-out words absent from all training text, the
OOV share of the test sets, keyword frames over held-out names and places."""
from __future__ import annotations

import pytest

from speech_rl.data.opentext import build_splits, normalise, oov_rate, place_names, person_names, spell_number
from tests.open_world import need_fortunes


def test_normalise_and_spell_number():
    assert normalise("It's a DOG-eat-dog world, isn't it?") == "it's a dog eat dog world isn't it"
    assert spell_number(19) == "nineteen" and spell_number(1000) == "one thousand"
    assert spell_number(9999) == "nine thousand nine hundred and ninety nine"
    with pytest.raises(ValueError, match="outside"):
        spell_number(10000)


def test_oov_rate_counts_types():
    # test types {a, b, c, d}; training has a and c -> 2 of 4 unseen
    assert oov_rate(["a b", "c d d"], ["a c", "a"]) == 0.5


@need_fortunes
def test_pools_are_disjoint_and_hold_out_words():
    p = build_splits(seed=0)
    train = p.training_text()
    assert len(set(p.test)) == len(p.test) and not set(p.test) & set(train)
    assert not (set(p.sft) & set(p.rl)) and not (set(p.val) & set(p.sft + p.rl))
    train_words = {w for s in train for w in s.split()}
    assert p.heldout_words and not p.heldout_words & train_words
    assert oov_rate(p.test, train) >= 0.30
    assert len(p.sft) > 4000 and len(p.rl) == 2500 and len(p.test) == 700
    # keyword frames: held-out names / places fill the test frames, and are keywords
    names, places = set(person_names()), set(place_names())
    framed = [s for s in p.test if p.keywords.get(s) and set(p.keywords[s]) & (names | places)]
    assert len(framed) >= 100
    kw = {k for s in framed for k in p.keywords[s]}
    assert not {w for k in kw for w in k.split()} & train_words


@need_fortunes
def test_pools_deterministic_for_seed():
    a, b, c = build_splits(seed=0), build_splits(seed=0), build_splits(seed=1)
    assert a.test == b.test and a.sft == b.sft and a.test != c.test
