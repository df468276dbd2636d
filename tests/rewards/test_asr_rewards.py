import pytest

from rewards.asr import HallucinationReward, KeywordReward, WERReward, detect_hallucination
from speech_rl.metrics import longest_ngram_run


class TestWER:
    def test_exact_and_errors(self):
        # "a b c" vs "a x c d": 1 sub + 1 ins over 3 words -> 1 - 2/3
        r = WERReward()(hyp=["a b c", "a x c d", ""], ref=["A b, c.", "a b c", "a b"])
        assert r == pytest.approx([1.0, 1 - 2 / 3, 0.0])

    def test_normalisation_is_configurable(self):
        assert WERReward(lowercase=False)(hyp=["the Cat"], ref=["the cat"]) == [0.5]

    def test_clip_min_bounds_loops(self):
        # 1 ref word, 5 inserted -> WER 5 -> 1 - 5 = -4, clipped to -1
        assert WERReward()(hyp=["a b b b b b"], ref=["a"]) == [-4.0]
        assert WERReward(clip_min=-1.0)(hyp=["a b b b b b"], ref=["a"]) == [-1.0]


class TestHallucination:
    def test_ngram_run(self):
        assert longest_ngram_run("x a b a b a b".split(), 2) == 3
        assert longest_ngram_run("a b c".split(), 1) == 1

    def test_loop_detected_but_not_when_reference_repeats(self):
        assert detect_hallucination("very very very good", "good").startswith("loop")
        assert detect_hallucination("very very very good", "very very very good") is None

    def test_too_long_for_audio_and_reference(self):
        assert "too long for the audio" in detect_hallucination("a b c d e f g h i j k l m", None, 1.0)
        assert "too long for the reference" in detect_hallucination("a b c d e f g h i", "a b c", None)
        assert detect_hallucination("a b c d e f g h i", "a b c", None, max_len_ratio=None) is None

    def test_foreign_script(self):
        assert detect_hallucination("hello мир", "hello world") == "foreign script: CYRILLIC"
        assert detect_hallucination("hello мир", None, allowed_scripts=("LATIN",)) == "foreign script: CYRILLIC"

    def test_reward_values_and_reasons(self):
        h = HallucinationReward(min_repeats=3)
        assert h(hyp=["the cat", "cat cat cat"], ref=["the cat", "the cat"], duration=[1, 1]) == [0.0, -1.0]
        assert h.last_reasons[0] is None and h.last_reasons[1].startswith("loop")


class TestKeyword:
    def test_precision_and_recall(self):
        # ref has acme x1, paris x1; hyp has acme x2, no paris: hit 1, recall 1/2, precision 1/2
        r = KeywordReward()(hyp=["acme acme london"], ref=["Acme in Paris"], keywords=[["Acme", "Paris"]])
        assert r == [0.5]

    def test_multiword_and_none(self):
        kw = KeywordReward()(hyp=["call acme corp", "hello"], ref=["call Acme Corp", "hello"],
                             keywords=[["Acme Corp"], []])
        assert kw == [1.0, None]
        assert KeywordReward()(hyp=["a"], ref=["a"]) == [None]

    def test_missing_keyword_scores_zero(self):
        assert KeywordReward()(hyp=["call now"], ref=["call acme now"], keywords=[["acme"]]) == [0.0]


def test_truncation_gate_punishes_early_stops_not_small_slips():
    from rewards.asr import TruncationReward
    from rewards.combine import RewardSet

    ref = "the quick brown fox jumps over the lazy dog today"  # 10 words
    r = TruncationReward(min_len_ratio=0.75, len_slack=1)
    # 7 words >= 0.75 * 10 - 1 = 6.5 passes; 6 words is cut short; an empty output too
    assert r(hyp=[" ".join(ref.split()[:7]), " ".join(ref.split()[:6]), ""], ref=[ref] * 3) == [0.0, -1.0, -1.0]
    assert r.last_reasons[1] == "too short for the reference: 6 words vs 10"
    # as a gate, an early stop scores -1 even though its WER (0.4) beats a garbled full output's (0.5)
    rs = RewardSet({"wer": {"weight": 1.0}, "truncation": {"gate": True}})
    garbled = "the quick brown fox jumps a b c d e"
    out = rs(hyp=[" ".join(ref.split()[:6]), garbled], ref=[ref] * 2)
    assert out.total.tolist() == [-1.0, 0.5]
    with pytest.raises(ValueError, match="min_len_ratio"):
        TruncationReward(min_len_ratio=1.5)
