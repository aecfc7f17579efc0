"""RTP codec vectors (RFC 3550 §5.1) and the wrap-around helpers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.rtp.packet import (
    RtpError,
    RtpPacket,
    is_rtcp,
    payload_bounds,
    seq_diff,
    seq_gt,
    ts_diff,
    unwrap,
)

# A PCMU packet: V=2, no P/X/CC, M=1, PT=0, seq=0x1234, ts=0xdeadbeef, ssrc=0x01020304.
PLAIN = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160
# V=2, P=1, X=1, CC=2, M=0, PT=101 (telephone-event), two CSRCs, a 1-word extension,
# 4 payload bytes (RFC 4733 event 5, E bit, volume 10, duration 800), 3 padding bytes.
FULL = (bytes.fromhex("b2650001000000a0cafebabe") + bytes.fromhex("0000000a0000000b")
        + bytes.fromhex("bede0001") + bytes.fromhex("10203040")
        + bytes.fromhex("058a0320") + b"\x00\x00\x03")
RTCP_RR = bytes.fromhex("80c90001deadbeef")


def test_parse_plain_packet() -> None:
    p = RtpPacket.parse(PLAIN)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (
        0, True, 0x1234, 0xDEADBEEF, 0x01020304)
    assert p.payload == b"\xff" * 160 and p.csrc == [] and p.extension is None
    assert bytes(p) == PLAIN


def test_parse_full_packet() -> None:
    p = RtpPacket.parse(FULL)
    assert p.payload_type == 101 and not p.marker and p.sequence_number == 1
    assert p.csrc == [10, 11]
    assert p.extension == (0xBEDE, bytes.fromhex("10203040"))
    assert p.payload == bytes.fromhex("058a0320") and p.padding == 3
    assert bytes(p) == FULL
    assert payload_bounds(FULL) == (28, 32)
    assert FULL[slice(*payload_bounds(FULL))] == p.payload


@pytest.mark.parametrize(("data", "error"), [
    (b"", "truncated RTP header: 0 bytes, need 12"),
    (PLAIN[:11], "truncated RTP header: 11 bytes, need 12"),
    (b"\x40" + PLAIN[1:], "RTP version 1, expected 2"),
    (bytes.fromhex("82001234deadbeef01020304") + b"\0\0\0\1", "truncated CSRC list"),
    (bytes.fromhex("90001234deadbeef01020304") + b"\xbe\xde", "truncated header extension"),
    (bytes.fromhex("90001234deadbeef01020304") + bytes.fromhex("bede0002") + b"\0" * 4,
     "truncated header extension: 2 words declared"),
    (bytes.fromhex("a0001234deadbeef01020304") + b"\x01\x02\x00", "invalid padding length 0"),
    (bytes.fromhex("a0001234deadbeef01020304") + b"\x01\x02\x09", "invalid padding length 9"),
    (RTCP_RR + b"\0" * 4, "packet type 201 is RTCP"),
])
def test_invalid_packets_raise_exact_errors(data: bytes, error: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(data)
    assert str(info.value).startswith(error)
    if "RTCP" not in error:
        with pytest.raises(RtpError):
            payload_bounds(data)


def test_rtcp_is_recognised() -> None:
    assert is_rtcp(RTCP_RR)
    assert all(is_rtcp(bytes([0x80, pt])) for pt in range(200, 205))
    assert not is_rtcp(PLAIN) and not is_rtcp(b"\x80\xc8"[:1])
    assert not is_rtcp(bytes([0x80, 0xC8 + 5]))  # 205 is outside RFC 5761 §4's range


def test_serialise_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        bytes(RtpPacket(payload_type=128))
    with pytest.raises(ValueError):
        bytes(RtpPacket(extension=(1, b"abc")))


def test_wrap_around_helpers() -> None:
    assert seq_diff(0, 65535) == 1 and seq_diff(65535, 0) == -1
    assert seq_diff(10, 5) == 5 and seq_diff(5, 10) == -5
    assert seq_gt(2, 65530) and not seq_gt(65530, 2)
    assert ts_diff(80, 0xFFFFFFF0) == 96 and ts_diff(0xFFFFFFF0, 80) == -96
    assert unwrap(0, 65535, 16) == 65536
    assert unwrap(65534, 65536, 16) == 65534
    assert unwrap(5, 65536 * 3 + 65530, 16) == 65536 * 4 + 5
    assert unwrap(100, None, 32) == 100
    assert unwrap(10, 0xFFFFFFFF, 32) == 0x100000000 + 10


@given(st.integers(0, 127), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFFFFFF), st.booleans(), st.lists(st.integers(0, 0xFFFFFFFF),
                                                            max_size=15),
       st.binary(max_size=64), st.integers(0, 20))
def test_round_trip_property(pt: int, seq: int, ts: int, ssrc: int, marker: bool,
                             csrc: list[int], payload: bytes, padding: int) -> None:
    if 200 - 128 <= pt <= 204 - 128 and marker:
        return  # the marker makes these look like RTCP (RFC 5761 §4 forbids them)
    p = RtpPacket(pt, seq, ts, ssrc, marker, csrc, None, payload, padding)
    assert RtpPacket.parse(bytes(p)) == p


@given(st.binary(max_size=40))
def test_parse_fails_only_with_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert bytes(p) == data or p.padding  # padding octets other than the last are not kept


def test_seq_diff_matches_struct_wrap() -> None:
    for a in (0, 1, 32767, 32768, 65535):
        for d in (-300, -1, 0, 1, 300):
            assert seq_diff((a + d) & 0xFFFF, a) == d
    assert struct.pack("!H", (65535 + 1) & 0xFFFF) == b"\0\0"
