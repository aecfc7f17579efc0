"""The recording spool: an append-only log of one leg's received RTP datagrams.

Sans-IO: `SpoolBuffer` collects datagrams and their arrival times in memory (two
appends per packet, nothing parsed) and `take()` frames what it holds as one chunk;
`SpoolWriter` adds a file for callers that own one (tests, the pcap converter). The
relay writes a chunk about once a second per leg, so a crash loses at most about a
second of audio; every header is parsed later, by the reader, off the event loop
(`recordings.finish` turns spools into WAV files).

The relay writes version 3: one file per call (`<day>/<call_id>.spool`, beside the
folder its WAVs will go to) holding both legs and the call's metadata, so that
starting a recording costs one file, and a crash still leaves everything the
finisher needs:
    header  b"RSPL" version:u8 (=3)
    frame   tag:u8 | length:u32 | body (`length` bytes)
            tag 0, 1: a version 2 chunk (below) of the caller's, the callee's datagrams
            tag 2:    CallMeta as JSON (the last one in the file wins)
A frame cut short at the end of the file (a crash mid-write) is ignored by the reader.

Version 2 (one file per leg, still read; `SpoolWriter` writes it):
    header  b"RSPL" version:u8 (=2)
    chunk   count:u32 | size:u32 | offset:f64
            | times:  count x f64   arrival clock; wall time (epoch s) = time + offset
            | lengths: count x u16  of each datagram
            | datagrams: `size` bytes, the raw RTP datagrams back to back
A chunk cut short at the end of the file (a crash mid-write) is ignored by the reader.
Datagrams that are not valid RTP (RFC 3550 §5.1), or are RTCP multiplexed on the RTP
port (RFC 5761 §4), are skipped by the reader (the relay still forwarded them).

Version 1, still read (spools a crash left behind by an older relay):
    record  length:u16 | wall:f64 | seq:u16 | ts:u32 | ssrc:u32 | m_pt:u8 | payload
"""

from __future__ import annotations

import array
import json
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = [
    "MAGIC",
    "CallMeta",
    "SpoolBuffer",
    "SpoolError",
    "SpoolRecord",
    "SpoolWriter",
    "call_frames",
    "read_call_spool",
    "read_spool",
]

MAGIC = b"RSPL\x02"
MAGIC_V1 = b"RSPL\x01"
MAGIC_V3 = b"RSPL\x03"
#: Frame tags of a version 3 spool: 0 and 1 are the legs (caller, callee).
TAG_META = 2
_FRAME = struct.Struct("<BI")
_CHUNK = struct.Struct("<IId")
_LEN = struct.Struct("<H")
_REC_V1 = struct.Struct("<dHIIB")
_RTP_FIXED = struct.Struct("!xBHII")
_SWAP = sys.byteorder != "little"  # arrays are written little-endian


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


def _is_spoolable(data: bytes) -> bool:
    """True for a valid RTP datagram that is not RTCP (what the reader keeps)."""
    return (_payload_bounds(data) is not None
            and not 200 <= data[1] <= 204)  # RTCP multiplexed on the RTP port (RFC 5761 §4)


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


class SpoolBuffer:
    """One leg's datagrams and arrival times since the last `take`.

    The relay's hot path appends to `datagrams` and `times` directly (two C-level
    appends, no call of ours); both keep their identity across `take`, so bound
    `append` methods stay valid. `clock_offset` turns the arrival clock into wall
    time (epoch seconds): the relay passes its monotonic clock and the offset fixed
    when the call started, the pcap converter wall times and 0.
    """

    __slots__ = ("clock_offset", "datagrams", "packets", "times")

    def __init__(self, clock_offset: float = 0.0) -> None:
        """An empty buffer."""
        self.clock_offset = clock_offset
        self.datagrams: list[bytes] = []
        self.times = array.array("d")
        self.packets = 0  # datagrams taken so far

    def add(self, data: bytes, now: float) -> None:
        """Buffer one datagram received at `now` (the relay inlines this)."""
        self.datagrams.append(data)
        self.times.append(now)

    def __len__(self) -> int:
        """Datagrams buffered."""
        return len(self.datagrams)

    def take(self) -> bytes:
        """The buffered datagrams framed as one chunk (b"" if none); empties the buffer."""
        datagrams = self.datagrams
        n = len(datagrams)
        if not n:
            return b""
        times = self.times
        if len(times) != n:  # a local error: someone appended to one list only
            raise ValueError(f"spool buffer holds {n} datagrams but {len(times)} times")
        lengths = array.array("H", map(len, datagrams))
        body = b"".join(datagrams)
        if _SWAP:
            times = array.array("d", times)
            times.byteswap()
            lengths.byteswap()
        chunk = b"".join((_CHUNK.pack(n, len(body), self.clock_offset), times.tobytes(),
                          lengths.tobytes(), body))
        datagrams.clear()
        del self.times[:]
        self.packets += n
        return chunk


