"""Leg-neutral call-control events (sippy B2BUA style) and the controller's outputs.

A leg turns SIP into these events and these events into SIP; the call controller
passes them from one leg to the other (through the media backend when they carry
SDP) and never touches SIP itself. Frozen, slotted, no logic (STYLE.md point 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.rtp.session import Side

__all__ = [
    "Ack", "Answer", "CCEvent", "CallAnswered", "CallEnded", "CallEvent", "CallRefused",
    "CallRinging", "Connect", "Disconnect", "Fail", "Incoming", "Info", "InfoReply",
    "MediaJob", "Offer", "Ring", "Try",
]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A new call as the call map read it from the caller's INVITE: the dialled X and
    extension (AXE), the caller's number, its offer (empty: late offer), the hops left,
    and whether its trunk takes early media (announcements in a 183)."""

    x: str
    caller: str | None
    ext: str | None
    sdp: bytes
    max_forwards: int = 70
    early_media: bool = True


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
    """The callee answered; `sdp` is its answer (or, late offer, its `offer`)."""

    sdp: bytes
    offer: bool = False


@dataclass(frozen=True, slots=True)
class Fail:
    """The attempt failed with a SIP status and a Q.850 cause (before answer)."""

    code: int
    cause: int
    reason: str = ""
    retry_after: int | None = None  # only when the relay itself is short of resources


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
    digit: str | None = None  # the DTMF digit a dtmf-relay/dtmf body carries


@dataclass(frozen=True, slots=True)
class InfoReply:
    """The final status of a relayed INFO."""

    code: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Late offer: acknowledge the callee's 2xx with the caller's (rewritten) answer."""

    sdp: bytes


CCEvent = Try | Ring | Connect | Fail | Disconnect | Offer | Answer | Info | InfoReply | Ack


# -- call events: what the controller reports (the adapter drains them) ---------------
@dataclass(frozen=True, slots=True)
class CallRinging:
    """The callee is alerting (its first provisional); who the call is between, as the
    record will say (for the events subsystem, which sees no record until the end)."""

    call_id: str
    at: float
    x: str | None = None
    binding: str | None = None
    out_id: str | None = None
    direction: str | None = None
    caller: str | None = None
    callee: str | None = None
    # UTC ms of the caller's INVITE and of the callee's (crash records need them).
    invite_at: tuple[int | None, int | None] = (None, None)


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The callee answered and the media is bridged; the parties as in CallRinging."""

    call_id: str
    at: float
    x: str | None = None
    binding: str | None = None
    out_id: str | None = None
    direction: str | None = None
    caller: str | None = None
    callee: str | None = None
    # UTC ms of the caller's INVITE and of the callee's (crash records need them).
    invite_at: tuple[int | None, int | None] = (None, None)


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call that was routed (bridged, or collecting an extension) is over; `record`
    is its whole call record."""

    call_id: str
    at: float
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallRefused:
    """The relay refused an attempt; `record` is its call record."""

    call_id: str
    at: float
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LeakBlocked:
    """The egress leak guard (relay/guard.py) kept a message from a party: it held the
    other party's real number. `toward` is "caller" or "callee", `what` the message
    ("INVITE", "180", ...); the numbers are the call's own (masked by the event builder)."""

    call_id: str
    at: float
    toward: str
    what: str
    x: str | None = None
    binding: str | None = None
    caller: str | None = None
    callee: str | None = None
    channel: str = "sip"


CallEvent = CallRinging | CallAnswered | CallEnded | CallRefused | LeakBlocked


@dataclass(frozen=True, slots=True)
class MediaJob:
    """Work for the (asynchronous) media backend; the adapter runs it and hands the
    result back with `Switch.media_done(job, result, error, now)`.

    `op` is "setup" (allocate, then offer from the caller), "offer", "answer",
    "release", or the relay's own voice: "answer_local" (the relay answers `side`'s
    offer), "local_offer" (a fresh offer toward `side`), "play" (the prompt named
    `prompt` into `side`, looped when `flag`), "stop_play", "detect" (digits from
    `side` reported and kept from the other side while `flag`). Not media but run the
    same way: "score" (the harassment score of caller `key`), "hook" (ask the
    decision hook about `info`: True to allow). Jobs of one call are issued one at a
    time, in order.
    """

    seq: int
    call_id: str
    op: str
    side: Side = Side.CALLER
    sdp: bytes = b""
    record: bool = False
    handle: object = None  # the backend's MediaCall, once allocated
    prompt: str = ""
    flag: bool = False
    key: str = ""  # "score": the caller
    info: Any = None  # "hook": what the decision hook is told of the call (a dict)
