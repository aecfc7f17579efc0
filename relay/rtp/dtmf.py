"""RFC 4733 telephone-events: the payload codec and a digit detector.

Sans-IO: `TelephoneEvent.parse(data)` and `bytes(event)`; `DigitDetector.receive(data,
now)` takes whole RTP packets of the negotiated telephone-event payload type and
returns the digits that ended, once per event. Time is an argument.

How a sender marks one key press (RFC 4733 §2.5.1.2): every packet of the event
carries the event's start as its RTP timestamp; the first has the marker bit, the
duration grows in each update, the last has the E bit and is sent three times
(§2.5.1.4). So an event is identified by its RTP timestamp, and the detector reports
the digit at the first end packet it sees and never again for that timestamp.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from relay.rtp.packet import RtpError, RtpPacket, ts_diff

__all__ = ["DIGITS", "Digit", "DigitDetector", "TelephoneEvent", "TelephoneEventError"]

#: RFC 4733 §3.2 table 7: DTMF events 0-15.
DIGITS = "0123456789*#ABCD"
#: RFC 4733 §2.3: event (8), E (1), R (1), volume (6), duration (16).
_PAYLOAD = struct.Struct("!BBH")
PAYLOAD_SIZE = _PAYLOAD.size


class TelephoneEventError(RtpError):
    """A remote error: the packet is not a valid telephone-event payload."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool = False
    volume: int = 10  # -dBm0, 0-63 (§2.3.4); DTMF senders use 0-36
    duration: int = 0  # timestamp units since the event's RTP timestamp (§2.3.5)

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """Decode a payload of exactly 4 bytes; raise `TelephoneEventError` naming the fault.

        Longer payloads are refused rather than read in part (STYLE 7): several events
        in one packet come as RFC 2198 redundancy (§2.5.1.5), another payload type.
        """
        if len(data) != PAYLOAD_SIZE:
            what = "truncated" if len(data) < PAYLOAD_SIZE else "oversized"
            raise TelephoneEventError(
                f"{what} telephone-event payload: {len(data)} bytes, need 4 (RFC 4733 §2.3)")
        event, flags, duration = _PAYLOAD.unpack(data)
        # §2.3.3: the R bit is reserved; senders set it to 0, receivers ignore it.
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        """Encode; raise `ValueError` for a field out of range (a local error)."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"event {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"duration {self.duration} out of range 0-65535")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        """"0"-"9", "*", "#", "A"-"D" for DTMF events (§3.2), None for other events."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


class Digit(NamedTuple):
    """A digit the detector reports: which, the event's RTP timestamp, when it ended."""

    digit: str
    timestamp: int
    at: float  # the `now` of the packet (or timer) that ended it


#: How many reported events are remembered to absorb late retransmissions (§2.5.1.4).
_REMEMBERED = 8


class DigitDetector:
    """Digits out of one side's telephone-event packets (RFC 4733 §2.5.2).

    `receive` takes every packet of `payload_type` from that side and returns the
    digits that ended with it (usually none, at most two). Rules:

    - an event is its RTP timestamp; it is reported at its first end packet, and the
      retransmitted end packets (§2.5.1.4) and late updates are ignored;
    - a packet with a new timestamp while an event is still open means the open
      event's end packets were all lost (§2.6, §2.5.2.2): it is reported then;
    - a continuation segment of a long event (§2.5.1.3: new timestamp, no marker,
      same event code, starting where the last segment ended) is not a new event;
    - an open event that gets no update for `soft_timeout` seconds is reported by
      `expire` (§2.5.2.5 soft state), so a lost final "#" does not hang the caller;
    - a packet older than the open event (reordering) is ignored; non-DTMF events
      (16 and up) are consumed but never reported; bad packets are counted.
    """

    def __init__(self, payload_type: int, *, soft_timeout: float = 0.25) -> None:
        """`soft_timeout`: RFC 4733 updates come every 50 ms at most; 5 missed is an end."""
        self.payload_type = payload_type
        self.soft_timeout = soft_timeout
        self.invalid = 0
        self._ssrc: int | None = None
        self._open: tuple[int, int, int] | None = None  # (timestamp, event, duration)
        self._open_at = 0.0
        self._done: deque[int] = deque(maxlen=_REMEMBERED)

    @property
    def deadline(self) -> float | None:
        """When `expire` should run: the soft-state end of the open event, if any."""
        return self._open_at + self.soft_timeout if self._open is not None else None

    def receive(self, data: bytes, now: float) -> list[Digit]:
        """Feed one RTP packet; the digits it ended (packets of other types are ignored)."""
        try:
            pkt = RtpPacket.parse(data)
            if pkt.payload_type != self.payload_type:
                return []
            ev = TelephoneEvent.parse(pkt.payload)
        except RtpError:
            self.invalid += 1
            return []
        out: list[Digit] = []
        if pkt.ssrc != self._ssrc:
            # A new source (RFC 3550 §8.2 collision, or the UA restarted its stream):
            # timestamps of the old one mean nothing now.
            self._close(out, now)
            self._done.clear()
            self._ssrc = pkt.ssrc
        ts = pkt.timestamp
        if ts in self._done:
            return out  # §2.5.1.4: a retransmitted end, or a late update of a reported event
        current = self._open
        if current is not None and ts != current[0]:
            ahead = ts_diff(ts, current[0])
            if ahead < 0:
                return out  # reordered: older than the open event
            # §2.5.1.3: a long event goes on in a new segment whose timestamp is where
            # the previous one stopped (its duration had reached 0xFFFF), without marker.
            segment = (not pkt.marker and ev.event == current[1]
                       and ahead <= current[2] + 160)
            if not segment:
                self._close(out, now)  # its end packets were lost (§2.6)
            current = None
        self._open = (ts, ev.event, ev.duration)
        self._open_at = now
        if ev.end:
            self._close(out, now)
        return out

    def expire(self, now: float) -> list[Digit]:
        """Report the open event if it went quiet for `soft_timeout` (§2.5.2.5)."""
        out: list[Digit] = []
        if self._open is not None and now >= self._open_at + self.soft_timeout:
            self._close(out, now)
        return out

    def _close(self, out: list[Digit], now: float) -> None:
        """End the open event: remember its timestamp and report it if it is DTMF."""
        if self._open is None:
            return
        ts, event, _ = self._open
        self._open = None
        self._done.append(ts)
        if event < len(DIGITS):
            out.append(Digit(DIGITS[event], ts, now))
