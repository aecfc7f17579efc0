"""RTP packet codec (RFC 3550 §5.1) and 16/32-bit wrap-around arithmetic.

Sans-IO: `RtpPacket.parse(data)` and `bytes(packet)`; no sockets, no clock.
RTCP (RFC 3550 §6) is only recognised, never decoded: the relay passes it on opaque.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_HEADER_SIZE",
    "RtpError",
    "RtpPacket",
    "is_rtcp",
    "payload_bounds",
    "seq_diff",
    "seq_gt",
    "ts_diff",
    "unwrap",
]

#: The fixed part of the header (RFC 3550 §5.1): V/P/X/CC, M/PT, seq, ts, SSRC.
RTP_HEADER_SIZE = 12
_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A remote error: the peer sent a datagram that is not a valid RTP packet."""


# --- wrap-around arithmetic (the one place that knows about modular sequence numbers) ---


def _signed_diff(a: int, b: int, bits: int) -> int:
    """`a - b` on a `bits`-wide circle, as a signed number in [-2**(bits-1), 2**(bits-1))."""
    half = 1 << (bits - 1)
    return ((a - b + half) & ((1 << bits) - 1)) - half


def seq_diff(a: int, b: int) -> int:
    """How far 16-bit sequence number `a` is ahead of `b` (negative: behind).

    RFC 3550 §A.1 treats the sequence space as a circle; the nearer direction wins.
    """
    return _signed_diff(a, b, 16)


def seq_gt(a: int, b: int) -> bool:
    """True when 16-bit sequence number `a` comes after `b` (RFC 1982 serial arithmetic)."""
    return seq_diff(a, b) > 0


def ts_diff(a: int, b: int) -> int:
    """How far 32-bit RTP timestamp `a` is ahead of `b`, signed (RFC 3550 §5.1 wraps)."""
    return _signed_diff(a, b, 32)


def unwrap(value: int, previous_extended: int | None, bits: int) -> int:
    """Extend a `bits`-wide counter to an unbounded integer near `previous_extended`.

    The first value (previous None) extends to itself; later ones land on whichever
    lap puts them nearest to the previous extended value, so a step from 65535 to 0
    becomes 65536 and a late 65534 after that becomes 65534 again.
    """
    if previous_extended is None:
        return value
    return previous_extended + _signed_diff(value, previous_extended & ((1 << bits) - 1), bits)


# --- RTP / RTCP ---


def is_rtcp(data: bytes) -> bool:
    """True when a datagram looks like RTCP rather than RTP.

    RFC 5761 §4: with RTP and RTCP on one port, the second byte tells them apart;
    RTCP packet types 200-204 (SR, RR, SDES, BYE, APP) never clash with the RTP
    payload types a relay carries, once the marker bit is included.
    """
    return len(data) >= 2 and data[0] >> 6 == 2 and 200 <= data[1] <= 204


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1)."""

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    #: (profile, data) of the header extension (RFC 3550 §5.3.1), data a multiple of 4 bytes.
    extension: tuple[int, bytes] | None = None
    payload: bytes = b""
    #: Padding octets to append, counting the final length octet (RFC 3550 §5.1 P bit).
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode one RTP packet; raise `RtpError` naming what is wrong."""
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"truncated RTP header: {len(data)} bytes, need {RTP_HEADER_SIZE}")
        first, second, seq, ts, ssrc = _FIXED.unpack_from(data)
        version = first >> 6
        if version != 2:
            raise RtpError(f"RTP version {version}, expected 2")
        if is_rtcp(data):
            raise RtpError(f"packet type {second} is RTCP, not RTP (RFC 5761 §4)")
        cc = first & 0x0F
        offset = RTP_HEADER_SIZE + 4 * cc
        if len(data) < offset:
            raise RtpError(f"truncated CSRC list: {cc} CSRCs need {offset} bytes, got {len(data)}")
        csrc = list(struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE)) if cc else []
        extension = None
        if first & 0x10:
            # RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then data.
            if len(data) < offset + 4:
                raise RtpError("truncated header extension")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            end = offset + 4 + 4 * words
            if len(data) < end:
                raise RtpError(f"truncated header extension: {words} words declared")
            extension = (profile, bytes(data[offset + 4 : end]))
            offset = end
        end = len(data)
        padding = 0
        if first & 0x20:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"invalid padding length {padding}")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(second & 0x80),
            csrc=csrc,
            extension=extension,
            payload=bytes(data[offset:end]),
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        """Encode the packet; raise `ValueError` if a field is out of range (a local error)."""
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255")
        first = 0x80 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [_FIXED.pack(first, second, self.sequence_number & 0xFFFF,
                             self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4:
                raise ValueError("header extension data must be a multiple of 4 bytes")
            parts.append(_EXT_HEADER.pack(profile, len(ext) // 4))
            parts.append(ext)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def payload_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the payload inside a raw RTP packet, skipping CSRCs, extension, padding.

    A cheaper path than `RtpPacket.parse` for the recorder; raises `RtpError` like it.
    """
    n = len(data)
    if n < RTP_HEADER_SIZE:
        raise RtpError(f"truncated RTP header: {n} bytes, need {RTP_HEADER_SIZE}")
    first = data[0]
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    start = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if n < start + 4:
            raise RtpError("truncated header extension")
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if start > n:
        raise RtpError("truncated RTP header")
    end = n
    if first & 0x20:
        pad = data[-1]
        if pad == 0 or start + pad > n:
            raise RtpError(f"invalid padding length {pad}")
        end -= pad
    return start, end
