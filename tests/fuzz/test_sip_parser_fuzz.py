"""Property tests: the SIP parser and framer only ever fail with SipParseError, and
parse(bytes(parse(x))) is stable for messages that parse."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.sip import SipParseError, StreamFramer, TransactionLayer, parse_message

VECTORS = Path(__file__).parent.parent / "vectors" / "sip"
SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*.sip"))]
SEEDS.append(
    b"INVITE sip:+8613800000001@192.0.2.10;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:+8613800000001@192.0.2.10>\r\n"
    b'From: "A, B" <sip:+8617000000042@198.51.100.7>;tag=19\r\n'
    b"Call-ID: a84b4c76e66710\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:x@198.51.100.7>\r\nContent-Length: 4\r\n\r\nv=0\n"
)

TOKENS = [b"\r\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"@", b"%", b"=",
          b"?", b"sip:", b"SIP/2.0", b"Via", b"Content-Length", b"l", b"tag", b"branch",
          b"\r\n ", b"\x00", b"\xff", b"0", b"99999999999999999999", b"[", b"]"]

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        return
    once = bytes(msg)
    again = parse_message(once)
    assert bytes(again) == once
    assert again.body == msg.body
    # bytes() always writes Content-Length, so only that header may have been added.
    assert [h for h in again.headers if h[0] != "Content-Length"] == \
        [h for h in msg.headers if h[0] != "Content-Length"]


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        else:
            del data[pos:]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_valid_messages(data: bytes) -> None:
    check(data)


@SETTINGS
@given(mutated())
def test_layer_datagram_handler_never_raises(data: bytes) -> None:
    layer = TransactionLayer()
    layer.receive_datagram(data, ("192.0.2.1", 5060), 0.0)
    for out, _addr in layer.datagrams_to_send():
        assert out.startswith(b"SIP/2.0 ")


@SETTINGS
@given(st.lists(mutated(), min_size=1, max_size=4), st.integers(1, 64))
def test_framer_only_raises_parse_error(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(messages)
    framer = StreamFramer()
    try:
        for i in range(0, len(stream), chunk):
            for m in framer.feed(stream[i:i + chunk]):
                check(m)
    except SipParseError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SEEDS))
def test_valid_seeds_round_trip(data: bytes) -> None:
    check(data)
