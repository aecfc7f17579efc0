"""Leg-neutral call-control events (sippy B2BUA style) and the controller's outputs.

A leg turns SIP into these events and these events into SIP; the call controller
passes them from one leg to the other (through the media backend when they carry
SDP) and never touches SIP itself. Frozen, slotted, no logic (STYLE.md point 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.rtp.session import Side

__all__ = [
    "Answer", "CCEvent", "Connect", "Disconnect", "Fail", "Info", "InfoReply", "MediaJob",
    "Offer", "Ring", "Try",
]


@dataclass(frozen=True, slots=True)
class Try:
    """Place the call: the callee leg sends an INVITE to `to` showing `x`."""

    x: str
    to: str
    sdp: bytes
    max_forwards: int = 70


@dataclass(frozen=True, slots=True)
class Ring:
    """The callee is alerting (180) or sends early media (183); `sdp` may be empty."""

    code: int
    sdp: bytes = b""


@dataclass(frozen=True, slots=True)
class Connect:
    """The callee answered; `sdp` is its answer."""

    sdp: bytes


@dataclass(frozen=True, slots=True)
class Fail:
    """The attempt failed with a SIP status and a Q.850 cause (before answer)."""

    code: int
    cause: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The call ends; `by` is who released it: "caller", "callee" or "relay"."""

    by: str
    cause: int = 16  # Q.850 normal call clearing


@dataclass(frozen=True, slots=True)
class Offer:
    """A mid-call offer (re-INVITE or UPDATE, RFC 3311) with SDP."""

    method: str
    sdp: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """The final answer to a mid-call offer; `sdp` is empty for a failure."""

    code: int
    sdp: bytes = b""


@dataclass(frozen=True, slots=True)
class Info:
    """An INFO (RFC 6086: DTMF relay and the like): only its body and type cross."""

    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class InfoReply:
    """The final status of a relayed INFO."""

    code: int


CCEvent = Try | Ring | Connect | Fail | Disconnect | Offer | Answer | Info | InfoReply


@dataclass(frozen=True, slots=True)
class MediaJob:
    """Work for the (asynchronous) media backend; the adapter runs it and hands the
    result back with `Switch.media_done(job, result, error, now)`.

    `op` is "setup" (allocate, then offer from the caller), "offer", "answer" or
    "release". Jobs of one call are issued one at a time, in order.
    """

    seq: int
    call_id: str
    op: str
    side: Side = Side.CALLER
    sdp: bytes = b""
    record: bool = False
    handle: object = None  # the backend's MediaCall, once allocated
