"""The generated fast paths of the PDU codec decide exactly what the checked path decides.

relay/sms/_codegen.py compiles each PDU layout into an encoder and a body parser that
return None whenever a value needs judging; the checked loop in pdu.py then raises the
exact error. So for any PDU or any body: the fast result is None, or equal to the
checked one; and whenever the checked path refuses, the fast one did not accept.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import KNOWN_IDS, framed
from test_pdu import VECTORS

from relay.sms import constants as c
from relay.sms.pdu import (
    _REGISTRY,
    HEADER,
    BindTransmitter,
    DataSm,
    DeliverSm,
    LocalSmppError,
    Pdu,
    QuerySmResp,
    SmppError,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    _parse_body_checked,
)


def checked_parse(wire: bytes) -> Pdu | SmppError:
    _, command_id, status, sequence = HEADER.unpack_from(wire)
    try:
        return _parse_body_checked(_REGISTRY[command_id], wire, status, sequence)
    except SmppError as exc:
        return exc


def fast_parse(wire: bytes) -> Pdu | SmppError | None:
    _, command_id, status, sequence = HEADER.unpack_from(wire)
    try:
        return _REGISTRY[command_id]._decode(wire, status, sequence)
    except SmppError as exc:  # only the TLV parser, shared with the checked path
        return exc


def same_error(a: SmppError, b: SmppError) -> bool:
    return (a.command_status, a.detail) == (b.command_status, b.detail)


@pytest.mark.parametrize(("name", "wire", "pdu"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vectors_take_the_fast_path(name: str, wire: bytes, pdu: Pdu) -> None:
    if not (pdu.empty_body_on_error and pdu.command_status):  # those always take the checked
        assert pdu._encode() == pdu._encode_checked() == wire
        assert fast_parse(wire) == pdu
    assert checked_parse(wire) == pdu


def test_init_and_with_sequence_match_dataclasses() -> None:
    sm = SubmitSm(source_addr="123", short_message=b"hi", sequence=4,
                  tlvs=(Tlv.u8(c.TAG_SAR_SEGMENT_SEQNUM, 1),))
    assert sm.with_sequence(9) == SubmitSm(source_addr="123", short_message=b"hi", sequence=9,
                                          tlvs=(Tlv.u8(c.TAG_SAR_SEGMENT_SEQNUM, 1),))
    assert sm.with_sequence(9) is not sm and sm.sequence == 4
    assert SubmitSm() == SubmitSm(service_type="", esm_class=0, tlvs=())
    with pytest.raises(TypeError):
        SubmitSm(no_such_field=1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        sm.sequence = 5  # type: ignore[misc]


@settings(max_examples=500)
@given(st.builds(framed, st.sampled_from(KNOWN_IDS), st.sampled_from([0, 0, 0x58]),
                 st.integers(0, 0xFFFFFFFF), st.binary(max_size=120)))
def test_fast_parse_agrees_with_checked(wire: bytes) -> None:
    fast, checked = fast_parse(wire), checked_parse(wire)
    if isinstance(fast, SmppError):
        assert isinstance(checked, SmppError) and same_error(fast, checked)
    elif fast is not None:
        assert fast == checked


# Field values around every limit: empty, the longest allowed, one over, NUL, non-ASCII.
text = st.sampled_from(["", "a", "8613800000001", "x" * 5, "x" * 6, "x" * 20, "x" * 21,
                        "x" * 16, "x" * 64, "x" * 65, "a\x00b", "é", "261122130000004+"])
octet = st.sampled_from([0, 1, 0x34, 255, 256, -1])
body = st.sampled_from([b"", b"hello", b"\x00" * 254, b"x" * 255])
tlvs = st.sampled_from([(), (Tlv.u16(c.TAG_USER_MESSAGE_REFERENCE, 7),),
                        (Tlv(c.TAG_MESSAGE_PAYLOAD, b"p" * 300),)])
sequence = st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x100000000])

pdus = st.one_of(
    st.builds(SubmitSm, service_type=text, source_addr_ton=octet, source_addr=text,
              destination_addr=text, esm_class=octet, schedule_delivery_time=text,
              validity_period=text, short_message=body, tlvs=tlvs, sequence=sequence),
    st.builds(DeliverSm, source_addr=text, destination_addr=text, data_coding=octet,
              short_message=body, tlvs=tlvs, sequence=sequence),
    st.builds(DataSm, source_addr=text, destination_addr=text, tlvs=tlvs, sequence=sequence),
    st.builds(SubmitSmResp, message_id=text, command_status=st.sampled_from([0, 0x58]),
              tlvs=tlvs, sequence=sequence),
    st.builds(QuerySmResp, message_id=text, final_date=text, message_state=octet,
              sequence=sequence),
    st.builds(BindTransmitter, system_id=text, password=text, system_type=text,
              interface_version=octet, sequence=sequence),
)


def outcome(encode: Any) -> bytes | str:
    try:
        return bytes(encode())
    except LocalSmppError as exc:
        return f"refused: {exc}"


@settings(max_examples=800)
@given(pdus)
def test_fast_encode_agrees_with_checked(pdu: Pdu) -> None:
    checked = outcome(pdu._encode_checked)
    # Error responses always carry their body now (issue 17); the skip stays harmless.
    fast = None if pdu.empty_body_on_error and pdu.command_status else pdu._encode()
    if fast is not None:
        assert fast == checked
        assert fast_parse(fast) == checked_parse(fast) == pdu
    assert outcome(pdu.__bytes__) == checked
