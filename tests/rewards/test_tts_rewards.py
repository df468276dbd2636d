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


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory):
    from speech_rl.data.synth import synth_corpus

    root = tmp_path_factory.mktemp("voices")
    return synth_corpus(root, {"ref": {"n": 8, "voices": ["en-us", "en-us+f2"]},
                               "probe": {"n": 6, "voices": ["en-us", "en-us+f2"]}}, seed=3)


class TestSpeakerSim:
    def test_own_voice_scores_higher_than_another(self, two_voices):
        pytest.importorskip("resemblyzer")
        from speech_rl.data.manifest import read_manifest, utterance_audio

        r = get_reward("speaker_sim", reference_manifest=str(two_voices["ref"]))
        probes, _ = read_manifest(two_voices["probe"])
        audio = [utterance_audio(u, 16000) for u in probes]
        own = r(audio=audio, sample_rate=[16000] * len(audio), speaker=[u.speaker for u in probes])
        other = {"en-us": "en-us+f2", "en-us+f2": "en-us"}
        swapped = r(audio=audio, sample_rate=[16000] * len(audio), speaker=[other[u.speaker] for u in probes])
        assert all(o > s for o, s in zip(own, swapped)), (own, swapped)
        assert r(audio=[np.zeros(100)], sample_rate=[16000], speaker=["en-us"]) == [0.0]
        with pytest.raises(ValueError, match="no reference for speaker 'x'"):
            r(audio=audio[:1], sample_rate=[16000], speaker=["x"])


class TestMOS:
    def test_clean_speech_beats_noisy_speech(self, two_voices):
        pytest.importorskip("speechmos")
        from speech_rl.data.manifest import read_manifest, utterance_audio

        u = read_manifest(two_voices["probe"])[0][0]
        clean = utterance_audio(u, 16000)
        noisy = clean + 0.3 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
        m = get_reward("mos")(audio=[clean, noisy, np.zeros(100)], sample_rate=[16000] * 3)
        # measured on eSpeak speech: clean ~2.2, with this noise ~1.1 (DNSMOS overall, 1-5)
        assert m[0] > m[1] + 0.5 and m[2] == 1.0 and 1.0 <= m[1] <= 5.0
        with pytest.raises(ValueError, match="16 kHz"):
            get_reward("mos")(audio=[clean], sample_rate=[22050])
