"""Whole messages from part events (UDH and SAR) and delivery receipts."""

from __future__ import annotations

from datetime import datetime

import pytest

from relay.sms import constants as c
from relay.sms.concat import ConcatError, split_text
from relay.sms.events import MessageReceived
from relay.sms.message import MessageAssembler
from relay.sms.pdu import DeliverSm, SubmitSm, Tlv
from relay.sms.receipt import (
    Receipt,
    build_receipt_text,
    is_receipt,
    parse_receipt_text,
    receipt_deliver_sm,
)


def event(pdu: SubmitSm | DeliverSm) -> MessageReceived:
    return MessageReceived(
        sequence=pdu.sequence, command_id=pdu.command_id, source_addr=pdu.source_addr,
        source_addr_ton=pdu.source_addr_ton, source_addr_npi=pdu.source_addr_npi,
        destination_addr=pdu.destination_addr, dest_addr_ton=pdu.dest_addr_ton,
        dest_addr_npi=pdu.dest_addr_npi, esm_class=pdu.esm_class,
        registered_delivery=pdu.registered_delivery, data_coding=pdu.data_coding,
        short_message=pdu.short_message, pdu=pdu,
    )


def test_single_part_message() -> None:
    m = MessageAssembler().add("gw", event(SubmitSm(source_addr="A", destination_addr="X",
                                                    data_coding=8,
                                                    short_message="你好".encode("utf-16-be"))), 0)
    assert m is not None and m.text == "你好" and len(m.parts) == 1 and m.receipt is None


def test_udh_parts_reassembled_once() -> None:
    text = "Order 42 is ready {pickup} at the [north] gate. " * 8
    dc, parts = split_text(text, 77)
    asm = MessageAssembler()
    evs = [event(SubmitSm(sequence=i + 1, source_addr="A", destination_addr="X", data_coding=dc,
                          esm_class=c.ESM_CLASS_UDHI, short_message=p))
           for i, p in enumerate(parts)]
    results = [asm.add("gw", e, 0.0) for e in reversed(evs)]
    assert results[:-1] == [None] * (len(parts) - 1)
    m = results[-1]
    assert m is not None and m.text == text
    assert m.esm_class == 0  # UDHI cleared on the whole message
    assert [p.sequence for p in m.parts] == [1, 2, 3]


def test_sar_parts_reassembled() -> None:
    chunks = ["中文".encode("utf-16-be"), "短信".encode("utf-16-be")]
    asm = MessageAssembler()
    out = []
    for seq, chunk in ((2, chunks[1]), (1, chunks[0])):
        tlvs = (Tlv.u16(c.TAG_SAR_MSG_REF_NUM, 0x1234), Tlv.u8(c.TAG_SAR_TOTAL_SEGMENTS, 2),
                Tlv.u8(c.TAG_SAR_SEGMENT_SEQNUM, seq))
        out.append(asm.add("gw", event(SubmitSm(source_addr="A", destination_addr="X",
                                                data_coding=8, short_message=chunk,
                                                tlvs=tlvs)), 0.0))
    assert out[0] is None and out[1] is not None and out[1].text == "中文短信"


def test_bad_udh_raises_and_unknown_coding_keeps_bytes() -> None:
    asm = MessageAssembler()
    with pytest.raises(ConcatError):
        asm.add("gw", event(SubmitSm(esm_class=0x40, short_message=b"\x09\x00")), 0.0)
    m = asm.add("gw", event(SubmitSm(data_coding=4, short_message=b"\x01\x02")), 0.0)
    assert m is not None and m.text is None and m.payload == b"\x01\x02"


def test_incomplete_set_expires() -> None:
    asm = MessageAssembler(timeout=30)
    _, parts = split_text("x" * 300, 1)
    e = event(SubmitSm(source_addr="A", esm_class=0x40, short_message=parts[0]))
    assert asm.add("gw", e, 0.0) is None
    assert asm.next_deadline() == 30.0
    assert asm.expire(30.0) == [(e,)]


def test_receipt_text_round_trip() -> None:
    r = Receipt(message_id="abc123", stat="DELIVRD", submit_date=datetime(2026, 11, 22, 13, 5),
                done_date=datetime(2026, 11, 22, 13, 6), err="000", text="hello")
    text = build_receipt_text(r)
    assert text == ("id:abc123 sub:001 dlvrd:001 submit date:2611221305 "
                    "done date:2611221306 stat:DELIVRD err:000 text:hello")
    assert parse_receipt_text(text) == r
    assert parse_receipt_text("just a normal message") is None


def test_receipt_deliver_sm_surfaces_as_receipt() -> None:
    r = Receipt(message_id="m9", stat="UNDELIV", submit_date=datetime(2026, 1, 2, 3, 4),
                done_date=datetime(2026, 1, 2, 3, 5), err="001")
    pdu = receipt_deliver_sm("X", "A", r)
    assert pdu.esm_class == 0x04 and is_receipt(pdu.esm_class) and not is_receipt(0x40)
    assert pdu.tlv(c.TAG_RECEIPTED_MESSAGE_ID) == Tlv(c.TAG_RECEIPTED_MESSAGE_ID, b"m9\x00")
    assert pdu.tlv(c.TAG_MESSAGE_STATE) == Tlv(c.TAG_MESSAGE_STATE, b"\x05")
    assert DeliverSm.parse(bytes(pdu)) == pdu
    m = MessageAssembler().add("up", event(pdu), 0.0)
    assert m is not None and m.receipt == r
