"""RTP/RTCP (relay/rtp/): the packet codec, payload bounds and RFC 4733 digits only ever
fail with RtpError; the relay session (RTP and RTCP, both sides) never raises on any
datagram from anywhere and forwards only to addresses the SDP or a latch gave it."""

from __future__ import annotations

import contextlib
import struct

from fuzz_budget import fuzz_settings, mutate
from hypothesis import given
from hypothesis import strategies as st

from relay.rtp.dtmf import DigitDetector, TelephoneEvent
from relay.rtp.packet import RtpError, RtpPacket, is_rtcp, payload_bounds
from relay.rtp.session import RelaySession

RTP = bytes([0x80, 0x00]) + struct.pack("!HII", 7, 160, 0x1234) + b"\xff" * 160
EXT = bytes([0x90 | 0x20 | 0x02, 0xE5]) + struct.pack("!HII", 65535, 2**32 - 1, 9) + \
    b"\x00\x00\x00\x01" * 2 + b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00" + b"\x01\x00\x0a" + b"\x03"
DTMF = bytes([0x80, 101]) + struct.pack("!HII", 8, 320, 0x1234) + bytes([5, 0x8a, 0, 160])
RTCP_SR = bytes([0x80, 200, 0, 6]) + b"\x00" * 24
SEEDS = [RTP, EXT, DTMF, RTCP_SR]
TOKENS = [b"\x80", b"\x90", b"\xa0", b"\xbf", b"\x00\x00", b"\xff\xff", b"\xbe\xde"]
PEERS = [("192.0.2.1", 4000), ("192.0.2.1", 4001), ("192.0.2.2", 5000),
         ("198.51.100.9", 4000)]


def check_codec(data: bytes) -> None:
    is_rtcp(data)
    try:
        pkt = RtpPacket.parse(data)
    except RtpError:
        pass
    else:
        again = RtpPacket.parse(bytes(pkt))
        assert again.payload == pkt.payload and again == pkt
        start, end = payload_bounds(data)
        assert data[start:end] == pkt.payload
    with contextlib.suppress(RtpError):
        TelephoneEvent.parse(data[12:16])


@fuzz_settings(400)
@given(st.binary(max_size=300))
def test_random_datagrams(data: bytes) -> None:
    check_codec(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw(st.sampled_from(SEEDS)), draw, TOKENS)


@fuzz_settings(600)
@given(mutated())
def test_mutated_packets(data: bytes) -> None:
    check_codec(data)


@fuzz_settings(200)
@given(st.lists(st.tuples(st.integers(0, 1), st.booleans(), st.sampled_from(PEERS),
                          st.one_of(mutated(), st.binary(max_size=64))), max_size=40))
def test_relay_session_and_digits_take_anything(traffic: list[tuple[int, bool, tuple[str, int],
                                                                  bytes]]) -> None:
    session = RelaySession(0.0)
    session.set_remote(0, "192.0.2.1", 4000)
    session.set_remote(1, "192.0.2.2", 5000)
    allowed = {None, ("192.0.2.1", 4000), ("192.0.2.1", 4001), ("192.0.2.2", 5000),
               ("192.0.2.2", 5001)}
    detector = DigitDetector(101)
    now = 0.0
    for side, rtcp, source, data in traffic:
        now += 0.02
        dest = (session.receive_rtcp(side, data, source, now) if rtcp
                else session.receive(side, data, source, now))
        assert dest in allowed, dest  # never toward a stranger that sent something
        for digit in detector.receive(data, now) + detector.expire(now):
            assert digit.digit in "0123456789*#ABCD"
