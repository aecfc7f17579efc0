"""Whole messages from SMPP PDUs: strip UDH or SAR, reassemble parts, decode text.

The adapters feed every MessageReceived here and hand the application one
`SmsMessage` per complete message, however many PDUs carried it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from relay.sms import constants as c
from relay.sms.concat import ConcatError, Reassembler, Segment, parse_udh, sar_segment
from relay.sms.encoding import TextEncodingError, decode_text
from relay.sms.events import MessageReceived
from relay.sms.receipt import Receipt, is_receipt, parse_receipt_text

_SAR_TAGS = (c.TAG_SAR_MSG_REF_NUM, c.TAG_SAR_TOTAL_SEGMENTS, c.TAG_SAR_SEGMENT_SEQNUM)


@dataclass(frozen=True, slots=True)
class SmsMessage:
    """One complete message. `text` is None if its data_coding is not text we decode."""

    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    data_coding: int
    payload: bytes  # user data without any UDH, all parts joined
    text: str | None
    esm_class: int  # of the first part, UDHI bit cleared
    registered_delivery: int
    parts: tuple[MessageReceived, ...]
    receipt: Receipt | None
    part_ids: tuple[str, ...] = ()  # the id each part was answered with, in part order


def segment_of(event: MessageReceived) -> tuple[Segment | None, bytes]:
    """The part's concatenation segment (UDH first, then SAR TLVs) and its user data."""
    body = event.short_message
    segment: Segment | None = None
    if event.esm_class & c.ESM_CLASS_UDHI:
        segment, body = parse_udh(body)
    if segment is None and event.pdu.tlvs:
        sar = {t.tag: t.as_int() for t in event.pdu.tlvs if t.tag in _SAR_TAGS}
        segment = sar_segment(sar)
    return segment, body


def _message(parts: tuple[MessageReceived, ...], data_coding: int, payload: bytes,
             part_ids: tuple[str, ...] = ()) -> SmsMessage:
    first = parts[0]
    try:
        text: str | None = decode_text(data_coding, payload)
    except TextEncodingError:
        text = None
    receipt = None
    if is_receipt(first.esm_class) and text is not None:
        receipt = parse_receipt_text(text)
    return SmsMessage(
        source_addr=first.source_addr, source_addr_ton=first.source_addr_ton,
        source_addr_npi=first.source_addr_npi, destination_addr=first.destination_addr,
        dest_addr_ton=first.dest_addr_ton, dest_addr_npi=first.dest_addr_npi,
        data_coding=data_coding, payload=payload, text=text,
        esm_class=first.esm_class & ~c.ESM_CLASS_UDHI,
        registered_delivery=first.registered_delivery, parts=parts, receipt=receipt,
        part_ids=part_ids,
    )


class MessageAssembler:
    """Turns part events into whole messages; `origin` keeps gateways apart."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._reassembler = Reassembler(timeout)
        self._waiting: dict[str, Hashable] = {}  # part id -> its incomplete set's key

    def add(self, origin: Hashable, event: MessageReceived, now: float,
            part_id: str = "") -> SmsMessage | None:
        """Add one PDU's event; the whole message when complete, else None.

        `part_id` is the id the part is answered with; the message lists them in part
        order. Raises ConcatError for a malformed UDH or SAR set (ESME_RINVESMCLASS).
        """
        segment, body = segment_of(event)
        if segment is None or segment.total == 1:
            return _message((event,), event.data_coding, body, (part_id,) if part_id else ())
        key = (origin, event.source_addr, event.destination_addr, segment.ref)
        done = self._reassembler.add(key, segment, event.data_coding, body, now,
                                     (event, part_id))
        if done is None:
            if part_id:
                self._waiting[part_id] = key
                if len(self._waiting) > 100_000:  # sets evicted when the reassembler was full
                    self._waiting = {p: k for p, k in self._waiting.items()
                                     if self._reassembler.holds(k)}
            return None
        events = tuple(ev for ev, _ in done.contexts)
        ids = tuple(pid for _, pid in done.contexts)
        for pid in ids:
            self._waiting.pop(pid, None)
        return _message(events, done.data_coding, done.payload, ids if all(ids) else ())

    def waiting(self, part_id: str, origin: Hashable | None = None) -> bool:
        """True if `part_id` belongs to a set (of `origin`, if given) still waiting."""
        key = self._waiting.get(part_id)
        if key is None or not self._reassembler.holds(key):
            return False
        return origin is None or key[0] == origin  # type: ignore[index]

    def cancel(self, part_id: str) -> tuple[MessageReceived, ...]:
        """Drop the incomplete set holding `part_id` (cancel_sm); the parts it had."""
        key = self._waiting.pop(part_id, None)
        if key is None:
            return ()
        ctx = self._reassembler.drop(key)
        for _, pid in ctx:
            self._waiting.pop(pid, None)
        return tuple(ev for ev, _ in ctx)

    def expire(self, now: float) -> list[tuple[MessageReceived, ...]]:
        """Drop incomplete sets past their timeout; return the parts they had."""
        out = []
        for _, ctx in self._reassembler.expire(now):
            for _, pid in ctx:
                self._waiting.pop(pid, None)
            out.append(tuple(ev for ev, _ in ctx))
        return out

    def next_deadline(self) -> float | None:
        """When the oldest incomplete set times out."""
        return self._reassembler.next_deadline()

    @property
    def duplicates(self) -> int:
        """Duplicate parts ignored so far."""
        return self._reassembler.duplicates


__all__ = ["ConcatError", "MessageAssembler", "SmsMessage", "segment_of"]
