"""The media backend interface: all the B2BUA knows about media.

One `MediaCall` per call. The B2BUA hands each SDP body it receives to `offer` or
`answer` with the side it came from, and sends the returned body to the other side.
Backends: `relay.media.inprocess.InProcessBackend` (default) and
`relay.media.rtpengine.RtpengineBackend` (rtpengine over its ng protocol, for scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from recordings.finish import RecordingResult
from relay.rtp.session import LegStats, Side

__all__ = ["MediaBackend", "MediaCall", "MediaStats", "Side"]


@dataclass(eq=False)
class MediaCall:
    """A backend's handle on one call's media.

    `local_ports[side]` is the relay RTP port facing `side` (RTCP is +1): the port
    written into the SDP that `side` receives. `state` is the backend's own.
    """

    call_id: str
    record: bool
    started_at: float  # epoch seconds (UTC)
    local_ports: dict[Side, int]
    state: object = field(default=None, repr=False)
    released: bool = False


@dataclass(frozen=True, slots=True)
class MediaStats:
    """Counters of one call: per side what the relay accepted from it and dropped."""

    call_id: str
    caller: LegStats
    callee: LegStats
    idle_for: float  # seconds since the last packet from either side


class MediaBackend(Protocol):
    """What the B2BUA calls. SDP errors raise `relay.sdp.SdpError` (its `.status`:
    400 malformed, 488 `NoCommonCodec`); exhaustion raises `relay.rtp.ports.PortsExhausted`.
    """

    async def allocate(self, call_id: str, record: bool) -> MediaCall:
        """Reserve relay ports (and a recording) for a new call."""
        ...

    async def offer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """An SDP offer from `from_side`; returns the offer to send to the other side."""
        ...

    async def answer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """An SDP answer from `from_side`; returns the answer to send to the other side."""
        ...

    def stats(self, call: MediaCall) -> MediaStats:
        """The call's media counters right now."""
        ...

    def idle_calls(self, timeout: float) -> list[MediaCall]:
        """Live calls with no media from either side for `timeout` seconds."""
        ...

    async def release(self, call: MediaCall) -> RecordingResult | None:
        """Free the call's ports; finish and return its recording (None if not recorded)."""
        ...

    async def finish_pending(self) -> list[RecordingResult]:
        """Finish recordings a crash left behind (at start-up)."""
        ...

    async def close(self) -> None:
        """Release every live call (shutdown)."""
        ...
