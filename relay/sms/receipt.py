"""Delivery receipts: the de-facto text format of SMPP 3.4 Appendix B and its deliver_sm.

`id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm
stat:DDDDDDD err:E text:...` carried in a deliver_sm with esm_class 0x04 (§5.2.12),
plus the receipted_message_id and message_state TLVs (§5.3.2.12, §5.3.2.35) that
SMPP 3.4 added so a gateway need not parse the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from relay.sms import constants as c
from relay.sms.pdu import DeliverSm, Tlv

# Appendix B final states and the message_state value each maps to (§5.2.28).
STATES: dict[str, int] = {
    "ENROUTE": c.MESSAGE_STATE_ENROUTE,
    "DELIVRD": c.MESSAGE_STATE_DELIVERED,
    "EXPIRED": c.MESSAGE_STATE_EXPIRED,
    "DELETED": c.MESSAGE_STATE_DELETED,
    "UNDELIV": c.MESSAGE_STATE_UNDELIVERABLE,
    "ACCEPTD": c.MESSAGE_STATE_ACCEPTED,
    "UNKNOWN": c.MESSAGE_STATE_UNKNOWN,
    "REJECTD": c.MESSAGE_STATE_REJECTED,
}

_DATE = "%y%m%d%H%M"
# Field names are matched case-insensitively: SMSCs differ ("Text:" vs "text:").
_RECEIPT = re.compile(
    r"id:(?P<id>\S+)\s+sub:(?P<sub>\d+)\s+dlvrd:(?P<dlvrd>\d+)\s+"
    r"submit date:(?P<submit>\d{10,12})\s+done date:(?P<done>\d{10,12})\s+"
    r"stat:(?P<stat>\w+)\s+err:(?P<err>\w+)(?:\s+text:(?P<text>.*))?",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed or to-be-built delivery receipt."""

    message_id: str
    stat: str
    submit_date: datetime
    done_date: datetime
    err: str = "000"
    sub: int = 1
    dlvrd: int = 1
    text: str = ""


def build_receipt_text(r: Receipt) -> str:
    """Render the Appendix B receipt text (text: truncated to its customary 20 chars)."""
    return (
        f"id:{r.message_id} sub:{r.sub:03d} dlvrd:{r.dlvrd:03d} "
        f"submit date:{r.submit_date.strftime(_DATE)} done date:{r.done_date.strftime(_DATE)} "
        f"stat:{r.stat} err:{r.err} text:{r.text[:20]}"
    )


def parse_receipt_text(text: str) -> Receipt | None:
    """Parse receipt text; None if it is not a receipt (no guessing at partial ones)."""
    m = _RECEIPT.search(text)
    if m is None:
        return None
    try:
        submit = datetime.strptime(m["submit"][:10], _DATE)
        done = datetime.strptime(m["done"][:10], _DATE)
    except ValueError:
        return None
    return Receipt(
        message_id=m["id"], stat=m["stat"].upper(), submit_date=submit, done_date=done,
        err=m["err"], sub=int(m["sub"]), dlvrd=int(m["dlvrd"]), text=(m["text"] or ""),
    )


def receipt_deliver_sm(source_addr: str, destination_addr: str, r: Receipt, *,
                       ton: int = 1, npi: int = 1) -> DeliverSm:
    """A deliver_sm carrying `r`: esm_class 0x04 and the receipt TLVs.

    Addresses go out as every other deliver_sm of the relay does (TON 1 / NPI 1 digits
    unless told otherwise): gateways match a receipt by its message id, but some also
    compare its source with the message's destination as they stored it.
    """
    tlvs: list[Tlv] = [Tlv.cstring(c.TAG_RECEIPTED_MESSAGE_ID, r.message_id)]
    state = STATES.get(r.stat)
    if state is not None:
        tlvs.append(Tlv.u8(c.TAG_MESSAGE_STATE, state))
    return DeliverSm(
        source_addr_ton=ton, source_addr_npi=npi, source_addr=source_addr,
        dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=destination_addr,
        esm_class=c.ESM_CLASS_DELIVERY_RECEIPT,
        short_message=build_receipt_text(r).encode("ascii", "replace"),
        tlvs=tuple(tlvs),
    )


def is_receipt(esm_class: int) -> bool:
    """True if esm_class bits 2-5 say "SMSC delivery receipt" (§5.2.12)."""
    return (esm_class & 0x3C) == c.ESM_CLASS_DELIVERY_RECEIPT
