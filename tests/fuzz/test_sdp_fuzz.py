"""SDP (relay/sdp.py): parsing random and mutated bodies only ever fails with SdpError;
what parses round-trips, and the B2BUA's rewrite of it never crashes or leaks."""

from __future__ import annotations

from fuzz_budget import fuzz_settings, mutate
from hypothesis import given
from hypothesis import strategies as st

from relay.sdp import (
    RelayOrigin,
    SdpError,
    SessionDescription,
    choose_local_media,
    rewrite_for_peer,
)

SEEDS = [
    b"v=0\r\no=alice 53655765 2353687637 IN IP4 192.0.2.7\r\ns=secret\r\n"
    b"c=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\na=ptime:20\r\n",
    b"v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 8\r\n"
    b"c=IN IP6 2001:db8::1\r\nm=video 7000 RTP/AVP 96\r\nc=IN IP4 198.51.100.1\r\n"
    b"a=rtpmap:96 H264/90000\r\na=candidate:1 1 UDP 1 192.0.2.9 5000 typ host\r\n",
]
TOKENS = [b"\r\n", b"\n", b"=", b" ", b"m=audio ", b"c=IN IP4 ", b"a=rtpmap:", b"o=",
          b"v=0\r\n", b"0.0.0.0", b"::", b"99999999999999999999", b"/", b"\x00", b"\xff"]


def check(data: bytes) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except SdpError:
        return
    once = bytes(sdp)
    assert bytes(SessionDescription.parse(once)) == once
    try:
        choose_local_media(sdp)
        out = rewrite_for_peer(sdp, relay_address="203.0.113.5", relay_port=40000,
                               origin=RelayOrigin(sess_id=77, version=1))
    except SdpError:
        return
    for line in bytes(out).split(b"\r\n"):  # only the relay's identity and address
        if line.startswith((b"o=", b"c=", b"s=")):
            assert b"192.0.2.7" not in line and b"alice" not in line, line
            assert b"secret" not in line, line
        assert not line.startswith(b"a=candidate"), line


@fuzz_settings(300)
@given(st.binary(max_size=500))
def test_random_bytes(data: bytes) -> None:
    check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw(st.sampled_from(SEEDS)), draw, TOKENS)


@fuzz_settings(600)
@given(mutated())
def test_mutated_bodies(data: bytes) -> None:
    check(data)
