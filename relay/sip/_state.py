"""Transaction state machines as data (RFC 3261 §17, figures 5-8, with RFC 6026).

``TABLE[(kind, state, input)] = (next_state, actions)``. A missing entry is an
illegal transition: the transaction raises :class:`TransactionStateError` naming
the state and the input (the layer drops remote inputs that hit it and counts them).

Inputs: ``send_1xx/send_2xx/send_3456`` (TU hands a response to a server
transaction), ``recv_1xx/recv_2xx/recv_3456`` (a response reaches a client
transaction), ``recv_request`` (a retransmitted request), ``recv_ack``,
``timer_A`` .. ``timer_M``, ``transport_error``.

Actions: ``send`` (transmit the message the TU handed over and remember it),
``resend`` (retransmit the remembered message), ``pass`` (report to the TU),
``ack`` (build and send the ACK for a non-2xx final, §17.1.1.3), ``start_X`` /
``stop_X`` (timers), ``timeout`` (report a timeout to the TU).
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """The four transaction kinds of RFC 3261 §17."""

    ICT = "INVITE client"
    NICT = "non-INVITE client"
    IST = "INVITE server"
    NIST = "non-INVITE server"


class State(StrEnum):
    """Transaction states (RFC 3261 §17; Accepted from RFC 6026 §7.1/§7.2)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class TransactionStateError(Exception):
    """An input that the state table does not allow in the current state."""

    def __init__(self, kind: Kind, state: State, event: str) -> None:
        super().__init__(f"{kind.value} transaction in state {state.value}: "
                         f"illegal event {event}")
        self.kind = kind
        self.state = state
        self.event = event


Row = tuple[State, tuple[str, ...]]

_C, _T, _P, _A = State.CALLING, State.TRYING, State.PROCEEDING, State.ACCEPTED
_CO, _CF, _X = State.COMPLETED, State.CONFIRMED, State.TERMINATED

