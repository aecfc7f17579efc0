"""What to do with one message to a virtual number X: forward it, or refuse it and how.

Pure (STYLE point 1): the caller looks the binding up, asks `dialplan.route.decide`,
and hands the decision here with the numbers and the text; this module turns that
into an action with its wire answers (SMPP command_status, HTTP status), the message
record, the parts to send, and the delivery-receipt bookkeeping. Time is an argument.

The statuses come from the one refusal table, `dialplan.refusals`, with SMS's own
permanent/temporary choices (`relay.sms.refusals`, documented in relay/sms/SMPP.md
"Refusals").
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dialplan.numbers import InvalidNumber, normalise
from dialplan.refusals import REFUSALS, policy_reason
from dialplan.route import Bridge, Collect, Decision
from relay.sms.concat import split_text, udh_8bit
from relay.sms.receipt import Receipt
from relay.sms.refusals import SMS_REFUSALS

__all__ = [
    "REFUSALS",
    "Forward",
    "Origin",
    "ReceiptBook",
    "Reject",
    "message_record",
    "part_receipts",
    "plan",
    "receipt_wanted",
    "reject",
    "smpp_number",
    "split_payload",
    "wire_number",
]

# The one refusal table (reason -> SIP, SMPP and HTTP answers) is dialplan.refusals.


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the message to `recipient` with X as the sender."""

    binding: str
    x: str
    sender: str
    recipient: str
    direction: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the message; `command_status` for SMPP, `http_status` for HTTP."""

    reason: str
    command_status: int
    http_status: int
    binding: str | None = None
    retry_after: int | None = None  # quiet hours: seconds until the window ends


Action = Forward | Reject


def reject(reason: str, binding: str | None = None, retry_after: int | None = None
           ) -> Reject:
    """The Reject for `reason` (a key of relay.sms.refusals.SMS_REFUSALS)."""
    r = SMS_REFUSALS[reason]
    return Reject(reason, r.command_status, r.http, binding, retry_after)


# National significant numbers are at most 10 digits in the plans gateways meet most
# (NANP, China's mobiles are 11 with the leading 1 but never start with 86, most of
# Europe); digits longer than this that start with the country code already carry it.
NATIONAL_MAX_DIGITS = 10
TON_INTERNATIONAL, TON_NATIONAL, TON_ALPHANUMERIC = 1, 2, 5


def smpp_number(addr: str, ton: int, default_cc: str) -> str:
    """An SMPP address as E.164 (raises InvalidNumber). The rule (SMPP.md "Numbers"):

    - a leading "+" or "00" is international whatever the TON;
    - TON 1 (§5.2.5 international): the digits are the full number without "+";
    - TON 2 (national) and TON 0 (unknown, what many gateways leave it at), with
      `default_cc`: a leading trunk "0" is dropped and the country code put in front;
      digits that already start with the country code and are longer than
      NATIONAL_MAX_DIGITS are taken as they are (gateways often send the full number
      with their default TON 2, as Kannel does);
    - TON 2 and TON 0 without `default_cc`: the digits are read as international;
    - TON 5 (alphanumeric) is no number: InvalidNumber.
    """
    s = addr.strip()
    if ton == TON_ALPHANUMERIC:
        raise InvalidNumber("alphanumeric address")
    if s.startswith(("+", "00")):
        return normalise(s)
    if not s.isdigit():
        return normalise(s, default_cc)  # separators, or garbage: normalise judges
    if ton == TON_INTERNATIONAL or not default_cc:
        return normalise("+" + s)
    if (not s.startswith("0") and s.startswith(default_cc)
            and len(s) > NATIONAL_MAX_DIGITS):
        return normalise("+" + s)
    return normalise(s, default_cc)


def wire_number(e164: str) -> str:
    """E.164 as an SMPP address with TON 1 / NPI 1: the digits without "+"."""
    return e164[1:] if e164.startswith("+") else e164


def plan(sender: str, x: str, decision: Decision) -> Action:
    """Turn the dialplan's decision for (sender -> X) into a forward or a refusal."""
    if isinstance(decision, Bridge):
        return Forward(decision.binding, x, sender, decision.to, decision.direction)
    if isinstance(decision, Collect):  # a text cannot key an extension
        return reject("no_extension")
    return reject(decision.reason, decision.binding, decision.retry_after)


def receipt_wanted(registered_delivery: int, success: bool) -> bool:
    """§5.2.17: bits 1-0 = 01 receipt on success and failure, 10 on failure only."""
    mode = registered_delivery & 0x03
    return mode == 1 or (mode == 2 and not success)


def split_payload(data_coding: int, text: str | None, payload: bytes,
                  ref: int) -> tuple[int, list[bytes]]:
    """The forwarded message's data_coding and part bodies (UDH included when split).

    Text is re-encoded and re-split (GSM 7-bit or UCS-2) so the relay never forwards
    a gateway's UDH or TLVs verbatim; binary payloads are cut into 134-octet parts
    behind an 8-bit-ref UDH (140 octets minus the 6-octet header, GSM 03.40 §9.2.3.24).
    """
    if text is not None:
        return split_text(text, ref)
    if len(payload) <= 140:
        return data_coding, [payload]
    chunks = [payload[i:i + 134] for i in range(0, len(payload), 134)]
    if len(chunks) > 255:
        raise ValueError("payload too long to concatenate")
    return data_coding, [udh_8bit(ref, len(chunks), n + 1) + ch
                         for n, ch in enumerate(chunks)]


