"""G.711 tables and codec (recordings/g711.py) against the ITU-T G.711 values."""

from __future__ import annotations

import array
import os
import sys

import pytest

from recordings.g711 import (
    PT_PCMA,
    PT_PCMU,
    alaw_to_linear,
    decode,
    encode,
    linear_to_alaw,
    linear_to_ulaw,
    tone,
    ulaw_to_linear,
)


def test_known_values() -> None:
    # µ-law: 0xFF and 0x7F are the two zeros; 0x00 and 0x80 the extremes.
    assert (ulaw_to_linear(0xFF), ulaw_to_linear(0x7F)) == (0, 0)
    assert (ulaw_to_linear(0x00), ulaw_to_linear(0x80)) == (-32124, 32124)
    # A-law: 0xD5/0x55 are the smallest magnitudes; 0xAA/0x2A the extremes.
    assert (alaw_to_linear(0xD5), alaw_to_linear(0x55)) == (8, -8)
    assert (alaw_to_linear(0xAA), alaw_to_linear(0x2A)) == (32256, -32256)
    assert linear_to_ulaw(0) == 0xFF and linear_to_alaw(0) == 0xD5


def test_encode_inverts_decode_for_every_code() -> None:
    assert [c for c in range(256) if linear_to_ulaw(ulaw_to_linear(c)) != c] == [0x7F]
    assert [c for c in range(256) if linear_to_alaw(alaw_to_linear(c)) != c] == []


@pytest.mark.parametrize("pt", [PT_PCMU, PT_PCMA])
def test_quantisation_error_is_bounded(pt: int) -> None:
    for x in range(-32768, 32768, 37):
        y = array.array("h", decode(encode([x], pt), pt))[0]
        # The largest step in the top segment is 1024 (µ-law) and 1024 (A-law).
        assert abs(y - x) <= 1024 if abs(x) < 32000 else abs(y - x) <= 1100


@pytest.mark.parametrize("pt", [PT_PCMU, PT_PCMA])
def test_decode_matches_the_scalar_tables(pt: int) -> None:
    data = bytes(range(256)) + os.urandom(64)
    fn = ulaw_to_linear if pt == PT_PCMU else alaw_to_linear
    got = array.array("h", decode(data, pt))
    if sys.byteorder == "big":
        got.byteswap()
    assert list(got) == [fn(c) for c in data]


def test_decode_rejects_other_payload_types() -> None:
    with pytest.raises(ValueError):
        decode(b"\x00", 101)
    with pytest.raises(ValueError):
        encode([0], 9)


def test_tone_round_trip_keeps_the_signal() -> None:
    t = tone(440, 800)
    back = array.array("h", decode(encode(t, PT_PCMU), PT_PCMU))
    err = sum((a - b) ** 2 for a, b in zip(t, back, strict=True)) / len(t)
    power = sum(a * a for a in t) / len(t)
    assert err / power < 0.001  # G.711 gives ~38 dB SNR
