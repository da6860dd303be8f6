"""Synthetic speech for the demo corpus, from the eSpeak NG library and voice data that `espeakng-loader` ships
(no system package, no network). Robotic, but real speech that forced alignment and openSMILE can work on."""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_chunks: list[np.ndarray] = []


@_CALLBACK
def _collect(wav, n, _events):  # called by eSpeak with each block of 16-bit samples
    if n > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


@cache
def _engine() -> tuple[ctypes.CDLL, int]:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    data_parent = str(__import__("pathlib").Path(espeakng_loader.get_data_path()).parent).encode()
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
    if rate <= 0:
        raise RuntimeError(f"eSpeak NG failed to initialise from {espeakng_loader.get_data_path()}")
    lib.espeak_SetSynthCallback(_collect)
    return lib, rate


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 150) -> tuple[np.ndarray, int]:
    """Speak `text`; returns float32 mono samples in [-1, 1] and the sample rate (22050)."""
    lib, rate = _engine()
    lib.espeak_SetVoiceByName(voice.encode())
    lib.espeak_SetParameter(1, words_per_minute, 0)  # espeakRATE
    _chunks.clear()
    data = text.encode() + b"\0"
    err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if err != 0:
        raise RuntimeError(f"eSpeak NG could not speak {text[:40]!r} (error {err})")
    pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
    return (pcm.astype(np.float32) / 32768.0), rate
