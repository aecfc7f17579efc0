"""Events the transaction layer hands to the TU (frozen, slotted, no logic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .message import SipRequest, SipResponse

Address = tuple[str, int]


class TransactionKey(NamedTuple):
    """Identifies a transaction (RFC 3261 §17.1.3 client, §17.2.3 server).

    ``role`` is "client" or "server"; ``sent_by`` is empty for client keys.
    ``method`` is the CSeq method, with ACK folded into INVITE for server keys.
    """

    role: str
    branch: str
    method: str
    sent_by: str = ""


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission) created a server transaction."""

    request: SipRequest
    source: Address
    key: TransactionKey


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL; ``invite_key`` is the INVITE server transaction it matches, or None.

    The TU answers the CANCEL (200, or 481 when ``invite_key`` is None) through
    ``key`` and the INVITE with 487 (RFC 3261 §9.2).
    """

    request: SipRequest
    source: Address
    key: TransactionKey
    invite_key: TransactionKey | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (end to end, RFC 3261 §13.3.1.4) for the dialog layer.

    ``key`` is the accepted INVITE server transaction it stopped, if any.
    """

    request: SipRequest
    source: Address
    key: TransactionKey | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response that a client transaction passes up (not a retransmission)."""

    response: SipResponse
    key: TransactionKey


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matched no client transaction (e.g. a late 2xx retransmission)."""

    response: SipResponse
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (no final response), H (no ACK) or L (2xx never ACKed) fired."""

    key: TransactionKey
    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    """The adapter reported that sending for this transaction failed (§17.1.4)."""

    key: TransactionKey


Event = (RequestReceived | CancelReceived | AckReceived | ResponseReceived | StrayResponse
         | TransactionTimeout | TransportError)
