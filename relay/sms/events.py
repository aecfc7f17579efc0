"""Events a sans-IO SMPP session hands to its application (frozen, slotted, no logic)."""

from __future__ import annotations

from dataclasses import dataclass

from relay.sms._state import State
from relay.sms.pdu import CancelSm, DataSm, DeliverSm, Pdu, QuerySm, SmppError, SubmitSm


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all session events."""


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """A bind succeeded: the peer bound to us (server role) or we to it (client role)."""

    system_id: str
    state: State


@dataclass(frozen=True, slots=True)
class BindRefused(Event):
    """A bind failed with `command_status` (the peer's bad credentials, or ours)."""

    system_id: str
    command_status: int


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A submit_sm, deliver_sm or data_sm from the peer, awaiting `session.respond`.

    The convenience fields copy the PDU; `short_message` is the message_payload TLV
    when short_message is empty (§5.3.2.32). `pdu` keeps every field and TLV.
    """

    sequence: int
    command_id: int
    source_addr: str
    source_addr_ton: int
    source_addr_npi: int
    destination_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    esm_class: int
    registered_delivery: int
    data_coding: int
    short_message: bytes
    pdu: SubmitSm | DeliverSm | DataSm


@dataclass(frozen=True, slots=True)
class MessageRejected(Event):
    """The session itself refused a message (throttled, queue full, wrong state)."""

    pdu: Pdu
    command_status: int


@dataclass(frozen=True, slots=True)
class QueryRequested(Event):
    """A query_sm (§4.8) awaiting `session.answer_query` (server with a message store)."""

    pdu: QuerySm


@dataclass(frozen=True, slots=True)
class CancelRequested(Event):
    """A cancel_sm (§4.9) awaiting `session.answer_cancel` (server with a message store)."""

    pdu: CancelSm


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """The peer answered one of our requests (`response` may be a generic_nack)."""

    request: Pdu
    response: Pdu


@dataclass(frozen=True, slots=True)
class ResponseTimeout(Event):
    """No answer to `request` within the response timeout; it left the window."""

    request: Pdu


@dataclass(frozen=True, slots=True)
class OutbindReceived(Event):
    """The SMSC asks us to bind_receiver (§4.1.7); the client decides."""

    system_id: str
    password: str


@dataclass(frozen=True, slots=True)
class Unbound(Event):
    """The session unbound; `by_peer` tells who asked. The link closes next."""

    by_peer: bool


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """The peer sent a PDU we refused; the session already answered it."""

    error: SmppError


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The session is CLOSED; `pending` are our requests that will never be answered."""

    reason: str
    pending: tuple[Pdu, ...]