class SpoolWriter:
    """A `SpoolBuffer` that writes its chunks to `file` on `flush`.

    `append` validates what it is given (the relay does not: the reader skips what
    is not RTP) and says when a flush is due: every `flush_packets` packets or
    `flush_interval` seconds of wall time.
    """

    __slots__ = ("_file", "_flush_at_count", "_flush_at_wall", "_header", "buffer", "closed",
                 "flush_interval", "flush_packets", "invalid")

    def __init__(self, file: BinaryIO, *, flush_interval: float = 1.0,
                 flush_packets: int = 50) -> None:
        """Wrap an open, empty (or new) binary file; the header goes with the first flush."""
        self._file = file
        self._header = True
        self.buffer = SpoolBuffer()
        self.flush_interval = flush_interval
        self.flush_packets = flush_packets
        self._flush_at_count = flush_packets  # `packets` value that asks for a flush
        self._flush_at_wall: float | None = None  # set by the first packet
        self.invalid = 0
        self.closed = False

    @property
    def packets(self) -> int:
        """Datagrams spooled (buffered or written)."""
        return self.buffer.packets + len(self.buffer)

    def append(self, data: bytes, wall: float) -> bool:
        """Spool one raw RTP datagram received at `wall` (epoch seconds).

        Invalid or RTCP datagrams are counted and skipped. Returns True when the
        caller should call `flush` now.
        """
        if not _is_spoolable(data):
            self.invalid += 1
            return False
        buf = self.buffer
        buf.add(data, wall)
        flush_at_wall = self._flush_at_wall
        if flush_at_wall is None:
            self._flush_at_wall = flush_at_wall = wall + self.flush_interval
        return self.packets >= self._flush_at_count or wall >= flush_at_wall

    def flush(self, wall: float | None = None) -> None:
        """Write the buffered datagrams to the file and flush it (the caller's IO)."""
        chunk = self.buffer.take()
        if self._header:
            chunk = MAGIC + chunk
            self._header = False
        if chunk:
            self._file.write(chunk)
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


def _record(wall: float, data: bytes) -> SpoolRecord | None:
    bounds = _payload_bounds(data)
    if bounds is None:
        return None
    m_pt, seq, ts, ssrc = _RTP_FIXED.unpack_from(data)
    if 200 <= m_pt <= 204:  # RTCP (RFC 5761 §4)
        return None
    start, end = bounds
    return SpoolRecord(wall, seq, ts, ssrc, m_pt & 0x7F, bool(m_pt & 0x80),
                       bytes(data[start:end]))


def read_spool(data: bytes) -> Iterator[SpoolRecord]:
    """Yield the valid RTP records of a spool file's bytes in arrival order.

    A truncated final chunk or record (crash) ends the iteration quietly; a wrong
    magic or a corrupt frame raises `SpoolError`.
    """
    if data.startswith(MAGIC):
        yield from _read_v2(data)
    elif data.startswith(MAGIC_V1):
        yield from _read_v1(data)
    elif MAGIC.startswith(data) or MAGIC_V1.startswith(data):
        return  # an empty or header-less spool: the call ended before any packet
    else:
        raise SpoolError("not a spool file (bad magic)")


