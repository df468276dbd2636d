import numpy as np
import pytest

from rewards import get_reward
from rewards.tts import DiversityReward, duration, normalised_f0_std, token_diversity


class TestDuration:
    def test_median_of_each_group(self):
        # group 0 lengths 10, 12, 15, 20 -> median 13.5; group 1 lengths 8, 8 -> median 8
        r = duration(tokens=[[0] * 10, [0] * 12, [0] * 8, [0] * 15, [0] * 20, [0] * 8], group=[0, 0, 1, 0, 0, 1])
        assert r == pytest.approx([-3.5 / 13.5, -1.5 / 13.5, 0.0, -1.5 / 13.5, -6.5 / 13.5, 0.0])

    def test_slower_and_faster_are_punished_alike_and_empty_group_is_zero(self):
        assert duration(tokens=[[0] * 5, [0] * 10, [0] * 15], group=[0, 0, 0]) == pytest.approx([-0.5, 0.0, -0.5])
        assert duration(tokens=[[], []], group=[3, 3]) == [0.0, 0.0]

    def test_registered(self):
        assert get_reward("duration")(tokens=[[1], [1, 2]], group=[0, 0]) == pytest.approx([-1 / 3, -1 / 3])


class TestDiversity:
    def test_token_edit_distance(self):
        # [1,2,3] vs [1,2,4]: 1 edit; vs [9,9,9,9]: 4 edits. Sample 0: (1/3 + 4/3) / 2
        d = token_diversity([[1, 2, 3], [1, 2, 4], [9, 9, 9, 9]])
        assert d == pytest.approx([(1 / 3 + 4 / 3) / 2, (1 / 3 + 4 / 3) / 2, (4 / 4 + 4 / 4) / 2])
        assert token_diversity([[1, 2]]) == [0.0]

    def test_f0_std_of_a_glide_beats_a_flat_tone(self):
        sr = 16000
        t = np.arange(sr) / sr
        flat = 0.5 * np.sin(2 * np.pi * 150 * t)
        glide = 0.5 * np.sin(2 * np.pi * (100 * t + 50 * t ** 2))       # 100 -> 200 Hz
        # flat: F0 constant -> ~0; glide: uniform 100..200 Hz / mean 150 -> std = 100 / sqrt(12) / 150 ~ 0.19
        assert normalised_f0_std(flat, sr) < 0.01
        assert normalised_f0_std(glide, sr) == pytest.approx(100 / np.sqrt(12) / 150, abs=0.03)
        assert normalised_f0_std(np.zeros(sr), sr) == 0.0

    def test_reward_adds_both_terms_within_groups(self):
        sr = 16000
        tone = 0.5 * np.sin(2 * np.pi * 150 * np.arange(sr) / sr)
        r = DiversityReward(f0_weight=1.0)(tokens=[[1, 2], [1, 3], [5, 5]], group=[0, 0, 1],
                                           audio=[tone, tone, tone], sample_rate=[sr] * 3)
        assert r == pytest.approx([0.5, 0.5, 0.0], abs=0.01)
        with pytest.raises(ValueError, match="needs the 'audio' and 'sample_rate'"):
            DiversityReward()(tokens=[[1]], group=[0])
        assert DiversityReward(f0_weight=0)(tokens=[[1, 2], [2, 2]], group=[0, 0]) == [0.5, 0.5]
