"""Property tests: the DNS decoder only ever fails with DnsError, whatever the bytes."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.sip.dns import NAPTR, SRV, DnsError, DnsMessage, decode_message, encode_query

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# A real answer to mutate: SRV with compressed names, then a NAPTR.
SEED = (struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0)
        + b"\x04_sip\x04_udp\x05trunk\x04test\x00" + struct.pack("!HH", SRV, 1)
        + b"\xc0\x0c" + struct.pack("!HHIH", SRV, 1, 60, 10) + struct.pack("!HHH", 1, 2, 5060)
        + b"\x01b\xc0\x16"
        + b"\xc0\x16" + struct.pack("!HHIH", NAPTR, 1, 60, 17) + struct.pack("!HH", 1, 2)
        + b"\x01s\x07sip+d2u\x00" + b"\xc0\x0c")
TOKENS = [b"\xc0\x0c", b"\xc0\x00", b"\xc0", b"\x3f", b"\x40", b"\x00", b"\xff\xff",
          b"\x00\x21", b"\x00\x23", b"\x00\x01", b"\x00\x1c", b"\x00\x05", b"\x00\x06"]


def check(data: bytes) -> None:
    try:
        message = decode_message(data)
    except DnsError:
        return
    assert isinstance(message, DnsMessage)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(SEED)), st.sampled_from(TOKENS)), max_size=6),
       st.integers(0, len(SEED)))
def test_mutated_answer(edits: list[tuple[int, bytes]], cut: int) -> None:
    data = bytearray(SEED)
    for at, token in edits:
        data[at:at + len(token)] = token
    check(bytes(data[:cut] if cut < len(SEED) // 2 else data))


@SETTINGS
@given(st.text(max_size=80))
def test_encoder_raises_only_dns_error(name: str) -> None:
    try:
        _qid, wire = encode_query(name, SRV)
    except DnsError:
        return
    assert decode_message(wire).questions[0].rtype == SRV


def test_seed_decodes() -> None:
    message = decode_message(SEED)
    assert [r.rtype for r in message.answers] == [SRV, NAPTR]
