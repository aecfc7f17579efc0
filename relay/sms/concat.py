"""Concatenated SMS: splitting long text and reassembling parts (sans-IO).

Parts are identified either by a User Data Header in short_message (esm_class bit
0x40, GSM 03.40 §9.2.3.24.1 IEI 0x00 with an 8-bit reference and §9.2.3.24.8 IEI
0x08 with a 16-bit one) or by the SMPP 3.4 SAR TLVs (§5.3.2.22-24). Reassembly
works on octets and decodes once at the end, so a peer that split a surrogate or
escape pair across parts still gives intact text.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.sms import constants as c
from relay.sms.encoding import encode_text, gsm_units

# Octet budget of one short message: 140 octets = 160 septets (GSM 03.40 §9.2.3.16).
SINGLE_GSM_SEPTETS = 160
SINGLE_UCS2_OCTETS = 140
# With the 6-octet UDH (05 00 03 ref total seq): 153 septets or 67 UCS-2 units.
PART_GSM_SEPTETS = 153
PART_UCS2_OCTETS = 134
MAX_PARTS = 255


class ConcatError(ValueError):
    """A malformed UDH or SAR set, or text too long to split into 255 parts."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Where one part sits in its set: reference, total and 1-based sequence."""

    ref: int
    total: int
    seq: int


def udh_8bit(ref: int, total: int, seq: int) -> bytes:
    """The 6-octet UDH with IEI 0x00 (concatenation, 8-bit reference)."""
    return bytes([0x05, 0x00, 0x03, ref & 0xFF, total, seq])


def _split_units(units: Sequence[bytes], budget: int) -> list[bytes]:
    """Group indivisible units (a septet, an ESC pair, a surrogate pair) into chunks."""
    chunks: list[bytes] = []
    cur = bytearray()
    for u in units:
        if len(cur) + len(u) > budget:
            chunks.append(bytes(cur))
            cur = bytearray()
        cur += u
    if cur or not chunks:
        chunks.append(bytes(cur))
    return chunks


def split_text(text: str, ref: int) -> tuple[int, list[bytes]]:
    """Encode `text` and split it into short_message bodies.

    Returns (data_coding, parts). One part carries no UDH; several parts each start
    with an 8-bit-reference UDH and must be sent with esm_class 0x40. Split points
    never fall inside a GSM escape pair or a UTF-16 surrogate pair.
    """
    data_coding, encoded = encode_text(text)
    if data_coding == c.DATA_CODING_DEFAULT:
        if len(encoded) <= SINGLE_GSM_SEPTETS:
            return data_coding, [encoded]
        units = gsm_units(text)
        chunks = _split_units(units, PART_GSM_SEPTETS)
    else:
        if len(encoded) <= SINGLE_UCS2_OCTETS:
            return data_coding, [encoded]
        units = [ch.encode("utf-16-be") for ch in text]
        chunks = _split_units(units, PART_UCS2_OCTETS)
    if len(chunks) > MAX_PARTS:
        raise ConcatError(f"text needs {len(chunks)} parts; at most {MAX_PARTS}")
    total = len(chunks)
    return data_coding, [udh_8bit(ref, total, i) + ch for i, ch in enumerate(chunks, 1)]


def parse_udh(short_message: bytes) -> tuple[Segment | None, bytes]:
    """Split a UDHI short_message into its concatenation segment (if any) and body."""
    if not short_message:
        raise ConcatError("UDHI set on an empty short_message")
    udhl = short_message[0]
    if 1 + udhl > len(short_message):
        raise ConcatError(f"UDH length {udhl} runs past the message")
    header = short_message[1 : 1 + udhl]
    body = short_message[1 + udhl :]
    segment: Segment | None = None
    pos = 0
    while pos < len(header):
        if pos + 2 > len(header):
            raise ConcatError("truncated information element")
        iei, iel = header[pos], header[pos + 1]
        data = header[pos + 2 : pos + 2 + iel]
        if len(data) != iel:
            raise ConcatError(f"IE 0x{iei:02X} runs past the UDH")
        if iei == 0x00 and iel == 3:
            segment = Segment(data[0], data[1], data[2])
        elif iei == 0x08 and iel == 4:
            segment = Segment(int.from_bytes(data[0:2], "big"), data[2], data[3])
        elif iei in (0x00, 0x08):
            raise ConcatError(f"concatenation IE 0x{iei:02X} with length {iel}")
        pos += 2 + iel
    if segment is not None and not 1 <= segment.seq <= segment.total:
        raise ConcatError(f"part {segment.seq} of {segment.total}")
    return segment, body


