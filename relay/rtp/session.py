"""The sans-IO relay session of one call: two sides, symmetric RTP with latching.

Each side has a relay port pair facing it. A packet received on the caller-facing
port is forwarded to the callee (out of the callee-facing port, so each peer only
ever sees the relay) and vice versa. The adapter does the socket work; this object
only decides, counts and remembers. Time is an argument (`now`, monotonic seconds).

Latching ("symmetric RTP", RFC 4961 and the rtpengine/Kamailio practice): the peer's
SDP gives its expected address, but behind NAT the source port differs. So the first
packet from the SDP's IP, any port, *latches* that source; from then on only that
exact source is accepted and everything else is dropped and counted. Until a side has
latched, packets to it go to its SDP address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = ["Address", "LegStats", "RelaySession", "Side", "Tap"]

Address = tuple[Any, ...]
#: Called with (side, datagram, now) for every accepted RTP datagram (recording).
Tap = Callable[[int, bytes, float], None]


class Side(IntEnum):
    """The two sides of a relayed call; `other` flips them."""

    CALLER = 0
    CALLEE = 1

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side(1 - self)


class _Leg:
    """Mutable per-side state; slots keep the hot path to attribute loads."""

    __slots__ = (
        "bytes",
        "dropped",
        "expected_ip",
        "expected_rtcp_ip",
        "held",
        "last_rx",
        "latched_rtcp",
        "latched_rtp",
        "packets",
        "rtcp_dropped",
        "rtcp_packets",
        "sdp_rtcp",
        "sdp_rtp",
    )

    def __init__(self) -> None:
        self.expected_ip: str | None = None
        self.expected_rtcp_ip: str | None = None
        self.held = False  # its SDP asked for nothing to be sent to it
        self.sdp_rtp: Address | None = None
        self.sdp_rtcp: Address | None = None
        self.latched_rtp: Address | None = None
        self.latched_rtcp: Address | None = None
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.rtcp_packets = 0
        self.rtcp_dropped = 0
        self.last_rx: float | None = None


@dataclass(frozen=True, slots=True)
class LegStats:
    """A snapshot of one side's counters."""

    packets: int
    bytes: int
    dropped: int
    rtcp_packets: int
    rtcp_dropped: int
    last_rx: float | None
    latched: Address | None