TABLE: dict[tuple[Kind, State, str], Row] = {
    # --- INVITE client, RFC 3261 §17.1.1.2 figure 5, RFC 6026 §7.2 -------------------
    (Kind.ICT, _C, "timer_A"): (_C, ("resend", "start_A")),
    (Kind.ICT, _C, "timer_B"): (_X, ("timeout",)),
    (Kind.ICT, _C, "recv_1xx"): (_P, ("stop_A", "stop_B", "pass")),
    (Kind.ICT, _C, "recv_2xx"): (_A, ("stop_A", "stop_B", "pass", "start_M")),
    (Kind.ICT, _C, "recv_3456"): (_CO, ("stop_A", "stop_B", "ack", "pass", "start_D")),
    (Kind.ICT, _C, "transport_error"): (_X, ("transport_error",)),
    (Kind.ICT, _P, "recv_1xx"): (_P, ("pass",)),
    (Kind.ICT, _P, "recv_2xx"): (_A, ("stop_B", "pass", "start_M")),
    (Kind.ICT, _P, "recv_3456"): (_CO, ("stop_B", "ack", "pass", "start_D")),
    # §9.1: no final response 64*T1 after our CANCEL: the INVITE is given up (the layer
    # re-arms Timer B in Proceeding when the CANCEL is sent; nothing else arms it here).
    (Kind.ICT, _P, "timer_B"): (_X, ("timeout",)),
    # Accepted: further 2xx (retransmissions or other forks) go to the TU, which
    # ACKs them end to end (RFC 6026 §7.2); provisional responses are dropped.
    (Kind.ICT, _A, "recv_2xx"): (_A, ("pass",)),
    (Kind.ICT, _A, "recv_1xx"): (_A, ()),
    (Kind.ICT, _A, "recv_3456"): (_A, ()),
    (Kind.ICT, _A, "timer_M"): (_X, ()),
    # Completed: retransmitted finals are re-ACKed and not passed up (§17.1.1.2).
    (Kind.ICT, _CO, "recv_3456"): (_CO, ("ack",)),
    (Kind.ICT, _CO, "recv_1xx"): (_CO, ()),
    (Kind.ICT, _CO, "recv_2xx"): (_CO, ()),
    (Kind.ICT, _CO, "timer_D"): (_X, ()),
    (Kind.ICT, _CO, "transport_error"): (_X, ()),
    # --- non-INVITE client, RFC 3261 §17.1.2.2 figure 6 --------------------------------
    (Kind.NICT, _T, "timer_E"): (_T, ("resend", "start_E")),
    (Kind.NICT, _T, "timer_F"): (_X, ("timeout",)),
    (Kind.NICT, _T, "recv_1xx"): (_P, ("pass",)),
    (Kind.NICT, _T, "recv_2xx"): (_CO, ("stop_E", "stop_F", "pass", "start_K")),
    (Kind.NICT, _T, "recv_3456"): (_CO, ("stop_E", "stop_F", "pass", "start_K")),
    (Kind.NICT, _T, "transport_error"): (_X, ("transport_error",)),
    (Kind.NICT, _P, "timer_E"): (_P, ("resend", "start_E")),
    (Kind.NICT, _P, "timer_F"): (_X, ("timeout",)),
    (Kind.NICT, _P, "recv_1xx"): (_P, ("pass",)),
    (Kind.NICT, _P, "recv_2xx"): (_CO, ("stop_E", "stop_F", "pass", "start_K")),
    (Kind.NICT, _P, "recv_3456"): (_CO, ("stop_E", "stop_F", "pass", "start_K")),
    (Kind.NICT, _P, "transport_error"): (_X, ("transport_error",)),
    (Kind.NICT, _CO, "recv_1xx"): (_CO, ()),
    (Kind.NICT, _CO, "recv_2xx"): (_CO, ()),
    (Kind.NICT, _CO, "recv_3456"): (_CO, ()),
    (Kind.NICT, _CO, "timer_K"): (_X, ()),
    # --- INVITE server, RFC 3261 §17.2.1 figure 7, RFC 6026 §7.1 -----------------------
    (Kind.IST, _P, "recv_request"): (_P, ("resend",)),
    (Kind.IST, _P, "send_1xx"): (_P, ("send",)),
    (Kind.IST, _P, "send_2xx"): (_A, ("send", "start_G", "start_L")),
    (Kind.IST, _P, "send_3456"): (_CO, ("send", "start_G", "start_H")),
    (Kind.IST, _P, "transport_error"): (_X, ("transport_error",)),
    (Kind.IST, _CO, "recv_request"): (_CO, ("resend",)),
    (Kind.IST, _CO, "timer_G"): (_CO, ("resend", "start_G")),
    (Kind.IST, _CO, "timer_H"): (_X, ("timeout",)),
    (Kind.IST, _CO, "recv_ack"): (_CF, ("stop_G", "stop_H", "start_I")),
    (Kind.IST, _CO, "transport_error"): (_X, ("transport_error",)),
    (Kind.IST, _CF, "recv_request"): (_CF, ()),
    (Kind.IST, _CF, "recv_ack"): (_CF, ()),
    (Kind.IST, _CF, "timer_I"): (_X, ()),
    # Accepted: INVITE retransmissions are absorbed (RFC 6026 §7.1); the 2xx is
    # re-sent on timer G until the end-to-end ACK arrives (this is the UAS core's
    # duty in RFC 3261 §13.3.1.4, done here so the TU needs no timer of its own).
    (Kind.IST, _A, "recv_request"): (_A, ()),
    (Kind.IST, _A, "send_2xx"): (_A, ("send",)),
    (Kind.IST, _A, "timer_G"): (_A, ("resend", "start_G")),
    (Kind.IST, _A, "recv_ack"): (_A, ("stop_G", "pass")),
    (Kind.IST, _A, "timer_L"): (_X, ("timeout_unacked",)),
    (Kind.IST, _A, "transport_error"): (_A, ("transport_error",)),
    # --- non-INVITE server, RFC 3261 §17.2.2 figure 8 ----------------------------------
    (Kind.NIST, _T, "recv_request"): (_T, ()),
    (Kind.NIST, _T, "send_1xx"): (_P, ("send",)),
    (Kind.NIST, _T, "send_2xx"): (_CO, ("send", "start_J")),
    (Kind.NIST, _T, "send_3456"): (_CO, ("send", "start_J")),
    (Kind.NIST, _P, "recv_request"): (_P, ("resend",)),
    (Kind.NIST, _P, "send_1xx"): (_P, ("send",)),
    (Kind.NIST, _P, "send_2xx"): (_CO, ("send", "start_J")),
    (Kind.NIST, _P, "send_3456"): (_CO, ("send", "start_J")),
    (Kind.NIST, _P, "transport_error"): (_X, ("transport_error",)),
    (Kind.NIST, _CO, "recv_request"): (_CO, ("resend",)),
    (Kind.NIST, _CO, "timer_J"): (_X, ()),
    (Kind.NIST, _CO, "transport_error"): (_X, ()),
}

INITIAL = {Kind.ICT: _C, Kind.NICT: _T, Kind.IST: _P, Kind.NIST: _T}


def transition(kind: Kind, state: State, event: str) -> Row:
    """Look up the next state and actions, or raise TransactionStateError."""
    try:
        return TABLE[(kind, state, event)]
    except KeyError:
        raise TransactionStateError(kind, state, event) from None
