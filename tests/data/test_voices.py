"""Voices: each installed engine speaks; the open corpus holds whole speakers out; Whisper
(an ASR nobody here trained) reads the voices."""
from __future__ import annotations

import numpy as np
import pytest

from speech_rl.data.open_corpus import TEST_VOICES, TRAIN_VOICES
from speech_rl.data.voices import Speaker, Voice, available, engine_available, kokoro_blend, missing_engines
from tests.open_world import HAS_KOKORO, need_whisper

SENTENCE = "remain calm and go back to bed said the old captain"


def test_test_speakers_are_not_training_speakers():
    train = {v.speaker for v in TRAIN_VOICES}
    test = {v.speaker for v in TEST_VOICES}
    assert test and not train & test
    assert len(test) >= 5 and len(train) >= 8


def test_missing_engine_named_with_install_command(monkeypatch):
    import speech_rl.data.voices as voices

    voices.engine_available.cache_clear()
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    try:
        miss = missing_engines([Voice("flite", "awb", "awb")])
        assert "apt-get install flite" in miss["flite"]
        assert available([Voice("flite", "awb", "awb")]) == []
        with pytest.raises(RuntimeError, match="apt-get install flite"):
            Speaker().speak(Voice("flite", "awb", "awb"), SENTENCE)
    finally:
        voices.engine_available.cache_clear()


def test_blend_of_unknown_vector_is_refused():
    with pytest.raises(ValueError, match="unknown Kokoro voice"):
        kokoro_blend("jf_alpha", "af_nobody")


ONE_PER_ENGINE = [Voice("espeak", "en-us", "espeak"), Voice("flite", "awb", "awb"),
                  Voice("festival", "cmu_us_slt_arctic_hts", "slt"), Voice("kokoro", "jf_tebukuro", "kokoro_jf_tebukuro")]


@need_whisper
@pytest.mark.parametrize("voice", ONE_PER_ENGINE, ids=lambda v: v.engine)
def test_engine_speaks_what_whisper_reads(voice):
    if not engine_available(voice.engine) or (voice.engine == "kokoro" and not HAS_KOKORO):
        pytest.skip(f"{voice.engine} not installed")
    import soxr

    from speech_rl.evaluate import score
    from speech_rl.judge import WhisperJudge, WhisperNormalizer

    wav, sr = Speaker().speak(voice, SENTENCE)
    assert wav.dtype == np.float32 and np.isfinite(wav).all() and len(wav) > sr
    hyp = WhisperJudge(threads=1).transcribe(soxr.resample(wav, sr, 16000).astype(np.float32))
    wer = score([{"ref": SENTENCE, "hyp": hyp}], WhisperNormalizer())["wer"]
    assert wer <= 0.35, (voice.id, hyp)