def _read_v2(data: bytes, offset: int = len(MAGIC),
             n: int | None = None) -> Iterator[SpoolRecord]:
    """The chunks in data[offset:n] (a version 2 file, or a version 3 frame's body)."""
    if n is None:
        n = len(data)
    view = memoryview(data)
    while offset + _CHUNK.size <= n:
        count, size, clock_offset = _CHUNK.unpack_from(data, offset)
        times_at = offset + _CHUNK.size
        lengths_at = times_at + 8 * count
        body_at = lengths_at + 2 * count
        end = body_at + size
        if end > n:
            return  # cut short by a crash
        times = array.array("d")
        times.frombytes(view[times_at:lengths_at])
        lengths = array.array("H")
        lengths.frombytes(view[lengths_at:body_at])
        if _SWAP:
            times.byteswap()
            lengths.byteswap()
        if sum(lengths) != size:
            raise SpoolError(f"chunk at {offset}: datagram lengths do not add up to {size}")
        pos = body_at
        for t, length in zip(times, lengths, strict=True):
            rec = _record(t + clock_offset, data[pos : pos + length])
            pos += length
            if rec is not None:
                yield rec
        offset = end


def _read_v1(data: bytes) -> Iterator[SpoolRecord]:
    offset = len(MAGIC_V1)
    n = len(data)
    while offset + 2 <= n:
        (length,) = _LEN.unpack_from(data, offset)
        body = offset + 2
        if body + length > n:
            return  # cut short by a crash
        if length < _REC_V1.size:
            raise SpoolError(f"record at {offset} is {length} bytes, shorter than its header")
        wall, seq, ts, ssrc, m_pt = _REC_V1.unpack_from(data, body)
        yield SpoolRecord(wall, seq, ts, ssrc, m_pt & 0x7F, bool(m_pt & 0x80),
                          data[body + _REC_V1.size : body + length])
        offset = body + length


def call_frames(meta: CallMeta | None, chunks: tuple[bytes, bytes]) -> bytes:
    """Version 3 frames: `meta` (when given) then each leg's non-empty chunk."""
    parts: list[bytes] = []
    if meta is not None:
        body = meta.to_json(compact=True).encode()
        parts += (_FRAME.pack(TAG_META, len(body)), body)
    for tag, chunk in enumerate(chunks):
        if chunk:
            parts += (_FRAME.pack(tag, len(chunk)), chunk)
    return b"".join(parts)


def read_call_spool(data: bytes) -> tuple[CallMeta | None, list[list[SpoolRecord]]]:
    """A version 3 spool's last CallMeta and each leg's valid RTP records (caller, callee).

    A frame cut short at the end (crash) is ignored; a wrong magic, an unknown tag or
    a corrupt chunk raises `SpoolError`. `meta` is None if the file holds none (a
    crash before its first write completed).
    """
    legs: list[list[SpoolRecord]] = [[], []]
    if not data.startswith(MAGIC_V3):
        if MAGIC_V3.startswith(data):
            return None, legs  # the crash came before the header was whole
        raise SpoolError("not a version 3 spool file (bad magic)")
    meta: CallMeta | None = None
    offset = len(MAGIC_V3)
    n = len(data)
    while offset + _FRAME.size <= n:
        tag, length = _FRAME.unpack_from(data, offset)
        body = offset + _FRAME.size
        end = body + length
        if end > n:
            break  # cut short by a crash
        if tag == TAG_META:
            meta = CallMeta.from_json(data[body:end])
        elif tag < TAG_META:
            legs[tag].extend(_read_v2(data, body, end))
        else:
            raise SpoolError(f"frame at {offset}: unknown tag {tag}")
        offset = end
    return meta, legs


@dataclass(slots=True)
class CallMeta:
    """meta.json beside the spools: what the finisher needs to know about the call."""

    call_id: str
    started_at: float  # epoch seconds (UTC), when the media was allocated
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)  # leg -> {"codec": ...}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # filled in by finish

    def to_json(self, *, compact: bool = False) -> str:
        """Serialise as JSON text (meta.json, indented); `compact` for the spool's
        frames, which the relay writes on its event loop: json's C encoder does not
        indent, and the indenting one (pure Python) cost more than the rest of a frame."""
        doc = {"call_id": self.call_id, "files": self.files, "legs": self.legs,
               "started_at": self.started_at}
        if compact:
            return json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return json.dumps(doc, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> CallMeta:
        """Parse meta.json; raise `SpoolError` when fields are missing."""
        try:
            raw = json.loads(text)
            return cls(str(raw["call_id"]), float(raw["started_at"]),
                       dict(raw.get("legs") or {}), dict(raw.get("files") or {}))
        except (ValueError, KeyError, TypeError) as e:
            raise SpoolError(f"bad meta.json: {e}") from None
