"""relay.sms.router: decisions to actions, the refusal table, numbers, parts, records,
receipts; and the `[sms]` settings parser."""

from __future__ import annotations

import hashlib

import pytest

from dialplan.numbers import InvalidNumber
from dialplan.route import Bridge, Refuse
from relay.config import ConfigError
from relay.io.sms_service import SmsSettings
from relay.sms import constants as c
from relay.sms.concat import parse_udh
from relay.sms.router import (
    REFUSALS,
    Forward,
    Origin,
    ReceiptBook,
    Reject,
    message_record,
    plan,
    receipt_wanted,
    smpp_number,
    split_payload,
    wire_number,
)

X, A, B = "+8617000000001", "+8613800000001", "+8613900000002"


def test_bridge_becomes_a_forward_to_the_other_party() -> None:
    act = plan(A, X, Bridge(B, "b1", "a_to_b"))
    assert act == Forward("b1", X, A, B, "a_to_b")


@pytest.mark.parametrize(("reason", "status", "http"), [
    ("no_binding", c.ESME_RINVDSTADR, 404),
    ("frozen", c.ESME_RX_R_APPN, 410),
    ("expired", c.ESME_RX_R_APPN, 410),
    ("stranger", c.ESME_RX_P_APPN, 403),
    ("disabled", c.ESME_RX_P_APPN, 403),
    ("no_party", c.ESME_RX_P_APPN, 409),  # permanent (issue 17): AXN without A
    ("quiet_hours", c.ESME_RX_T_APPN, 409),
    ("direction", c.ESME_RX_P_APPN, 403),
])
def test_every_dialplan_refusal_has_a_wire_answer(reason: str, status: int, http: int) -> None:
    act = plan(A, X, Refuse(410, reason, 22, "b1"))
    assert act == Reject(reason, status, http, "b1")


def test_one_refusal_table_with_named_smpp_statuses() -> None:
    named = {v for k, v in vars(c).items() if k.startswith("ESME_R")}
    assert all(r.smpp in named and r.smpp != c.ESME_ROK for r in REFUSALS.values())


@pytest.mark.parametrize(("addr", "ton", "cc", "e164"), [
    ("8613800000001", 1, "", A),
    ("+8613800000001", 0, "86", A),
    ("8613800000001", 0, "", A),  # unknown TON, no default country: international
    ("13800000001", 0, "86", A),  # unknown TON with a default country: national
    ("013800000001", 2, "86", A),  # national with a trunk 0
])
def test_smpp_numbers(addr: str, ton: int, cc: str, e164: str) -> None:
    assert smpp_number(addr, ton, cc) == e164
    assert wire_number(e164) == e164[1:]


def test_bad_smpp_number() -> None:
    with pytest.raises(InvalidNumber):
        smpp_number("abc", 1, "")


def test_split_payload_text_and_binary() -> None:
    dc, parts = split_payload(8, "您好", "您好".encode("utf-16-be"), 7)
    assert (dc, parts) == (8, ["您好".encode("utf-16-be")])
    dc, parts = split_payload(0, "x" * 200, b"", 7)
    assert dc == 0 and len(parts) == 2
    dc, parts = split_payload(4, None, bytes(300), 9)
    assert dc == 4 and len(parts) == 3
    segs = [parse_udh(p) for p in parts]
    assert [(s.ref, s.total, s.seq) for s, _ in segs if s] == [(9, 3, 1), (9, 3, 2), (9, 3, 3)]
    assert b"".join(body for _, body in segs) == bytes(300)


def test_receipt_wanted() -> None:
    assert receipt_wanted(1, True) and receipt_wanted(1, False)
    assert not receipt_wanted(2, True) and receipt_wanted(2, False)
    assert not receipt_wanted(0, True) and not receipt_wanted(0, False)


def test_record_keeps_a_hash_unless_told_to_keep_text() -> None:
    fwd = Forward("b1", X, A, B, "a_to_b")
    rec = message_record("m1", now=5.0, sender=A, x=X, text="hi", payload=b"", data_coding=0,
                         parts=1, origin="smpp:gw", retain_text=False, action=fwd,
                         route="gateway")
    assert "text" not in rec and rec["text_sha256"] == hashlib.sha256(b"hi").hexdigest()
    assert (rec["binding"], rec["recipient"], rec["started_at"]) == ("b1", B, 5.0)
    kept = message_record("m2", now=5.0, sender=A, x=X, text="hi", payload=b"", data_coding=0,
                          parts=1, origin="http", retain_text=True,
                          action=Reject("frozen", 0x66, 410, "b1"), route="gateway")
    assert kept["text"] == "hi" and kept["status"] == "refused" and kept["recipient"] is None


def test_receipt_book_maps_once_and_forgets_old_entries() -> None:
    book = ReceiptBook(max_entries=2, max_age=10.0)
    o = [Origin(f"m{i}", "gw", A, X, 1, float(i)) for i in range(3)]
    for i, origin in enumerate(o):
        book.remember(f"up{i}", origin)
    assert len(book) == 2  # the oldest went first
    assert book.take("up0", 3.0) is None
    assert book.take("up1", 3.0) == o[1]
    assert book.take("up1", 3.0) is None  # once
    assert book.take("up2", 100.0) is None  # too old
    assert book.unmatched == 3


def _sms(raw: dict[str, object]) -> SmsSettings:
    from relay.settings import load_sections

    return SmsSettings.from_sections(load_sections(raw))


def test_settings() -> None:
    assert _sms({}).route == "gateway"
    s = _sms({
        "sms": {"route": "upstream", "throttle": 50, "retain_text": True},
        "smpp": {"upstream": {"host": "127.0.0.1", "port": 2775, "system_id": "r",
                              "password": "p"}}})
    assert s.upstream is not None and s.upstream.port == 2775 and s.throttle == 50.0
    for bad in ({"sms": {"route": "pigeon"}}, {"sms": {"route": "webhook"}},
                {"sms": {"route": "upstream"}}, {"sms": {"webhook_url": "http://h/"}},
                {"sms": {"window": "many"}}, {"smpp": {"upstream": {"host": "h"}}}):
        with pytest.raises(ConfigError):
            _sms(bad)