def sar_segment(tlvs: dict[int, int]) -> Segment | None:
    """The segment described by SAR TLVs (all three present), or None if none is."""
    present = [t in tlvs for t in (c.TAG_SAR_MSG_REF_NUM, c.TAG_SAR_TOTAL_SEGMENTS,
                                   c.TAG_SAR_SEGMENT_SEQNUM)]
    if not any(present):
        return None
    if not all(present):  # §5.3.2.22: the three travel together
        raise ConcatError("incomplete SAR TLV set")
    seg = Segment(tlvs[c.TAG_SAR_MSG_REF_NUM], tlvs[c.TAG_SAR_TOTAL_SEGMENTS],
                  tlvs[c.TAG_SAR_SEGMENT_SEQNUM])
    if not 1 <= seg.seq <= seg.total:
        raise ConcatError(f"SAR part {seg.seq} of {seg.total}")
    return seg


@dataclass(frozen=True, slots=True)
class Assembled:
    """A complete set: the octets in order, the data_coding, and each part's context."""

    key: Hashable
    data_coding: int
    payload: bytes
    contexts: tuple[Any, ...]


@dataclass(slots=True)
class _Pending:
    total: int
    data_coding: int
    deadline: float
    parts: dict[int, tuple[bytes, Any]] = field(default_factory=dict)


class Reassembler:
    """Collects parts keyed by (origin, source, destination, ref) until a set is whole.

    Out-of-order parts are fine, a duplicate part is ignored, and a set that is still
    incomplete `timeout` seconds after its first part is dropped by `expire(now)`.
    """

    def __init__(self, timeout: float = 60.0, max_pending: int = 10_000) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[Hashable, _Pending] = {}
        self.duplicates = 0

    def add(
        self,
        key: Hashable,
        segment: Segment,
        data_coding: int,
        body: bytes,
        now: float,
        context: Any = None,
    ) -> Assembled | None:
        """Add one part; return the whole set when this part completes it."""
        pend = self._pending.get(key)
        if pend is None or pend.total != segment.total:
            # A new total under the same key is a new message reusing the reference.
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].deadline)
                del self._pending[oldest]
            pend = _Pending(segment.total, data_coding, now + self.timeout)
            self._pending[key] = pend
        if segment.seq in pend.parts:
            self.duplicates += 1
            return None
        pend.parts[segment.seq] = (body, context)
        if len(pend.parts) < pend.total:
            return None
        del self._pending[key]
        ordered = [pend.parts[i] for i in range(1, pend.total + 1)]
        return Assembled(
            key, pend.data_coding, b"".join(p for p, _ in ordered), tuple(x for _, x in ordered)
        )

    def expire(self, now: float) -> list[tuple[Hashable, tuple[Any, ...]]]:
        """Drop sets whose deadline passed; return their keys and received contexts."""
        gone = [k for k, p in self._pending.items() if p.deadline <= now]
        out = []
        for k in gone:
            p = self._pending.pop(k)
            out.append((k, tuple(ctx for _, ctx in p.parts.values())))
        return out

    def holds(self, key: Hashable) -> bool:
        """True while the set `key` waits for parts."""
        return key in self._pending

    def drop(self, key: Hashable) -> tuple[Any, ...]:
        """Forget the incomplete set `key`; the contexts of the parts it had."""
        p = self._pending.pop(key, None)
        return () if p is None else tuple(ctx for _, ctx in p.parts.values())

    def next_deadline(self) -> float | None:
        """When the oldest incomplete set times out, or None."""
        if not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def __len__(self) -> int:
        return len(self._pending)
