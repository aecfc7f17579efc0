"""The media backend interface: all the B2BUA knows about media.

One `MediaCall` per call. The B2BUA hands each SDP body it receives to `offer` or
`answer` with the side it came from, and sends the returned body to the other side.
Backends: `relay.media.inprocess.InProcessBackend` (default) and
`relay.media.rtpengine.RtpengineBackend` (rtpengine over its ng protocol, for scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from recordings.finish import RecordingResult
from relay.rtp.session import LegStats, Side

__all__ = [
    "DigitReceived", "MediaBackend", "MediaCall", "MediaEvent", "MediaStats", "PlaybackEnded",
    "Side",
]


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


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A DTMF digit that `side` sent as RFC 4733 telephone-events (reported once, at the
    event's end; retransmitted end packets are not reported again)."""

    call_id: str
    side: Side
    digit: str  # "0"-"9", "*", "#", "A"-"D"
    at: float  # epoch seconds (UTC) of the event's end


@dataclass(frozen=True, slots=True)
class PlaybackEnded:
    """A prompt started with `play` ended: it ran out (`completed`) or was stopped."""

    call_id: str
    side: Side
    play_id: int
    completed: bool


MediaEvent = DigitReceived | PlaybackEnded


class MediaBackend(Protocol):
    """What the B2BUA calls. SDP errors raise `relay.sdp.SdpError` (its `.status`:
    400 malformed, 488 `NoCommonCodec`); exhaustion raises `relay.rtp.ports.PortsExhausted`.
    Given a manifest key, a backend seals each call folder (recordings.manifest) as it
    finishes it, before the spools go, and `finish_pending` seals what a crash left.
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

    # --- the relay's own voice (prompts, tones, digits: issue 9) ---

    def set_listener(self, listener: Callable[[MediaEvent], None]) -> None:
        """Where the backend reports `MediaEvent` s (called on the event loop)."""
        ...

    async def answer_locally(self, call: MediaCall, side: Side) -> bytes:
        """The relay itself answers the offer `side` made (already given to `offer`):
        an SDP answer with the relay's port facing `side`, one audio codec chosen from
        the offer (PCMU, else PCMA) and telephone-event when offered. Afterwards the
        offer toward the other side (`local_offer`) carries only that codec."""
        ...

    async def local_offer(self, call: MediaCall, to_side: Side) -> bytes:
        """A fresh offer toward `to_side` (a new version of the relay's o= line) with the
        relay's port facing it and the codec settled with the other side."""
        ...

    async def play(self, call: MediaCall, side: Side, prompt: Path, *,
                   repeat: bool = False) -> int:
        """Start playing `prompt` (a WAV: 8 kHz mono 16-bit PCM) into `side`, replacing
        what plays there now; returns a play id for `PlaybackEnded`. While a prompt plays
        into `side`, media from the other side is recorded but not relayed to it."""
        ...

    async def stop_play(self, call: MediaCall, side: Side) -> None:
        """Stop what plays into `side` (PlaybackEnded with completed=False); relaying
        resumes. No-op when nothing plays."""
        ...

    async def detect_digits(self, call: MediaCall, side: Side, on: bool) -> None:
        """Report (`DigitReceived`) or stop reporting the digits `side` sends; while on,
        those telephone-events are not relayed to the other side."""
        ...

    async def finish_pending(self) -> list[RecordingResult]:
        """Finish recordings a crash left behind (at start-up)."""
        ...

    async def close(self) -> None:
        """Release every live call (shutdown)."""
        ...
