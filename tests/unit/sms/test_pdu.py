"""PDU codec against hand-built SMPP 3.4 §4 byte layouts, and the exact error for bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from relay.sms import constants as c
from relay.sms.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    LocalSmppError,
    Outbind,
    Pdu,
    PduFramer,
    QuerySm,
    QuerySmResp,
    SmppError,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
    parse_pdu,
)


def h(hexstr: str) -> bytes:
    return bytes.fromhex(hexstr.replace(" ", ""))


BIND_BODY = b"SMPP3TEST\x00secret08\x00SUBMIT1\x00\x34\x01\x01\x00"
BIND_FIELDS: dict[str, Any] = dict(
    system_id="SMPP3TEST", password="secret08", system_type="SUBMIT1",
    interface_version=0x34, addr_ton=1, addr_npi=1, address_range="",
)
# submit_sm / deliver_sm body, §4.4.1 field order.
SM_BODY = (
    b"\x00"  # service_type NULL
    b"\x01\x01" b"8613800000001\x00"  # source ton, npi, addr
    b"\x01\x01" b"8617000000001\x00"  # dest ton, npi, addr
    b"\x00\x00\x00"  # esm_class, protocol_id, priority_flag
    b"\x00\x00"  # schedule_delivery_time, validity_period NULL
    b"\x01\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    b"\x05hello"  # sm_length, short_message
)
SM_FIELDS: dict[str, Any] = dict(source_addr_ton=1, source_addr_npi=1, source_addr="8613800000001",
                 dest_addr_ton=1, dest_addr_npi=1, destination_addr="8617000000001",
                 registered_delivery=1, short_message=b"hello")

VECTORS: list[tuple[str, bytes, Pdu]] = [
    ("bind_transmitter", h("0000002f 00000002 00000000 00000001") + BIND_BODY,
     BindTransmitter(sequence=1, **BIND_FIELDS)),
    ("bind_receiver", h("0000002f 00000001 00000000 00000002") + BIND_BODY,
     BindReceiver(sequence=2, **BIND_FIELDS)),
    ("bind_transceiver", h("0000002f 00000009 00000000 00000003") + BIND_BODY,
     BindTransceiver(sequence=3, **BIND_FIELDS)),
    ("bind_transmitter_resp", h("00000015 80000002 00000000 00000001") + b"SMSC\x00",
     BindTransmitterResp(sequence=1, system_id="SMSC")),
    ("bind_transceiver_resp+sc_interface_version",
     h("0000001a 80000009 00000000 00000003") + b"SMSC\x00" + h("0210 0001 34"),
     BindTransceiverResp(sequence=3, system_id="SMSC",
                         tlvs=(Tlv.u8(c.TAG_SC_INTERFACE_VERSION, 0x34),))),
    ("bind_transceiver_resp error", h("00000015 80000009 0000000e 00000003") + b"SMSC\x00",
     BindTransceiverResp(sequence=3, command_status=c.ESME_RINVPASWD, system_id="SMSC")),
    ("outbind", h("00000018 0000000b 00000000 00000007") + b"SMSC\x00pw\x00",
     Outbind(sequence=7, system_id="SMSC", password="pw")),
    ("unbind", h("00000010 00000006 00000000 00000004"), Unbind(sequence=4)),
    ("unbind_resp", h("00000010 80000006 00000000 00000004"), UnbindResp(sequence=4)),
    ("enquire_link", h("00000010 00000015 00000000 7fffffff"), EnquireLink(sequence=0x7FFFFFFF)),
    ("enquire_link_resp", h("00000010 80000015 00000000 00000005"), EnquireLinkResp(sequence=5)),
    ("generic_nack", h("00000010 80000000 00000003 00000009"),
     GenericNack(sequence=9, command_status=c.ESME_RINVCMDID)),
    ("submit_sm", h("00000040 00000004 00000000 0000000a") + SM_BODY,
     SubmitSm(sequence=10, **SM_FIELDS)),
    ("submit_sm+user_message_reference",
     h("00000046 00000004 00000000 0000000a") + SM_BODY + h("0204 0002 0007"),
     SubmitSm(sequence=10, tlvs=(Tlv.u16(c.TAG_USER_MESSAGE_REFERENCE, 7),), **SM_FIELDS)),
    ("submit_sm_resp", h("00000017 80000004 00000000 0000000a") + b"abc123\x00",
     SubmitSmResp(sequence=10, message_id="abc123")),
    # §4.4.2 allows no body on an error; the relay sends an empty message_id (one NUL),
    # as Kannel expects (issue 17), and parses both (test_bodiless_error_responses_parse).
    ("submit_sm_resp throttled", h("00000011 80000004 00000058 0000000a") + b"\x00",
     SubmitSmResp(sequence=10, command_status=c.ESME_RTHROTTLED)),
    ("deliver_sm", h("00000040 00000005 00000000 0000000b") + SM_BODY,
     DeliverSm(sequence=11, **SM_FIELDS)),
    ("deliver_sm receipt TLVs",
     h("0000004c 00000005 00000000 0000000b") + SM_BODY + h("001e 0003 6d3100 0427 0001 02"),
     DeliverSm(sequence=11, tlvs=(Tlv.cstring(c.TAG_RECEIPTED_MESSAGE_ID, "m1"),
                                  Tlv.u8(c.TAG_MESSAGE_STATE, 2)), **SM_FIELDS)),
    ("deliver_sm_resp", h("00000011 80000005 00000000 0000000b") + b"\x00",
     DeliverSmResp(sequence=11)),
    ("data_sm", h("00000028 00000103 00000000 0000000c")
     + b"\x00" + b"\x01\x01123\x00" + b"\x01\x01456\x00" + b"\x00\x00\x08"
     + h("0424 0004 4f60597d"),
     DataSm(sequence=12, source_addr_ton=1, source_addr_npi=1, source_addr="123",
            dest_addr_ton=1, dest_addr_npi=1, destination_addr="456", data_coding=8,
            tlvs=(Tlv(c.TAG_MESSAGE_PAYLOAD, h("4f60597d")),))),
    ("data_sm_resp", h("00000013 80000103 00000000 0000000c") + b"m1\x00",
     DataSmResp(sequence=12, message_id="m1")),
    ("query_sm", h("00000019 00000003 00000000 0000000d") + b"m1\x00\x01\x01123\x00",
     QuerySm(sequence=13, message_id="m1", source_addr_ton=1, source_addr_npi=1,
             source_addr="123")),
    ("query_sm_resp", h("00000026 80000003 00000000 0000000d")
     + b"m1\x00" + b"261122130000004+\x00" + b"\x02\x00",
     QuerySmResp(sequence=13, message_id="m1", final_date="261122130000004+",
                 message_state=2, error_code=0)),
    ("cancel_sm", h("00000020 00000008 00000000 0000000e")
     + b"\x00m1\x00\x01\x01123\x00\x01\x01456\x00",
     CancelSm(sequence=14, message_id="m1", source_addr_ton=1, source_addr_npi=1,
              source_addr="123", dest_addr_ton=1, dest_addr_npi=1, destination_addr="456")),
    ("cancel_sm_resp", h("00000010 80000008 00000000 0000000e"), CancelSmResp(sequence=14)),
]


@pytest.mark.parametrize(("name", "wire", "pdu"), VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_round_trip(name: str, wire: bytes, pdu: Pdu) -> None:
    assert int.from_bytes(wire[:4], "big") == len(wire)  # the vector itself is framed right
    assert bytes(pdu) == wire
    assert type(pdu).parse(wire) == pdu
    assert parse_pdu(wire) == pdu


def test_every_command_id_has_a_vector() -> None:
    ids = {v[2].command_id for v in VECTORS}
    assert ids == {
        c.GENERIC_NACK, c.BIND_RECEIVER, c.BIND_RECEIVER_RESP, c.BIND_TRANSMITTER,
        c.BIND_TRANSMITTER_RESP, c.QUERY_SM, c.QUERY_SM_RESP, c.SUBMIT_SM, c.SUBMIT_SM_RESP,
        c.DELIVER_SM, c.DELIVER_SM_RESP, c.UNBIND, c.UNBIND_RESP, c.CANCEL_SM,
        c.CANCEL_SM_RESP, c.BIND_TRANSCEIVER, c.BIND_TRANSCEIVER_RESP, c.OUTBIND,
        c.ENQUIRE_LINK, c.ENQUIRE_LINK_RESP, c.DATA_SM, c.DATA_SM_RESP,
    } - {c.BIND_RECEIVER_RESP}
    wire = h("00000015 80000001 00000000 00000001") + b"SMSC\x00"
    assert parse_pdu(wire).command_id == c.BIND_RECEIVER_RESP


def test_unknown_tlv_kept_raw() -> None:
    wire = h("00000047 00000004 00000000 0000000a") + SM_BODY + h("1401 0003 aabbcc")
    pdu = SubmitSm.parse(wire)
    assert pdu.tlv(0x1401) == Tlv(0x1401, h("aabbcc"))
    assert bytes(pdu) == wire


def test_parse_as_wrong_type() -> None:
    with pytest.raises(SmppError) as e:
        SubmitSm.parse(bytes(EnquireLink(sequence=3)))
    assert e.value.command_status == c.ESME_RINVCMDID


def _sm(body: bytes, cid: int = c.SUBMIT_SM, seq: int = 0x42) -> bytes:
    return (16 + len(body)).to_bytes(4, "big") + cid.to_bytes(4, "big") + bytes(4) + \
        seq.to_bytes(4, "big") + body


BAD = [
    ("shorter than header", h("00000010 00000015 0000"), c.ESME_RINVCMDLEN),
    ("length says more", h("00000014 00000015 00000000 00000001"), c.ESME_RINVCMDLEN),
    ("unknown command_id", h("00000010 00000099 00000000 00000042"), c.ESME_RINVCMDID),
    ("enquire_link with a body", _sm(b"\x00\x00\x00\x00", c.ENQUIRE_LINK), c.ESME_RINVCMDLEN),
    ("submit_sm cut after source", _sm(b"\x00\x01\x01123\x00"), c.ESME_RINVCMDLEN),
    ("source_addr 21 chars", _sm(b"\x00\x01\x01" + b"1" * 21 + b"\x00" + SM_BODY[17:]),
     c.ESME_RINVSRCADR),
    ("destination_addr 21 chars",
     _sm(SM_BODY[:17] + b"\x01\x01" + b"2" * 21 + b"\x00" + SM_BODY[33:]), c.ESME_RINVDSTADR),
    ("service_type 6 chars", _sm(b"ABCDEF\x00" + SM_BODY[1:]), c.ESME_RINVSERTYP),
    ("schedule 5 chars", _sm(SM_BODY[:36] + b"12345\x00" + SM_BODY[37:]), c.ESME_RINVSCHED),
    ("validity 3 chars", _sm(SM_BODY[:37] + b"123\x00" + SM_BODY[38:]), c.ESME_RINVEXPIRY),
    ("sm_length 255", _sm(SM_BODY[:42] + b"\xff" + b"x" * 255), c.ESME_RINVMSGLEN),
    ("sm_length past end", _sm(SM_BODY[:42] + b"\x09hello"), c.ESME_RINVCMDLEN),
    ("truncated TLV header", _sm(SM_BODY + b"\x02\x04"), c.ESME_RINVOPTPARSTREAM),
    ("TLV longer than PDU", _sm(SM_BODY + h("0424 0010 00")), c.ESME_RINVOPTPARSTREAM),
    ("sar_msg_ref_num 1 octet", _sm(SM_BODY + h("020c 0001 07")), c.ESME_RINVPARLEN),
    ("system_id 16 chars", _sm(b"A" * 16 + b"\x00pw\x00\x00\x34\x00\x00\x00", c.BIND_TRANSCEIVER),
     c.ESME_RINVSYSID),
    ("password 9 chars",
     _sm(b"gw\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00", c.BIND_TRANSMITTER),
     c.ESME_RINVPASWD),
    ("system_id not ASCII", _sm(b"g\xffw\x00pw\x00\x00\x34\x00\x00\x00", c.BIND_RECEIVER),
     c.ESME_RINVSYSID),
    ("TLV on a PDU without TLVs", _sm(b"m1\x00\x01\x01123\x00" + h("0204 0002 0001"), c.QUERY_SM),
     c.ESME_RINVCMDLEN),
]


@pytest.mark.parametrize(("name", "wire", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_pdu_exact_status(name: str, wire: bytes, status: int) -> None:
    with pytest.raises(SmppError) as e:
        parse_pdu(wire)
    assert e.value.command_status == status, e.value


def test_error_keeps_sequence_and_command_id() -> None:
    with pytest.raises(SmppError) as e:
        parse_pdu(_sm(b"\x00\x01\x01" + b"1" * 21 + b"\x00" + SM_BODY[17:], seq=77))
    assert (e.value.sequence, e.value.command_id) == (77, c.SUBMIT_SM)


@pytest.mark.parametrize(("pdu", "match"), [
    (BindTransmitter(system_id="A" * 16), "system_id"),
    (BindTransmitter(password="p" * 9), "password"),
    (SubmitSm(short_message=b"x" * 255), "254"),
    (SubmitSm(source_addr="é"), "source_addr"),
    (SubmitSm(schedule_delivery_time="1234"), "16 characters"),
    (SubmitSm(esm_class=256), "one octet"),
    (EnquireLink(sequence=0x100000000), "sequence"),
    (EnquireLink(tlvs=(Tlv.u8(1, 1),)), "no TLVs"),
])
def test_local_errors_on_encode(pdu: Pdu, match: str) -> None:
    with pytest.raises(LocalSmppError, match=match):
        bytes(pdu)


# ---- framer ----
def test_framer_byte_by_byte() -> None:
    stream = b"".join(v[1] for v in VECTORS)
    framer = PduFramer()
    got: list[object] = []
    for i in range(len(stream)):
        got += framer.feed(stream[i : i + 1])
    assert got == [v[2] for v in VECTORS]
    assert framer.buffered == 0


def test_framer_skips_bad_body_and_continues() -> None:
    bad = h("00000014 00000015 00000000 00000005 00000000")  # enquire_link with a body
    good = bytes(EnquireLink(sequence=6))
    out = PduFramer().feed(bad + good)
    assert isinstance(out[0], SmppError)
    assert (out[0].command_status, out[0].sequence, out[0].fatal) == (c.ESME_RINVCMDLEN, 5, False)
    assert out[1] == EnquireLink(sequence=6)


@pytest.mark.parametrize("length", [0, 15, 0x00100000, 0xFFFFFFFF])
def test_framer_bad_length_is_fatal(length: int) -> None:
    framer = PduFramer()
    wire = length.to_bytes(4, "big") + h("00000015 00000000 00000008")
    out = framer.feed(wire)
    assert len(out) == 1 and isinstance(out[0], SmppError)
    assert out[0].command_status == c.ESME_RINVCMDLEN and out[0].fatal
    assert out[0].sequence == 8
    assert framer.broken
    assert framer.feed(bytes(EnquireLink(sequence=1))) == []  # never resynchronises by guess


def test_framer_waits_for_rest() -> None:
    framer = PduFramer()
    wire = bytes(SubmitSm(**SM_FIELDS, sequence=3))
    assert framer.feed(wire[:20]) == []
    assert framer.buffered == 20
    assert framer.feed(wire[20:]) == [SubmitSm(**SM_FIELDS, sequence=3)]


@pytest.mark.parametrize("cls", [SubmitSmResp, DeliverSmResp])
def test_bodiless_error_responses_parse_and_are_sent_with_an_empty_message_id(
        cls: type[Pdu]) -> None:
    bare = h("00000010") + cls.command_id.to_bytes(4, "big") + h("00000045 00000007")
    pdu = cls.parse(bare)
    assert (pdu.command_status, pdu.sequence, pdu.message_id) == (0x45, 7, "")  # type: ignore[attr-defined]
    wire = bytes(pdu)
    assert wire[16:] == b"\x00" and int.from_bytes(wire[:4], "big") == 17
