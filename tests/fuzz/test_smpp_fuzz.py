"""SMPP (relay/sms/): PDU decoding only ever fails with SmppError (carrying a
command_status); the framer and a server session take any byte stream, cut anywhere,
without raising; UDH, text decoding and reassembly fail only with their own errors."""

from __future__ import annotations

import contextlib
import struct

from fuzz_budget import fuzz_settings, mutate
from hypothesis import given
from hypothesis import strategies as st

from relay.sms import constants as c
from relay.sms.concat import ConcatError, Reassembler, parse_udh
from relay.sms.encoding import TextEncodingError, decode_text
from relay.sms.pdu import (
    BindTransceiver,
    DeliverSm,
    EnquireLink,
    PduFramer,
    SmppError,
    SubmitSm,
    parse_pdu,
)
from relay.sms.session import Role, SmppSession, accounts_authenticator

BIND = bytes(BindTransceiver(system_id="gw", password="pw", system_type="", interface_version=0x34,
                             sequence=1))
SUBMIT = bytes(SubmitSm(source_addr="8613811112222", destination_addr="8617055556666",
                        short_message=b"\x05\x00\x03\x07\x02\x01hello", esm_class=0x40,
                        data_coding=0, sequence=2))
DELIVER = bytes(DeliverSm(source_addr="1", destination_addr="2", short_message=b"\x00\x4e\x2d",
                          data_coding=8, sequence=3))
ENQUIRE = bytes(EnquireLink(sequence=4))
SEEDS = [BIND, SUBMIT, DELIVER, ENQUIRE, BIND + SUBMIT + ENQUIRE]
TOKENS = [b"\x00", b"\xff\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\x00\x04",
          b"\x00\x00\x00\x10", struct.pack("!I", 0x0424) + b"\x00\x02"]


def check_pdu(data: bytes) -> None:
    try:
        pdu = parse_pdu(data)
    except SmppError as exc:
        assert exc.command_status > 0
        return
    assert parse_pdu(bytes(pdu)) == pdu


@fuzz_settings(400)
@given(st.binary(max_size=300))
def test_random_pdus(data: bytes) -> None:
    check_pdu(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw(st.sampled_from(SEEDS)), draw, TOKENS)


@fuzz_settings(600)
@given(mutated())
def test_mutated_pdus(data: bytes) -> None:
    check_pdu(data)


@fuzz_settings(200)
@given(mutated(), st.lists(st.integers(1, 64), max_size=20))
def test_framer_and_session_take_any_stream(data: bytes, cuts: list[int]) -> None:
    framer = PduFramer()
    session = SmppSession(Role.SERVER, 0.0, authenticate=accounts_authenticator({"gw": "pw"}))
    pos, now = 0, 0.0
    for size in [*cuts, len(data)]:
        chunk = data[pos:pos + size]
        pos += size
        now += 0.01
        for item in framer.feed(chunk):
            assert isinstance(item, SmppError) or item.command_id > 0
        session.receive_data(chunk, now)
        session.data_to_send()
        if pos >= len(data):
            break


@fuzz_settings(300)
@given(st.binary(max_size=200), st.sampled_from([0, 1, 3, 8, 4, 0xF0]))
def test_udh_text_and_reassembly(body: bytes, coding: int) -> None:
    try:
        segment, rest = parse_udh(body)
    except ConcatError:
        return
    with contextlib.suppress(TextEncodingError, ValueError):
        decode_text(coding, rest)
    if segment is not None:
        r = Reassembler()
        with contextlib.suppress(ConcatError):
            r.add("k", segment, coding, rest, 0.0)
    assert c.ESME_ROK == 0
