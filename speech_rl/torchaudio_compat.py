"""torchaudio without its compiled extension, for s3prl (extra ``ssl``).

The PyPI torchaudio wheels (2.9+) are CUDA-linked: with the CPU torch their compiled library
fails to load, and ``import torchaudio`` raises ``OSError`` -- and so does every library that
imports it (transformers' ``audio_utils``, s3prl). ``import_torchaudio`` then imports it with
its ``_extension`` module replaced by one that reports no extension: the pure-Python parts
(``compliance.kaldi``, ``transforms``, ``functional``), which are what s3prl's weight-free
upstreams use, work; what needs the extension raises when called. It also gives back the two
APIs torchaudio 2.9 removed that s3prl still names at import: ``set_audio_backend`` (a no-op)
and ``sox_effects`` (its functions raise when called; speech-rl reads audio with soundfile).

``speech_rl/__init__.py`` calls ``ensure_importable`` when torchaudio is installed, so that a
process that imports speech-rl first is not broken by that wheel; it changes nothing where
torchaudio imports normally or is absent.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def ensure_importable() -> None:
    """``import_torchaudio`` if torchaudio is installed (a no-op otherwise)."""
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is not None:
        import_torchaudio()


def import_torchaudio():
    """torchaudio, imported without its compiled extension when that does not load."""
    try:
        import torchaudio
    except OSError:                                  # its compiled library does not load
        for k in [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]:
            del sys.modules[k]
        sys.modules["torchaudio._extension"] = _no_extension()
        import torchaudio
    if not hasattr(torchaudio, "set_audio_backend"):           # removed in torchaudio 2.9
        torchaudio.set_audio_backend = lambda backend=None: None
    if "torchaudio.sox_effects" not in sys.modules:
        try:
            importlib.import_module("torchaudio.sox_effects")
        except ImportError:
            sys.modules["torchaudio.sox_effects"] = torchaudio.sox_effects = _removed("torchaudio.sox_effects")
    return torchaudio


def _no_extension() -> types.ModuleType:
    def fail_if_no_align(fn):
        def fail(*_, **__):
            raise RuntimeError(f"{fn.__name__} needs torchaudio's compiled extension, which does not load here")
        return fail

    m = types.ModuleType("torchaudio._extension")
    m._IS_TORCHAUDIO_EXT_AVAILABLE = False
    m._IS_ALIGN_AVAILABLE = False
    m.fail_if_no_align = fail_if_no_align
    m._load_lib = lambda lib: False
    m._check_cuda_version = lambda: None
    return m


def _removed(name: str) -> types.ModuleType:
    """A module whose every function raises when called (s3prl imports some at import time)."""
    m = types.ModuleType(name)

    def __getattr__(attr):
        if attr.startswith("__"):                       # introspection (__file__, __spec__, ...)
            raise AttributeError(attr)

        def removed(*_, **__):
            raise RuntimeError(f"{name}.{attr} was removed in torchaudio 2.9; speech-rl reads audio with soundfile "
                               "and feeds s3prl waveforms, so nothing here should call it")
        return removed
    m.__getattr__ = __getattr__
    return m
