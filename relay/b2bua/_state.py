"""The two leg machines as data: ``TABLE[(kind, state, event)] = next_state``.

The caller-facing leg is a UAS (RFC 3261 §13.3), the callee-facing leg a UAC
(§13.2). Events are either leg-neutral call-control inputs from the controller
(``ring``, ``connect``, ``fail``, ``disconnect``, ``offer``, ``answer``, ``info``,
``info_reply``, ``try``) or SIP inputs from the leg's own peer (``cancel``,
``bye``, ``ack``, ``provisional``, ``answered``, ``rejected``, ``timeout``,
``remote_offer``, ``remote_info``). A missing entry is an illegal transition and
raises :class:`LegStateError` naming the state and the event; legs check remote
inputs with :func:`allowed` first, so a late or stray message is dropped, not raised.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TABLE", "LegKind", "LegState", "LegStateError", "allowed", "transition"]


class LegKind(StrEnum):
    """Which side of the B2BUA the leg faces."""

    UAS = "caller leg (UAS)"
    UAC = "callee leg (UAC)"


class LegState(StrEnum):
    """Leg states; EARLY means a provisional response with a tag was sent or received."""

    IDLE = "idle"
    TRYING = "trying"
    EARLY = "early"
    CONNECTED = "connected"
    CANCELLING = "cancelling"
    DEAD = "dead"


class LegStateError(Exception):
    """An event the leg's table does not allow in its state (a local error)."""

    def __init__(self, kind: LegKind, state: LegState, event: str) -> None:
        super().__init__(f"{kind.value} in state {state.value}: illegal event {event}")
        self.kind = kind
        self.state = state
        self.event = event


_S, _U = LegKind.UAS, LegKind.UAC
_I, _T, _E, _C = LegState.IDLE, LegState.TRYING, LegState.EARLY, LegState.CONNECTED
_CX, _D = LegState.CANCELLING, LegState.DEAD

TABLE: dict[tuple[LegKind, LegState, str], LegState] = {
    # --- caller leg: we answer the caller's INVITE (RFC 3261 §13.3.1) ---------------
    (_S, _T, "ring"): _E,
    (_S, _E, "ring"): _E,
    (_S, _T, "connect"): _C,
    (_S, _E, "connect"): _C,
    (_S, _T, "fail"): _D,
    (_S, _E, "fail"): _D,
    # §9.2: a CANCEL before the final response ends the attempt with 487.
    (_S, _T, "cancel"): _D,
    (_S, _E, "cancel"): _D,
    # §9.2: a CANCEL after the 2xx has no effect on the call.
    (_S, _C, "cancel"): _C,
    # §15: the caller should not BYE before the final response, but a UAS must cope.
    (_S, _T, "bye"): _D,
    (_S, _E, "bye"): _D,
    (_S, _C, "bye"): _D,
    (_S, _T, "disconnect"): _D,
    (_S, _E, "disconnect"): _D,
    (_S, _C, "disconnect"): _D,
    (_S, _C, "ack"): _C,
    # §13.3.1.4: no ACK for the 2xx within 64*T1 ends the dialog.
    (_S, _C, "timeout"): _D,
    (_S, _C, "offer"): _C,
    (_S, _C, "answer"): _C,
    (_S, _C, "remote_offer"): _C,
    (_S, _C, "info"): _C,
    (_S, _C, "info_reply"): _C,
    (_S, _C, "remote_info"): _C,
    # RFC 3311: UPDATE (never a re-INVITE) renegotiates an early dialog too.
    (_S, _E, "offer"): _E,
    (_S, _E, "answer"): _E,
    (_S, _E, "remote_offer"): _E,
    # --- callee leg: we send the INVITE (RFC 3261 §13.2) ----------------------------
    (_U, _I, "try"): _T,
    (_U, _I, "disconnect"): _D,
    (_U, _T, "provisional"): _E,
    (_U, _E, "provisional"): _E,
    (_U, _CX, "provisional"): _CX,
    (_U, _T, "answered"): _C,
    (_U, _E, "answered"): _C,
    (_U, _C, "answered"): _C,  # §13.2.2.4: a retransmitted 2xx is ACKed again
    (_U, _CX, "answered"): _D,  # the 2xx crossed our CANCEL: ACK, then BYE
    (_U, _T, "rejected"): _D,
    (_U, _E, "rejected"): _D,
    (_U, _CX, "rejected"): _D,
    (_U, _T, "disconnect"): _CX,
    (_U, _E, "disconnect"): _CX,
    (_U, _CX, "disconnect"): _CX,
    (_U, _C, "disconnect"): _D,
    (_U, _T, "bye"): _D,
    (_U, _E, "bye"): _D,
    (_U, _C, "bye"): _D,
    (_U, _C, "offer"): _C,
    (_U, _C, "answer"): _C,
    (_U, _C, "remote_offer"): _C,
    (_U, _C, "info"): _C,
    (_U, _C, "info_reply"): _C,
    (_U, _C, "remote_info"): _C,
    (_U, _E, "offer"): _E,
    (_U, _E, "answer"): _E,
    (_U, _E, "remote_offer"): _E,
}


def allowed(kind: LegKind, state: LegState, event: str) -> bool:
    """Whether the table has a row for this input."""
    return (kind, state, event) in TABLE


def transition(kind: LegKind, state: LegState, event: str) -> LegState:
    """The next state, or LegStateError."""
    try:
        return TABLE[(kind, state, event)]
    except KeyError:
        raise LegStateError(kind, state, event) from None
