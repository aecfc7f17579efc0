"""Known tones in and out of the relay: write a tone WAV, read 8 kHz 16-bit samples back,
and measure one frequency with Goertzel's recurrence (one DFT bin, no numpy)."""

from __future__ import annotations

import array
import math
import sys
import wave
from collections.abc import Sequence
from pathlib import Path

from recordings.g711 import tone

RATE = 8000


def goertzel(xs: Sequence[int], freq: float) -> float:
    """Energy of `freq` in 8 kHz samples (one DFT bin, Goertzel's recurrence)."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in xs:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def amplitude(xs: Sequence[int], freq: float) -> float:
    """Peak amplitude of the sine at `freq` in `xs`: exact when the window holds a whole
    number of its periods (440 Hz and 1 kHz both fit 100 ms at 8 kHz)."""
    return 2 * math.sqrt(max(0.0, goertzel(xs, freq))) / max(1, len(xs))


def samples(data: bytes) -> array.array[int]:
    """16-bit little-endian PCM (WAV's byte order) as host-order samples."""
    xs = array.array("h", data)
    if sys.byteorder == "big":
        xs.byteswap()
    return xs


def read_wav(path: Path) -> tuple[array.array[int], int]:
    """The samples (channels interleaved) and channel count of an 8 kHz 16-bit WAV."""
    with wave.open(str(path), "rb") as w:
        assert (w.getsampwidth(), w.getframerate()) == (2, RATE), path
        return samples(w.readframes(w.getnframes())), w.getnchannels()


def write_tone_wav(path: Path, freq: float, seconds: float) -> Path:
    """`seconds` of a sine at `freq` as an 8 kHz mono 16-bit WAV."""
    xs = tone(freq, int(seconds * RATE))
    if sys.byteorder == "big":
        xs.byteswap()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(xs.tobytes())
    return path
