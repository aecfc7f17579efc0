"""G.711 (ITU-T G.711) µ-law and A-law: decode tables built at import, and encoders.

Decoding is the recorder's hot loop, so it avoids a Python loop per sample: two
256-byte translation tables map each code to the low and the high byte of its
16-bit little-endian sample, `bytes.translate` applies them in C, and slice
assignment interleaves them. (audioop is deprecated and gone in Python 3.13.)
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable

__all__ = [
    "PT_PCMA",
    "PT_PCMU",
    "alaw_to_linear",
    "decode",
    "encode",
    "linear_to_alaw",
    "linear_to_ulaw",
    "tone",
    "ulaw_to_linear",
]

#: Static payload types (RFC 3551 §6, table 4).
PT_PCMU = 0
PT_PCMA = 8


def ulaw_to_linear(code: int) -> int:
    """One µ-law code to a 16-bit sample (G.711 §2, with the usual 0x84 bias)."""
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def alaw_to_linear(code: int) -> int:
    """One A-law code to a 16-bit sample (G.711 §3; even bits inverted with 0x55)."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def linear_to_ulaw(sample: int) -> int:
    """One 16-bit sample to a µ-law code (clipped at 32635 before the bias)."""
    sign = 0
    if sample < 0:
        sample = -sample
        sign = 0x80
    sample = min(sample, 32635) + 0x84
    exponent = max(0, (sample >> 7).bit_length() - 1)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def linear_to_alaw(sample: int) -> int:
    """One 16-bit sample to an A-law code (13-bit magnitude, segments of G.711 table 1)."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    # Segment ends are 0x1F, 0x3F, ... 0xFFF: one segment per extra magnitude bit.
    seg = min(8, max(0, value.bit_length() - 5))
    if seg >= 8:
        return 0x7F ^ mask
    code = seg << 4
    code |= (value >> 1) & 0x0F if seg < 2 else (value >> seg) & 0x0F
    return code ^ mask


def _tables(fn: object) -> tuple[bytes, bytes]:
    samples = [fn(c) & 0xFFFF for c in range(256)]  # type: ignore[operator]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


_ULAW_LO, _ULAW_HI = _tables(ulaw_to_linear)
_ALAW_LO, _ALAW_HI = _tables(alaw_to_linear)
_TABLES = {PT_PCMU: (_ULAW_LO, _ULAW_HI), PT_PCMA: (_ALAW_LO, _ALAW_HI)}


def decode(payload: bytes, pt: int) -> bytes:
    """G.711 payload (PT 0 or 8) to 16-bit little-endian linear PCM, two bytes a sample."""
    try:
        lo, hi = _TABLES[pt]
    except KeyError:
        raise ValueError(f"payload type {pt} is not G.711") from None
    out = bytearray(2 * len(payload))
    out[0::2] = payload.translate(lo)
    out[1::2] = payload.translate(hi)
    return bytes(out)


def encode(samples: Iterable[int], pt: int) -> bytes:
    """16-bit samples to a G.711 payload (PT 0 or 8); slow, for tests and load tools."""
    if pt == PT_PCMU:
        return bytes(linear_to_ulaw(s) for s in samples)
    if pt == PT_PCMA:
        return bytes(linear_to_alaw(s) for s in samples)
    raise ValueError(f"payload type {pt} is not G.711")


def tone(freq: float, n: int, *, rate: int = 8000, amplitude: float = 8000.0,
         start: int = 0) -> array.array[int]:
    """`n` samples of a sine at `freq` Hz, beginning at sample index `start`."""
    w = 2 * math.pi * freq / rate
    return array.array("h", (int(amplitude * math.sin(w * (start + i))) for i in range(n)))
