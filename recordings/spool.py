"""The recording spool: an append-only framed log of one leg's received RTP packets.

Sans-IO-ish: the writer is handed an open binary file object and only appends to
its own buffer until the caller decides to `flush`; `append` says when a flush is
due (every `flush_packets` packets or `flush_interval` seconds of wall time), so a
crash loses at most about a second of audio. The finisher (`recordings.finish`)
turns spools into WAV files later, off the event loop.

File format (all little-endian):
    header  b"RSPL" version:u8 (=1)
    record  length:u16 | wall:f64 | seq:u16 | ts:u32 | ssrc:u32 | m_pt:u8 | payload
            `length` counts everything after itself; `m_pt` is the marker bit (0x80)
            and the payload type, as in the second RTP header octet (RFC 3550 §5.1).
A record cut short at the end of the file (a crash mid-write) is ignored by the reader.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

__all__ = [
    "MAGIC",
    "CallMeta",
    "SpoolError",
    "SpoolRecord",
    "SpoolWriter",
    "read_spool",
]

MAGIC = b"RSPL\x01"
_LEN = struct.Struct("<H")
_REC = struct.Struct("<dHIIB")
_FRAME = struct.Struct("<HdHIIB")  # length prefix and record header in one pack
_RTP_FIXED = struct.Struct("!xBHII")


class SpoolError(ValueError):
    """The file is not a spool (wrong magic) or a record is corrupt."""


def _payload_bounds(data: bytes) -> tuple[int, int] | None:
    """(start, end) of an RTP payload (RFC 3550 §5.1), or None if the header is invalid.

    Kept here rather than imported from relay.rtp so that `recordings` does not
    depend on the switch package.
    """
    n = len(data)
    if n < 12 or data[0] >> 6 != 2:
        return None
    first = data[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension, RFC 3550 §5.3.1
        if n < start + 4:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if start > n:
        return None
    end = n
    if first & 0x20:  # padding: the last octet counts it
        pad = data[-1]
        if pad == 0 or start + pad > n:
            return None
        end -= pad
    return start, end


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One received packet as the spool holds it."""

    wall: float
    seq: int
    ts: int
    ssrc: int
    pt: int
    marker: bool
    payload: bytes


class SpoolWriter:
    """Buffers framed records for one leg and writes them to `file` on `flush`."""

    # Slots and precomputed flush thresholds: `append` runs once per relayed packet.
    __slots__ = ("_buf", "_file", "_flush_at_count", "_flush_at_wall", "closed",
                 "flush_interval", "flush_packets", "invalid", "packets")

    def __init__(self, file: BinaryIO, *, flush_interval: float = 1.0,
                 flush_packets: int = 50) -> None:
        """Wrap an open, empty (or new) binary file; the header is written on first flush."""
        self._file = file
        self._buf = bytearray(MAGIC)
        self.flush_interval = flush_interval
        self.flush_packets = flush_packets
        self._flush_at_count = flush_packets  # `packets` value that asks for a flush
        self._flush_at_wall: float | None = None  # set by the first packet
        self.packets = 0
        self.invalid = 0
        self.closed = False

    def append(self, data: bytes, wall: float) -> bool:
        """Spool one raw RTP datagram received at `wall` (epoch seconds).

        Invalid or RTCP datagrams are counted and skipped (the relay still forwards
        them). Returns True when the caller should call `flush` now.
        """
        n = len(data)
        if n >= 12 and data[0] == 0x80:
            start, end = 12, n  # the usual packet: no CSRC, extension or padding
        else:
            bounds = _payload_bounds(data)
            if bounds is None:
                self.invalid += 1
                return False
            start, end = bounds
        m_pt, seq, ts, ssrc = _RTP_FIXED.unpack_from(data)
        if 200 <= m_pt <= 204:  # RTCP multiplexed on the RTP port (RFC 5761 §4)
            self.invalid += 1
            return False
        length = _REC.size + (end - start)
        if length > 0xFFFF:
            self.invalid += 1
            return False
        buf = self._buf
        buf += _FRAME.pack(length, wall, seq, ts, ssrc, m_pt)
        buf += data[start:end]  # a 160-byte slice copies faster than a memoryview
        self.packets = packets = self.packets + 1
        flush_at_wall = self._flush_at_wall
        if flush_at_wall is None:
            self._flush_at_wall = flush_at_wall = wall + self.flush_interval
        return packets >= self._flush_at_count or wall >= flush_at_wall

    def flush(self, wall: float | None = None) -> None:
        """Write the buffered records to the file and flush it (the caller's IO)."""
        if self._buf:
            self._file.write(self._buf)
            self._buf = bytearray()
        self._file.flush()
        self._flush_at_count = self.packets + self.flush_packets
        if wall is not None:
            self._flush_at_wall = wall + self.flush_interval

    def close(self) -> None:
        """Flush and close the file; safe to call twice."""
        if not self.closed:
            self.flush()
            self._file.close()
            self.closed = True


def read_spool(data: bytes) -> Iterator[SpoolRecord]:
    """Yield the records of a spool file's bytes in arrival order.

    A truncated final record (crash) ends the iteration quietly; a wrong magic or a
    record too short for its header raises `SpoolError`.
    """
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            return  # an empty or header-less spool: the call ended before any packet
        raise SpoolError("not a spool file (bad magic)")
    offset = len(MAGIC)
    n = len(data)
    while offset + 2 <= n:
        (length,) = _LEN.unpack_from(data, offset)
        body = offset + 2
        if body + length > n:
            return  # cut short by a crash
        if length < _REC.size:
            raise SpoolError(f"record at {offset} is {length} bytes, shorter than its header")
        wall, seq, ts, ssrc, m_pt = _REC.unpack_from(data, body)
        yield SpoolRecord(wall, seq, ts, ssrc, m_pt & 0x7F, bool(m_pt & 0x80),
                          data[body + _REC.size : body + length])
        offset = body + length


@dataclass(slots=True)
class CallMeta:
    """meta.json beside the spools: what the finisher needs to know about the call."""

    call_id: str
    started_at: float  # epoch seconds (UTC), when the media was allocated
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)  # leg -> {"codec": ...}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # filled in by finish

    def to_json(self) -> str:
        """Serialise as JSON text."""
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> CallMeta:
        """Parse meta.json; raise `SpoolError` when fields are missing."""
        try:
            raw = json.loads(text)
            return cls(str(raw["call_id"]), float(raw["started_at"]),
                       dict(raw.get("legs") or {}), dict(raw.get("files") or {}))
        except (ValueError, KeyError, TypeError) as e:
            raise SpoolError(f"bad meta.json: {e}") from None
