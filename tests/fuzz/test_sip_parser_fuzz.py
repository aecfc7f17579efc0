"""Property tests: the SIP parser and framer only ever fail with SipParseError, and
parse(bytes(parse(x))) is stable for messages that parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fuzz_budget import fuzz_settings
from hypothesis import given
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

SETTINGS = fuzz_settings(300)


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


@fuzz_settings(100)
@given(st.sampled_from(SEEDS))
def test_valid_seeds_round_trip(data: bytes) -> None:
    check(data)


# -- the B2BUA core behind the transaction layer --------------------------------------
_X, _A, _B = "+8617055556666", "+8613811112222", "+8613933334444"


def _callmap() -> Any:
    from relay.b2bua.callmap import CallMap, Settings
    from relay.bindings.model import Binding, Mode
    from relay.bindings.table import BindingTable

    table = BindingTable()
    table.apply(Binding(id="00000000000000aa", mode=Mode.AXB, x=_X, a=_A, b=_B,
                        created_at=0.0))
    return CallMap(Settings(outbound=("127.0.0.1", 5080)), table)


_CALL = (
    f"INVITE sip:{_X}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\n"
    f"From: <sip:{_A}@127.0.0.1>;tag=1\r\nTo: <sip:{_X}@127.0.0.1>\r\nCall-ID: c1\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5061>\r\nMax-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\nContent-Length: 98\r\n\r\n"
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\n").encode()


@SETTINGS
@given(st.lists(st.one_of(mutated(), st.just(_CALL)), min_size=1, max_size=5))
def test_callmap_takes_any_datagrams(datagrams: list[bytes]) -> None:
    """The call map (admission, dialogs, legs) never raises on what the layer lets
    through; media jobs are answered with an error, as a failing backend would."""
    sw = _callmap()
    for i, data in enumerate(datagrams):
        sw.receive_datagram(data, ("127.0.0.1", 5061), float(i))
        for _ in range(10):
            sw.datagrams_to_send()
            jobs = sw.take_jobs()
            if not jobs:
                break
            for job in jobs:
                sw.media_done(job, None, RuntimeError("no media here"), float(i))
        sw.take_call_events()
        sw.handle_timer(float(i) + 40.0)
