"""Issue 17 in the sans-IO layer: one id format, the receipt builder, the
permanent/temporary refusal table, resend recognition, per-part receipts upstream,
number forms, and query/cancel in the session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_session import bound_pair, wire

from dialplan.numbers import InvalidNumber
from dialplan.refusals import REFUSALS
from relay.sms import constants as c
from relay.sms.ids import MessageIds, is_message_id
from relay.sms.message import MessageAssembler
from relay.sms.pdu import CancelSm, CancelSmResp, QuerySm, QuerySmResp, SubmitSm
from relay.sms.receipt import parse_receipt_text, receipt_deliver_sm
from relay.sms.refusals import SMS_REFUSALS, TEMPORARY_STATUSES, is_temporary
from relay.sms.retries import RetryBook
from relay.sms.router import Origin, ReceiptBook, part_receipts, reject, smpp_number

X, A = "+8617000000001", "+8613800000001"


# ---- ids ----
def test_every_id_has_one_format_and_is_unique() -> None:
    ids = MessageIds()
    got = [ids() for _ in range(1000)]
    assert len(set(got)) == 1000
    assert all(is_message_id(i) and len(i) == 17 for i in got)
    assert MessageIds("0000abcd")() == "m0000abcd00000001"
    assert not is_message_id("8305b37400000003")  # the old part-id generator's form


def test_every_part_gets_its_id_and_the_message_lists_them_in_part_order() -> None:
    from relay.sms.concat import udh_8bit
    from relay.sms.events import MessageReceived

    def part(seq: int, rd: int) -> MessageReceived:
        pdu = SubmitSm(source_addr="1", destination_addr="2", esm_class=0x40,
                       registered_delivery=rd, short_message=udh_8bit(7, 3, seq) + b"ab")
        return MessageReceived(seq, c.SUBMIT_SM, "1", 1, 1, "2", 1, 1, 0x40, rd, 0,
                               pdu.short_message, pdu)

    asm = MessageAssembler()
    assert asm.add("gw", part(3, 0), 0.0, "m3") is None  # out of order
    assert asm.waiting("m3", "gw") and not asm.waiting("m3", "other")
    assert asm.add("gw", part(1, 1), 0.0, "m1") is None
    msg = asm.add("gw", part(2, 0), 0.0, "m2")
    assert msg is not None and msg.part_ids == ("m1", "m2", "m3")
    assert [p.registered_delivery for p in msg.parts] == [1, 0, 0]
    assert not asm.waiting("m3")


def test_cancel_drops_an_incomplete_set() -> None:
    from relay.sms.concat import udh_8bit
    from relay.sms.events import MessageReceived

    pdu = SubmitSm(source_addr="1", destination_addr="2", esm_class=0x40,
                   short_message=udh_8bit(9, 2, 1) + b"ab")
    ev = MessageReceived(1, c.SUBMIT_SM, "1", 1, 1, "2", 1, 1, 0x40, 0, 0,
                         pdu.short_message, pdu)
    asm = MessageAssembler()
    asm.add("gw", ev, 0.0, "p1")
    assert len(asm.cancel("p1")) == 1
    assert not asm.waiting("p1") and asm.cancel("p1") == ()
    assert asm.next_deadline() is None


# ---- the receipt builder ----
def test_a_receipt_per_part_that_asked_quoting_that_parts_id() -> None:
    origin = Origin("m1", "gw", A, X, 1, 1_700_000_000.0,
                    (("m1", 1), ("m2", 0), ("m3", 1)))
    receipts = part_receipts(origin, "DELIVRD", 1_700_000_060.0)
    assert [r.message_id for r in receipts] == ["m1", "m3"]
    pdu = receipt_deliver_sm(X[1:], A[1:], receipts[1])
    assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.dest_addr_ton,
            pdu.dest_addr_npi) == (1, 1, 1, 1)
    assert (pdu.source_addr, pdu.destination_addr) == (X[1:], A[1:])
    assert pdu.esm_class == c.ESM_CLASS_DELIVERY_RECEIPT
    tlv = pdu.tlv(c.TAG_RECEIPTED_MESSAGE_ID)
    assert tlv is not None and tlv.as_str() == "m3"
    state = pdu.tlv(c.TAG_MESSAGE_STATE)
    assert state is not None and state.as_int() == c.MESSAGE_STATE_DELIVERED
    parsed = parse_receipt_text(pdu.short_message.decode())
    assert parsed is not None and (parsed.message_id, parsed.stat, parsed.err) == (
        "m3", "DELIVRD", "000")
    assert parsed.submit_date == datetime(2023, 11, 14, 22, 13)  # UTC, minutes
    assert parsed.done_date == datetime.fromtimestamp(1_700_000_060, UTC).replace(
        tzinfo=None, second=0)


def test_failure_receipts_go_to_parts_that_asked_for_failures_only() -> None:
    origin = Origin("m1", "gw", A, X, 2, 0.0, (("m1", 2), ("m2", 1), ("m3", 0)))
    assert [r.message_id for r in part_receipts(origin, "DELIVRD", 1.0)] == ["m2"]
    failed = part_receipts(origin, "UNDELIV", 1.0)
    assert [(r.message_id, r.err, r.dlvrd) for r in failed] == [("m1", "001", 0),
                                                                ("m2", "001", 0)]


def test_upstream_receipts_settle_when_every_far_part_is_done() -> None:
    book = ReceiptBook()
    o = Origin("m1", "gw", A, X, 1, 0.0, (("m1", 1), ("m2", 1)))
    book.remember(["up1", "up2", "up3"], o)  # re-split into 3 parts upstream
    assert book.settle("up2", "ENROUTE", 1.0) == (o, False)
    assert book.settle("up2", "DELIVRD", 1.0) == (o, False)
    assert book.settle("up1", "DELIVRD", 1.0) == (o, False)
    assert book.settle("up3", "DELIVRD", 1.0) == (o, True)
    assert len(book) == 0 and book.settle("up3", "DELIVRD", 1.0) is None
    book.remember(["up4", "up5"], o)
    assert book.settle("up4", "UNDELIV", 1.0) == (o, True)  # one part failed: done
    assert book.settle("up5", "DELIVRD", 1.0) is None


# ---- the permanent / temporary table ----
def test_every_reason_is_classified_and_gateways_read_the_class_from_the_status() -> None:
    assert set(SMS_REFUSALS) == set(REFUSALS)
    assert {0x08, 0x14, 0x58, 0x64} == TEMPORARY_STATUSES  # Kannel's temporary set
    temporary = {r for r, v in SMS_REFUSALS.items() if v.temporary}
    assert temporary == {"quiet_hours", "no_route"}
    assert all(v.temporary == is_temporary(v.command_status) for v in SMS_REFUSALS.values())


@pytest.mark.parametrize(("reason", "status"), [
    ("no_party", c.ESME_RX_P_APPN),  # was 0x64: Kannel resent it every minute for ever
    ("frozen", c.ESME_RX_R_APPN), ("expired", c.ESME_RX_R_APPN),
    ("no_binding", c.ESME_RINVDSTADR), ("stranger", c.ESME_RX_P_APPN),
    ("quiet_hours", c.ESME_RX_T_APPN), ("no_route", c.ESME_RX_T_APPN),
])
def test_refusal_statuses(reason: str, status: int) -> None:
    assert reject(reason).command_status == status


# ---- resends ----
def test_a_resend_is_recognised_within_the_window_and_counted() -> None:
    book = RetryBook(window=60.0)
    key = ("smpp:gw", "8613800000001", "8617000000001", "ab" * 32)
    assert book.retry(key, 0.0) is None
    book.note(key, "m1", c.ESME_RX_R_APPN, "frozen", 0.0)
    first = book.retry(key, 30.0)
    assert first is not None and (first.record_id, first.retries) == ("m1", 1)
    again = book.retry(key, 80.0)  # 50 s after the last try: still the same message
    assert again is not None and again.retries == 2
    assert book.retry(key, 200.0) is None  # the window passed
    other = ("smpp:gw", "8613800000001", "8617000000001", "cd" * 32)
    book.note(key, "m2", c.ESME_ROK, None, 300.0)
    assert book.retry(other, 301.0) is None  # another text is another message
    book.forget(key)
    assert book.retry(key, 302.0) is None


# ---- number forms ----
@pytest.mark.parametrize(("addr", "ton", "cc", "e164"), [
    ("8613800000001", 1, "", A),  # TON 1: digits without "+"
    ("8613800000001", 1, "86", A),
    ("+8613800000001", 1, "86", A),  # a "+" anyway (some aggregators)
    ("8613800000001", 2, "", A),  # Kannel's default TON 2, no default_cc: international
    ("8613800000001", 2, "86", A),  # TON 2 that already carries the country code
    ("13800000001", 2, "86", A),  # national
    ("013800000001", 2, "86", A),  # national with the trunk 0
    ("008613800000001", 2, "86", A),  # the international prefix
    ("8613800000001", 0, "", A),  # TON 0 (Jasmin's default): international without cc
    ("13800000001", 0, "86", A),  # TON 0 with default_cc: national
    ("8613800000001", 0, "86", A),  # ... unless it already starts with the country code
    ("14155550123", 0, "1", "+14155550123"),  # NANP: 11 digits starting with 1
    ("4155550123", 2, "1", "+14155550123"),  # NANP national (10 digits)
])
def test_number_forms_gateways_send(addr: str, ton: int, cc: str, e164: str) -> None:
    assert smpp_number(addr, ton, cc) == e164


@pytest.mark.parametrize(("addr", "ton"), [("Courier", 5), ("8613800000001", 5), ("12", 1)])
def test_numbers_that_are_not(addr: str, ton: int) -> None:
    with pytest.raises(InvalidNumber):
        smpp_number(addr, ton, "86")


# ---- query_sm / cancel_sm in the session ----
def test_query_and_cancel_reach_the_application_with_a_message_store() -> None:
    from relay.sms.events import CancelRequested, QueryRequested

    srv, _ = bound_pair(message_store=True)
    evs = srv.receive_data(bytes(QuerySm(sequence=5, message_id="m1", source_addr="1")), 1.0)
    assert evs == [QueryRequested(QuerySm(sequence=5, message_id="m1", source_addr="1"))]
    srv.answer_query(evs[0].pdu, c.ESME_ROK, final_date="231114221300000+",  # type: ignore[attr-defined]
                     message_state=c.MESSAGE_STATE_DELIVERED)
    assert wire(srv) == [QuerySmResp(sequence=5, message_id="m1",
                                     final_date="231114221300000+", message_state=2)]
    evs = srv.receive_data(bytes(CancelSm(sequence=6, message_id="m1")), 1.0)
    assert isinstance(evs[0], CancelRequested)
    srv.answer_cancel(evs[0].pdu, c.ESME_RCANCELFAIL)
    assert wire(srv) == [CancelSmResp(sequence=6, command_status=c.ESME_RCANCELFAIL)]


def test_retry_window_setting() -> None:
    from relay.config import ConfigError
    from relay.io.sms_service import SmsSettings
    from relay.settings import load_sections

    assert SmsSettings.from_sections(load_sections({})).retry_window == 3600.0
    s = SmsSettings.from_sections(load_sections({"sms": {"retry_window": 60}}))
    assert s.retry_window == 60.0
    with pytest.raises(ConfigError, match="sms"):
        load_sections({"sms": {"retry_window": "soon"}})
