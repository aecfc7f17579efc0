"""The SMPP session state machine as tables (SMPP 3.4 §2.2 session states, §2.3 PDU legality).

Everything the session may do in a state is read from here, so the whole machine can
be reviewed on one screen. An illegal transition is a local error naming both the
state and the event.
"""

from __future__ import annotations

import enum

from relay.sms import constants as c
from relay.sms.pdu import LocalSmppError


class State(enum.Enum):
    """SMPP 3.4 §2.2 session states (UNBOUND: unbind done, the TCP link is closing)."""

    OPEN = "OPEN"
    BOUND_TX = "BOUND_TX"
    BOUND_RX = "BOUND_RX"
    BOUND_TRX = "BOUND_TRX"
    UNBOUND = "UNBOUND"
    CLOSED = "CLOSED"

    # Members are singletons compared by identity, so the identity hash agrees with ==;
    # Enum's own __hash__ is Python code, and the tables below are probed per PDU.
    __hash__ = object.__hash__


class Role(enum.Enum):
    """Which end of the link this session is (§2.1): we are the SMSC or the ESME."""

    SERVER = "smsc"
    CLIENT = "esme"

    __hash__ = object.__hash__  # see State


class Transition(enum.Enum):
    """Events that move the state machine."""

    BOUND_TX = "bind_transmitter accepted"
    BOUND_RX = "bind_receiver accepted"
    BOUND_TRX = "bind_transceiver accepted"
    UNBIND = "unbind completed"
    CLOSE = "connection closed"


BOUND = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
CAN_TRANSMIT = frozenset({State.BOUND_TX, State.BOUND_TRX})  # ESME -> SMSC traffic
CAN_RECEIVE = frozenset({State.BOUND_RX, State.BOUND_TRX})  # SMSC -> ESME traffic
LIVE = frozenset({State.OPEN}) | BOUND

TRANSITIONS: dict[tuple[State, Transition], State] = {
    (State.OPEN, Transition.BOUND_TX): State.BOUND_TX,
    (State.OPEN, Transition.BOUND_RX): State.BOUND_RX,
    (State.OPEN, Transition.BOUND_TRX): State.BOUND_TRX,
    **{(s, Transition.UNBIND): State.UNBOUND for s in BOUND},
    **{(s, Transition.CLOSE): State.CLOSED for s in State},
}

# bind request command_id -> the transition it causes when accepted (§4.1).
BIND_TRANSITION: dict[int, Transition] = {
    c.BIND_TRANSMITTER: Transition.BOUND_TX,
    c.BIND_RECEIVER: Transition.BOUND_RX,
    c.BIND_TRANSCEIVER: Transition.BOUND_TRX,
}

# §2.3 (Table 2-1): requests a peer may send us, per our role, and the states in
# which they are legal. A request outside its states is answered ESME_RINVBNDSTS.
INBOUND_REQUESTS: dict[Role, dict[int, frozenset[State]]] = {
    Role.SERVER: {
        c.BIND_TRANSMITTER: frozenset({State.OPEN}),
        c.BIND_RECEIVER: frozenset({State.OPEN}),
        c.BIND_TRANSCEIVER: frozenset({State.OPEN}),
        c.SUBMIT_SM: CAN_TRANSMIT,
        c.DATA_SM: CAN_TRANSMIT,
        c.QUERY_SM: CAN_TRANSMIT,
        c.CANCEL_SM: CAN_TRANSMIT,
        c.ENQUIRE_LINK: LIVE,
        c.UNBIND: BOUND,
    },
    Role.CLIENT: {
        c.OUTBIND: frozenset({State.OPEN}),
        c.DELIVER_SM: CAN_RECEIVE,
        c.DATA_SM: CAN_RECEIVE,
        c.ENQUIRE_LINK: LIVE,
        c.UNBIND: BOUND,
    },
}

# Requests we may send, per role, and the states in which the API allows them.
OUTBOUND_REQUESTS: dict[Role, dict[int, frozenset[State]]] = {
    Role.SERVER: {
        c.DELIVER_SM: CAN_RECEIVE,
        c.DATA_SM: CAN_RECEIVE,
        c.OUTBIND: frozenset({State.OPEN}),
        c.ENQUIRE_LINK: LIVE,
        c.UNBIND: BOUND,
    },
    Role.CLIENT: {
        c.BIND_TRANSMITTER: frozenset({State.OPEN}),
        c.BIND_RECEIVER: frozenset({State.OPEN}),
        c.BIND_TRANSCEIVER: frozenset({State.OPEN}),
        c.SUBMIT_SM: CAN_TRANSMIT,
        c.DATA_SM: CAN_TRANSMIT,
        c.QUERY_SM: CAN_TRANSMIT,
        c.CANCEL_SM: CAN_TRANSMIT,
        c.ENQUIRE_LINK: LIVE,
        c.UNBIND: BOUND,
    },
}


def transition(state: State, event: Transition) -> State:
    """The state after `event` in `state`; a local error if the table forbids it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalSmppError(f"illegal event {event.name!r} in state {state.name}") from None