class RelaySession:
    """Relay decisions for one call. See the module docstring."""

    __slots__ = ("_legs", "latch_any_ip", "started_at", "tap")

    def __init__(self, now: float, *, tap: Tap | None = None, latch_any_ip: bool = False) -> None:
        """`now` starts the idle clock; `tap` sees accepted RTP (set it to record).

        `latch_any_ip` latches the first source from any IP, for peers whose SDP shows
        a private address behind NAT; it trades the IP check for reachability.
        """
        self._legs = (_Leg(), _Leg())
        self.started_at = now
        self.tap = tap
        self.latch_any_ip = latch_any_ip

    def set_remote(self, side: Side, ip: str | None, rtp_port: int, rtcp_port: int | None = None,
                   rtcp_ip: str | None = None) -> None:
        """Record the peer address that `side`'s SDP announced.

        `ip` None or "0.0.0.0" (RFC 3264 §8.4 old-style hold) or port 0 (stream
        disabled) means "send nothing there". A new IP drops the latches, so the peer
        re-latches from its new address (a re-INVITE that moved the media).
        """
        leg = self._legs[side]
        if ip in (None, "0.0.0.0", "::") or rtp_port == 0:
            # Keep expected_ip and the latch: a holding peer may still send (music on
            # hold), and we accept it from the address we knew; we just send it nothing.
            leg.held = True
            return
        leg.held = False
        if (ip, rtp_port) != leg.sdp_rtp:
            # The media moved (or is new): learn the source afresh.
            leg.latched_rtp = leg.latched_rtcp = None
        leg.expected_ip = ip
        leg.expected_rtcp_ip = rtcp_ip or ip
        leg.sdp_rtp = (ip, rtp_port)
        # RFC 3605: without a=rtcp, RTCP is on the next port.
        leg.sdp_rtcp = (rtcp_ip or ip, rtcp_port if rtcp_port is not None else rtp_port + 1)

    def receive(self, side: int, data: bytes, source: Address, now: float) -> Address | None:
        """Account an RTP datagram that `side` sent; return where to forward it, or None.

        This is the hot path: no parsing, no allocation; the adapter sends the very
        same `data` object out of the other side's socket.
        """
        leg = self._legs[side]
        if leg.latched_rtp != source:
            if (leg.latched_rtp is None and leg.expected_ip is not None
                    and (source[0] == leg.expected_ip or self.latch_any_ip)):
                leg.latched_rtp = source
            else:
                leg.dropped += 1
                return None
        leg.packets += 1
        leg.bytes += len(data)
        leg.last_rx = now
        tap = self.tap  # loaded first: Python 3.11 specialises that, not a call via a slot
        if tap is not None:
            tap(side, data, now)
        other = self._legs[1 - side]
        if other.held:
            return None
        return other.latched_rtp or other.sdp_rtp

    def accept(self, side: int, data: bytes, source: Address, now: float) -> bool:
        """The first half of `receive` (latch check, counters, tap) without the forward.

        For the relay's own voice, whose adapter decides itself what to send where;
        `receive` keeps the same steps inlined for the plain relay's hot path.
        """
        leg = self._legs[side]
        if leg.latched_rtp != source:
            if (leg.latched_rtp is None and leg.expected_ip is not None
                    and (source[0] == leg.expected_ip or self.latch_any_ip)):
                leg.latched_rtp = source
            else:
                leg.dropped += 1
                return False
        leg.packets += 1
        leg.bytes += len(data)
        leg.last_rx = now
        tap = self.tap
        if tap is not None:
            tap(side, data, now)
        return True

    def destination(self, side: int) -> Address | None:
        """Where RTP for `side` goes now (its latched source, else its SDP address);
        None while it is on hold or has announced nothing."""
        leg = self._legs[side]
        if leg.held:
            return None
        return leg.latched_rtp or leg.sdp_rtp

    def receive_rtcp(self, side: int, data: bytes, source: Address, now: float) -> Address | None:
        """Like `receive`, for the RTCP port (+1): relayed opaque, latched separately."""
        leg = self._legs[side]
        if leg.latched_rtcp != source:
            if (leg.latched_rtcp is None and leg.expected_rtcp_ip is not None
                    and (source[0] == leg.expected_rtcp_ip or self.latch_any_ip)):
                leg.latched_rtcp = source
            else:
                leg.rtcp_dropped += 1
                return None
        leg.rtcp_packets += 1
        leg.last_rx = now
        other = self._legs[1 - side]
        if other.held:
            return None
        return other.latched_rtcp or other.sdp_rtcp

    def mark_active(self, now: float) -> None:
        """Restart the idle clock (the call was just answered or re-negotiated)."""
        self.started_at = max(self.started_at, now)

    def idle_for(self, now: float) -> float:
        """Seconds since the last accepted packet (RTP or RTCP) from either side.

        Before any packet it counts from the session's start, so a call whose media
        never arrives times out too.
        """
        last = self.started_at
        for leg in self._legs:
            if leg.last_rx is not None and leg.last_rx > last:
                last = leg.last_rx
        return now - last

    def side_idle_for(self, side: Side, now: float) -> float:
        """Seconds since `side` last sent anything accepted (from start if never)."""
        last = self._legs[side].last_rx
        return now - (self.started_at if last is None else last)

    def stats(self, side: Side) -> LegStats:
        """A snapshot of `side`'s counters."""
        leg = self._legs[side]
        return LegStats(leg.packets, leg.bytes, leg.dropped, leg.rtcp_packets,
                        leg.rtcp_dropped, leg.last_rx, leg.latched_rtp)
