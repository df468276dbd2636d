import math

import pytest

from rewards import RewardError, RewardSet, RewardTerm, register_reward


@register_reward("test_const")
def _const(hyp, value=1.0, **_):
    return [value] * len(hyp)


@register_reward("test_bad")
def _bad(hyp, mode="raise", **_):
    if mode == "raise":
        raise ZeroDivisionError("boom")
    if mode == "nan":
        return [math.nan] * len(hyp)
    if mode == "short":
        return [1.0]
    if mode == "none":
        return [None] * len(hyp)
    return ["x"] * len(hyp)


def test_weighted_sum_and_gate():
    # sample 0: 2 * 1.0 (wer) + 0.5 * 3.0 = 3.5; sample 1 loops -> gate -> -1
    rs = RewardSet({"wer": {"weight": 2.0}, "test_const": {"weight": 0.5, "value": 3.0},
                    "hallucination": {"gate": True}})
    out = rs(hyp=["a b", "b b b b"], ref=["a b", "a b"], duration=[2.0, 2.0], id=["u1", "u2"])
    assert out.total.tolist() == [3.5, -1.0]
    assert out.gated.tolist() == [False, True]
    assert out.means()["wer"] == pytest.approx((1.0 + (1 - 3 / 2)) / 2)


def test_none_skips_a_term():
    rs = RewardSet({"wer": {}, "keyword": {}})
    out = rs(hyp=["call acme", "hi"], ref=["call acme", "hi"], keywords=[["acme"], None])
    assert out.total.tolist() == [2.0, 1.0]
    assert out.means()["keyword"] == 1.0


@pytest.mark.parametrize("mode,msg", [("raise", "reward 'test_bad' raised ZeroDivisionError: boom"),
                                      ("nan", "reward 'test_bad' returned nan for sample 'u1'"),
                                      ("short", "returned 1 values for 2 samples"),
                                      ("str", "returned 'x' for sample 'u1'"),
                                      ("none", "no reward applies to sample 'u1'")])
def test_contract_violations_raise_naming_the_reward(mode, msg):
    rs = RewardSet({"test_bad": {"mode": mode}})
    with pytest.raises(RewardError, match=msg):
        rs(hyp=["a", "b"], ref=["a", "b"], id=["u1", "u2"])


def test_empty_config_is_an_error():
    with pytest.raises(RewardError, match="no rewards configured"):
        RewardSet({})


WHISPER_STYLE = ["Mr. Smith sold 720 cars, didn't he?"]
CORPUS_STYLE = ["mister smith sold seven hundred and twenty cars did not he"]


def test_run_normalizer_reaches_every_text_reward_that_takes_one():
    """reward.normalizer (the run's text_normalizer) compares Whisper-style text with the
    corpus's spelled-out text as equal; plain does not; a term's own setting wins."""
    assert RewardSet({"wer": {}}, normalizer="whisper")(hyp=WHISPER_STYLE, ref=CORPUS_STYLE).total.tolist() == [1.0]
    assert RewardSet({"wer": {}}, normalizer="plain")(hyp=WHISPER_STYLE, ref=CORPUS_STYLE).total.item() < 0.5
    own = RewardSet({"wer": {"normalizer": "plain"}, "hallucination": {"gate": True}}, normalizer="whisper")
    assert own.fns["wer"].norm.__class__.__name__ == "TextNormalizer"
    assert own.fns["hallucination"].norm.__class__.__name__ == "WhisperNormalizer"
    # a reward without the parameter (a function of hyp only) is built as before
    assert RewardSet({"test_const": {"value": 2.0}}, normalizer="whisper").terms[0].params == {"value": 2.0}


def test_run_normalizer_leaves_the_callers_terms_alone():
    """RewardTerms given as a list are copied, not changed: one list can build sets with
    different normalisers."""
    terms = [RewardTerm(name="wer")]
    whisper = RewardSet(terms, normalizer="whisper")
    assert terms[0].params == {} and whisper.terms[0].params == {"normalizer": "whisper"}
    assert RewardSet(terms, normalizer="plain").fns["wer"].norm.__class__.__name__ == "TextNormalizer"
    assert whisper.fns["wer"].norm.__class__.__name__ == "WhisperNormalizer"


def test_unknown_normalizer_is_named():
    with pytest.raises(ValueError, match="text normaliser 'whsiper': expected one of plain, whisper"):
        RewardSet({"wer": {}}, normalizer="whsiper")