def message_record(
    msg_id: str, *, now: float, sender: str, x: str, text: str | None, payload: bytes,
    data_coding: int, parts: int, origin: str, retain_text: bool,
    action: Action | None, route: str, text_sha256: str | None = None,
) -> dict[str, Any]:
    """The message record as stored (real numbers; the API masks them by role).

    Only a SHA-256 of the text is kept unless `retain_text`: the relay exists to keep
    parties apart, and message bodies often carry addresses and names.
    """
    if text_sha256 is None:
        body = text.encode("utf-8") if text is not None else payload
        text_sha256 = hashlib.sha256(body).hexdigest()
    rec: dict[str, Any] = {
        "id": msg_id, "started_at": now, "received_at": now, "x": x, "sender": sender,
        "recipient": None, "binding": None, "direction": None, "origin": origin,
        "route": route, "parts": parts, "data_coding": data_coding,
        "forwarded_at": None, "delivered_at": None, "status": "received",
        "reason": None, "policy_reason": None, "command_status": None, "far_id": None,
        "text_sha256": text_sha256,
    }
    if retain_text:
        rec["text"] = text
    if isinstance(action, Forward):
        rec.update(binding=action.binding, recipient=action.recipient,
                   direction=action.direction)
    elif isinstance(action, Reject):
        rec.update(status="refused", reason=action.reason, binding=action.binding,
                   policy_reason=policy_reason(action.reason),
                   command_status=action.command_status)
    return rec


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent a forwarded message, so its receipts can go back to them."""

    msg_id: str  # the record's id (the first part's id)
    system_id: str  # the gateway that submitted it ("" for HTTP)
    sender: str  # the party's real number: the receipt goes to them
    x: str
    registered_delivery: int
    submitted_at: float
    # Every part's id and registered_delivery, in part order (one entry when single).
    parts: tuple[tuple[str, int], ...] = ()


def part_receipts(origin: Origin, stat: str, done: float) -> list[Receipt]:
    """The receipts owed for `origin` reaching final state `stat`: one per part that
    asked for one (§5.2.17), each quoting that part's id, as SMSCs do; gateways match a
    receipt to the part they stored (Kannel keeps the id of each part it sent)."""
    success = stat == "DELIVRD"
    parts = origin.parts or ((origin.msg_id, origin.registered_delivery),)
    if not any(receipt_wanted(rd, success) for _, rd in parts):
        return []  # the common case: nobody asked, build nothing
    submit = datetime.fromtimestamp(origin.submitted_at, UTC)
    done_at = datetime.fromtimestamp(done, UTC)
    return [Receipt(message_id=pid, stat=stat, submit_date=submit, done_date=done_at,
                    err="000" if success else "001", sub=1, dlvrd=1 if success else 0)
            for pid, rd in parts if receipt_wanted(rd, success)]


# Appendix B states that end a message, and the one a group of parts ends in.
FINAL_STATES = frozenset({"DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "REJECTD", "UNKNOWN"})


@dataclass(slots=True)
class _Group:
    origin: Origin
    waiting: set[str]  # far ids of the parts whose receipt has not come yet


class ReceiptBook:
    """Far-side message id -> Origin, bounded in size and age.

    Receipts come from the upstream SMSC quoting the id *it* gave each submit_sm; the
    sender only knows the ids *we* gave its parts. A message we re-split into n parts
    upstream is final when every part's receipt came (DELIVRD), or at the first part
    that failed; then the sender gets its receipts (`part_receipts`). Old entries are
    dropped first: a receipt that arrives after `max_age` finds nothing and is counted,
    not guessed at.
    """

    def __init__(self, max_entries: int = 200_000, max_age: float = 72 * 3600.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[str, _Group] = OrderedDict()
        self.unmatched = 0

    def remember(self, far_ids: str | list[str], origin: Origin) -> None:
        """Note that the far side called the parts of our message `far_ids`."""
        ids = [far_ids] if isinstance(far_ids, str) else list(far_ids)
        group = _Group(origin, set(ids))
        for far_id in ids:
            self._entries[far_id] = group
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def settle(self, far_id: str, stat: str, now: float) -> tuple[Origin, bool] | None:
        """A receipt for `far_id` in state `stat`: (origin, final) when it is known,
        `final` telling whether the whole message is now done; None if unknown or old."""
        self._prune(now)
        group = self._entries.get(far_id)
        if group is None:
            self.unmatched += 1
            return None
        if stat not in FINAL_STATES:
            return group.origin, False  # ENROUTE, ACCEPTD: more to come
        if stat == "DELIVRD":
            group.waiting.discard(far_id)
            del self._entries[far_id]
            if group.waiting:
                return group.origin, False
            return group.origin, True
        for fid in group.waiting:  # one part failed: the message failed
            self._entries.pop(fid, None)
        group.waiting.clear()
        return group.origin, True

    def take(self, far_id: str, now: float) -> Origin | None:
        """The origin of `far_id` (forgotten afterwards), or None if unknown or too old."""
        got = self.settle(far_id, "UNDELIV", now)
        return got[0] if got is not None else None

    def _prune(self, now: float) -> None:
        while self._entries:
            first = next(iter(self._entries.values()))
            if now - first.origin.submitted_at <= self.max_age:
                break
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
