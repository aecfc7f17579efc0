"""A sans-IO SMPP 3.4 session for both ends of the link (SMSC server or ESME client).

Feed it bytes with `receive_data(data, now)`, take events; call `bind`, `submit`,
`deliver`, `respond`, `unbind`; take bytes with `data_to_send()`; arm one timer at
`get_timer()` and call `handle_timer(now)` when it fires. It never reads a clock or
touches a socket (STYLE point 1); the asyncio adapters in relay/io do that.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.sms import constants as c
from relay.sms._state import (
    BIND_TRANSITION,
    BOUND,
    INBOUND_REQUESTS,
    OUTBOUND_REQUESTS,
    Role,
    State,
    Transition,
    transition,
)
from relay.sms.events import (
    BindRefused,
    Bound,
    CancelRequested,
    ConnectionClosed,
    Event,
    MessageReceived,
    MessageRejected,
    OutbindReceived,
    ProtocolError,
    QueryRequested,
    ResponseReceived,
    ResponseTimeout,
    Unbound,
)
from relay.sms.pdu import (
    MAX_PDU_SIZE,
    MAX_SEQUENCE,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    LocalSmppError,
    Pdu,
    PduFramer,
    QuerySm,
    QuerySmResp,
    SmppError,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    response_class,
)

Authenticator = Callable[[str, str], int]


def next_sequence(seq: int) -> int:
    """The sequence number after `seq`: 1..0x7FFFFFFF, wrapping to 1 (SMPP 3.4 §5.1.4)."""
    return 1 if seq >= MAX_SEQUENCE else seq + 1


def accounts_authenticator(accounts: Mapping[str, str]) -> Authenticator:
    """An authenticator over {system_id: password}: ESME_RINVSYSID / ESME_RINVPASWD."""

    def check(system_id: str, password: str) -> int:
        expected = accounts.get(system_id)
        if expected is None:
            return c.ESME_RINVSYSID
        # Constant-time comparison: the answer must not leak how much of it matched.
        ok = hmac.compare_digest(expected.encode(), password.encode())
        return c.ESME_ROK if ok else c.ESME_RINVPASWD

    return check


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tunables of one session (times in seconds)."""

    system_id: str = "relay"  # ours, sent in bind_*_resp
    window: int = 10  # our outstanding requests (§2.6 windowing)
    response_timeout: float = 30.0  # §7.2 response_timer
    enquire_link_interval: float = 30.0  # §7.2 enquire_link_timer: idle before we probe
    bind_timeout: float = 30.0  # §7.2 session_init_timer: OPEN without a bind
    max_bind_failures: int = 3  # refused binds on one connection before we close it
    throttle_rate: float | None = None  # inbound messages per second per bind
    throttle_burst: int = 10
    max_unanswered: int = 100  # inbound messages the app has not answered yet
    max_pdu_size: int = MAX_PDU_SIZE
    # Server role: hand query_sm / cancel_sm to the application (QueryRequested,
    # CancelRequested) instead of failing them, when it keeps message records.
    message_store: bool = False


@dataclass(slots=True)
class _Outstanding:
    pdu: Pdu
    deadline: float


_MESSAGE_IDS = (c.SUBMIT_SM, c.DELIVER_SM, c.DATA_SM)
# enquire_link and unbind keep the link healthy, so they never wait for window room.
_CONTROL = frozenset({c.ENQUIRE_LINK, c.UNBIND})


class SmppSession:
    """One SMPP link's protocol state, for `role` SERVER (we are the SMSC) or CLIENT."""

    def __init__(
        self,
        role: Role,
        now: float,
        config: SessionConfig | None = None,
        authenticate: Authenticator | None = None,
    ) -> None:
        self.role = role
        self.config = config or SessionConfig()
        self.state = State.OPEN
        self.peer_system_id = ""
        self._authenticate = authenticate
        self._framer = PduFramer(self.config.max_pdu_size)
        self._out = bytearray()
        self._seq = 0
        self._outstanding: dict[int, _Outstanding] = {}
        self._in_window = 0  # outstanding requests that hold a window slot
        self._unanswered: dict[int, int] = {}  # sequence -> command_id of peer messages
        self._opened_at = now
        self._last_rx = now
        self._tokens = float(self.config.throttle_burst)
        self._tokens_at = now
        self._bind_failures = 0
        self._handlers: dict[int, Callable[[Any, float], list[Event]]] = {
            c.BIND_TRANSMITTER: self._on_bind,
            c.BIND_RECEIVER: self._on_bind,
            c.BIND_TRANSCEIVER: self._on_bind,
            c.SUBMIT_SM: self._on_message,
            c.DELIVER_SM: self._on_message,
            c.DATA_SM: self._on_message,
            c.QUERY_SM: self._on_query,
            c.CANCEL_SM: self._on_cancel,
            c.ENQUIRE_LINK: self._on_enquire_link,
            c.UNBIND: self._on_unbind,
            c.OUTBIND: self._on_outbind,
        }

    # ---- properties ----
    @property
    def bound(self) -> bool:
        """True in BOUND_TX, BOUND_RX or BOUND_TRX."""
        return self.state in BOUND

    @property
    def closed(self) -> bool:
        """True once the link should be (or is) closed: UNBOUND or CLOSED."""
        return self.state in (State.UNBOUND, State.CLOSED)

    @property
    def window_free(self) -> int:
        """How many more requests fit in the window now."""
        return max(0, self.config.window - self._in_window)

    @property
    def unanswered(self) -> int:
        """Peer messages still waiting for `respond`."""
        return len(self._unanswered)

    # ---- outbound ----
    def data_to_send(self) -> bytes:
        """Bytes to write to the transport, emptied by this call."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def send_request(self, pdu: Pdu, now: float) -> Pdu:
        """Queue a request with a fresh sequence number; returns the PDU as sent.

        Raises LocalSmppError if the state forbids it or the window is full
        (enquire_link and unbind bypass the window: they keep the link healthy).
        """
        self._check_request(pdu.command_id, type(pdu).__name__)
        return self._queue_request(pdu.with_sequence(self._allocate_sequence()), now)

    def bind(self, now: float, system_id: str, password: str, mode: str = "trx",
             system_type: str = "") -> Pdu:
        """Client role: send bind_transmitter ("tx"), _receiver ("rx") or _transceiver."""
        cls = {"tx": BindTransmitter, "rx": BindReceiver, "trx": BindTransceiver}[mode]
        return self.send_request(
            cls(system_id=system_id, password=password, system_type=system_type), now
        )

    def submit(self, now: float, **fields: Any) -> Pdu:
        """Client role: send a submit_sm built from SubmitSm fields."""
        self._check_request(c.SUBMIT_SM, "SubmitSm")
        fields["sequence"] = self._allocate_sequence()  # built once, already numbered
        return self._queue_request(SubmitSm(**fields), now)

    def deliver(self, now: float, **fields: Any) -> Pdu:
        """Server role: send a deliver_sm built from DeliverSm fields."""
        self._check_request(c.DELIVER_SM, "DeliverSm")
        fields["sequence"] = self._allocate_sequence()
        return self._queue_request(DeliverSm(**fields), now)

    def unbind(self, now: float) -> Pdu:
        """Send unbind (§4.2.1); the session goes UNBOUND on the unbind_resp."""
        return self.send_request(Unbind(), now)

    def respond(self, event: MessageReceived, command_status: int, message_id: str = "") -> None:
        """Answer a MessageReceived, possibly long after it arrived (the app routes first)."""
        if self._unanswered.pop(event.sequence, None) is None:
            raise LocalSmppError(f"sequence {event.sequence} has no unanswered message")
        if self.state == State.CLOSED:
            return
        if event.command_id == c.DELIVER_SM:
            # §4.6.2: deliver_sm_resp message_id is unused and NULL.
            self._send(DeliverSmResp(sequence=event.sequence, command_status=command_status))
        elif event.command_id == c.DATA_SM:
            mid = message_id if command_status == c.ESME_ROK else ""
            self._send(DataSmResp(sequence=event.sequence, command_status=command_status,
                                  message_id=mid))
        else:
            mid = message_id if command_status == c.ESME_ROK else ""
            self._send(SubmitSmResp(sequence=event.sequence, command_status=command_status,
                                    message_id=mid))

    def connection_lost(self, reason: str = "connection lost") -> list[Event]:
        """The transport closed: go CLOSED and report requests that will not be answered."""
        if self.state == State.CLOSED:
            return []
        return self._close(reason)

    # ---- timers ----
    def get_timer(self) -> float | None:
        """When `handle_timer` must next run, or None if nothing is pending."""
        if self.state == State.CLOSED:
            return None
        times = [o.deadline for o in self._outstanding.values()]
        if self.state == State.OPEN and self.role is Role.SERVER:
            times.append(self._opened_at + self.config.bind_timeout)
        if self.bound and not self._enquire_outstanding():
            times.append(self._last_rx + self.config.enquire_link_interval)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Event]:
        """Expire requests, probe an idle link, and drop a link that never bound."""
        events: list[Event] = []
        if self.state == State.CLOSED:
            return events
        for seq in [s for s, o in self._outstanding.items() if o.deadline <= now]:
            req = self._take_outstanding(seq)
            if req.command_id in (c.ENQUIRE_LINK, c.UNBIND) or req.command_id in BIND_TRANSITION:
                # §7.2: no answer to a link probe, a bind or an unbind: the link is dead.
                if req.command_id in BIND_TRANSITION:
                    events.append(BindRefused(getattr(req, "system_id", ""), c.ESME_RSYSERR))
                events.extend(self._close(f"no {type(req).__name__} response"))
                return events
            events.append(ResponseTimeout(req))
        if (self.state == State.OPEN and self.role is Role.SERVER
                and now >= self._opened_at + self.config.bind_timeout):
            return events + self._close("no bind within session_init_timer")
        if (self.bound and not self._enquire_outstanding()
                and now >= self._last_rx + self.config.enquire_link_interval):
            self.send_request(EnquireLink(), now)
        return events

    # ---- inbound ----
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the peer; return the events they cause."""
        events: list[Event] = []
        if self.state == State.CLOSED:
            return events
        for item in self._framer.feed(data):
            self._last_rx = now
            if isinstance(item, SmppError):
                events.extend(self._on_bad_pdu(item))
                if item.fatal:
                    events.extend(self._close(item.detail))
                    break
            elif item.command_id & c.RESPONSE_BIT:
                events.extend(self._on_response(item, now))
            else:
                events.extend(self._on_request(item, now))
            if self.state == State.CLOSED:
                break
        return events

    def _on_request(self, pdu: Pdu, now: float) -> list[Event]:
        allowed = INBOUND_REQUESTS[self.role].get(pdu.command_id)
        if allowed is None:
            # A request this role never accepts (e.g. submit_sm sent to an ESME).
            return self._refuse(pdu, c.ESME_RINVCMDID)
        if self.state not in allowed:
            if pdu.command_id in BIND_TRANSITION and self.bound:
                return self._refuse(pdu, c.ESME_RALYBND)  # §4.1: already bound
            return self._refuse(pdu, c.ESME_RINVBNDSTS)
        return self._handlers[pdu.command_id](pdu, now)

    def _refuse(self, pdu: Pdu, status: int) -> list[Event]:
        resp = response_class(pdu.command_id)
        if resp is None or pdu.command_id == c.OUTBIND:
            self._send(GenericNack(sequence=pdu.sequence, command_status=status))
        else:
            self._send(resp(sequence=pdu.sequence, command_status=status))
        return [MessageRejected(pdu, status)]

    def _on_bad_pdu(self, err: SmppError) -> list[Event]:
        # §4.3: a bad command_length or command_id gets generic_nack. A known request
        # whose body is refused gets its own *_resp with the specific status.
        cid = err.command_id
        resp = response_class(cid) if cid is not None else None
        if (resp is None or err.command_status in (c.ESME_RINVCMDLEN, c.ESME_RINVCMDID)
                or cid == c.OUTBIND):
            self._send(GenericNack(sequence=err.sequence, command_status=err.command_status))
        else:
            self._send(resp(sequence=err.sequence, command_status=err.command_status))
        return [ProtocolError(err)]

    def _on_bind(self, pdu: BindTransmitter, now: float) -> list[Event]:
        resp = response_class(pdu.command_id)
        assert resp is not None
        status = (self._authenticate(pdu.system_id, pdu.password)
                  if self._authenticate else c.ESME_RBINDFAIL)
        if status != c.ESME_ROK:
            self._send(resp(sequence=pdu.sequence, command_status=status,
                            system_id=self.config.system_id))
            self._bind_failures += 1
            events: list[Event] = [BindRefused(pdu.system_id, status)]
            if self._bind_failures >= self.config.max_bind_failures:
                # Stop password guessing on one connection (SMSCs commonly close here).
                events.extend(self._close("too many refused binds"))
            return events
        self.state = transition(self.state, BIND_TRANSITION[pdu.command_id])
        self.peer_system_id = pdu.system_id
        self._send(resp(sequence=pdu.sequence, system_id=self.config.system_id))
        return [Bound(pdu.system_id, self.state)]

    def _on_message(self, pdu: SubmitSm | DeliverSm | DataSm, now: float) -> list[Event]:
        if not self._take_token(now):
            return self._refuse(pdu, c.ESME_RTHROTTLED)  # §5.1.3: 0x58
        if len(self._unanswered) >= self.config.max_unanswered:
            return self._refuse(pdu, c.ESME_RMSGQFUL)
        if pdu.sequence in self._unanswered:
            # §5.1.4: a sequence must not repeat while outstanding (typically the peer
            # resending after its own timeout). A temporary error keeps answers 1:1.
            return self._refuse(pdu, c.ESME_RSYSERR)
        body = getattr(pdu, "short_message", b"")
        if not body:
            payload = pdu.tlv(c.TAG_MESSAGE_PAYLOAD)
            body = payload.value if payload is not None else b""
        self._unanswered[pdu.sequence] = pdu.command_id
        return [MessageReceived(
            sequence=pdu.sequence, command_id=pdu.command_id,
            source_addr=pdu.source_addr, source_addr_ton=pdu.source_addr_ton,
            source_addr_npi=pdu.source_addr_npi, destination_addr=pdu.destination_addr,
            dest_addr_ton=pdu.dest_addr_ton, dest_addr_npi=pdu.dest_addr_npi,
            esm_class=pdu.esm_class, registered_delivery=pdu.registered_delivery,
            data_coding=pdu.data_coding, short_message=body, pdu=pdu,
        )]

    def _take_token(self, now: float) -> bool:
        rate = self.config.throttle_rate
        if rate is None:
            return True
        burst = float(self.config.throttle_burst)
        elapsed = max(0.0, now - self._tokens_at)
        self._tokens = min(burst, self._tokens + elapsed * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _on_query(self, pdu: QuerySm, now: float) -> list[Event]:
        if self.config.message_store:
            return [QueryRequested(pdu)]
        # Without a message store there is nothing to answer a query from (§4.8.2).
        self._send(QuerySmResp(sequence=pdu.sequence, command_status=c.ESME_RQUERYFAIL))
        return [MessageRejected(pdu, c.ESME_RQUERYFAIL)]

    def _on_cancel(self, pdu: CancelSm, now: float) -> list[Event]:
        if self.config.message_store:
            return [CancelRequested(pdu)]
        self._send(CancelSmResp(sequence=pdu.sequence, command_status=c.ESME_RCANCELFAIL))
        return [MessageRejected(pdu, c.ESME_RCANCELFAIL)]

    def answer_query(self, request: QuerySm, command_status: int, *, final_date: str = "",
                     message_state: int = 0, error_code: int = 0) -> None:
        """Answer a QueryRequested (§4.8.2); the message_id is echoed."""
        if self.state == State.CLOSED:
            return
        ok = command_status == c.ESME_ROK
        self._send(QuerySmResp(sequence=request.sequence, command_status=command_status,
                               message_id=request.message_id if ok else "",
                               final_date=final_date if ok else "",
                               message_state=message_state if ok else 0,
                               error_code=error_code if ok else 0))

    def answer_cancel(self, request: CancelSm, command_status: int) -> None:
        """Answer a CancelRequested (§4.9.2)."""
        if self.state != State.CLOSED:
            self._send(CancelSmResp(sequence=request.sequence, command_status=command_status))

    def _on_enquire_link(self, pdu: Pdu, now: float) -> list[Event]:
        self._send(EnquireLinkResp(sequence=pdu.sequence))
        return []

    def _on_unbind(self, pdu: Pdu, now: float) -> list[Event]:
        self._send(UnbindResp(sequence=pdu.sequence))
        self.state = transition(self.state, Transition.UNBIND)
        return [Unbound(by_peer=True)]

    def _on_outbind(self, pdu: Any, now: float) -> list[Event]:
        return [OutbindReceived(pdu.system_id, pdu.password)]

    def _on_response(self, pdu: Pdu, now: float) -> list[Event]:
        pending = self._outstanding.get(pdu.sequence)
        if pending is None:
            return []  # late (timed out) or unsolicited: nothing waits for it
        req = pending.pdu
        expected = response_class(req.command_id)
        if not isinstance(pdu, GenericNack) and type(pdu) is not expected:
            return []  # same sequence, wrong response type: keep waiting
        self._take_outstanding(pdu.sequence)
        if req.command_id in BIND_TRANSITION:
            sid = getattr(req, "system_id", "")
            if pdu.command_status != c.ESME_ROK or self.state != State.OPEN:
                return [BindRefused(sid, pdu.command_status)]
            self.state = transition(self.state, BIND_TRANSITION[req.command_id])
            self.peer_system_id = getattr(pdu, "system_id", "")
            return [Bound(sid, self.state)]
        if req.command_id == c.UNBIND:
            if self.bound:
                self.state = transition(self.state, Transition.UNBIND)
            return [Unbound(by_peer=False)]
        if req.command_id == c.ENQUIRE_LINK:
            return []
        return [ResponseReceived(req, pdu)]

    # ---- helpers ----
    def _check_request(self, command_id: int, name: str) -> None:
        allowed = OUTBOUND_REQUESTS[self.role].get(command_id)
        if allowed is None or self.state not in allowed:
            raise LocalSmppError(
                f"cannot send {name} as {self.role.name} in state {self.state.name}"
            )
        if command_id not in _CONTROL and self._in_window >= self.config.window:
            raise LocalSmppError(f"window full ({self.config.window} outstanding)")

    def _queue_request(self, pdu: Pdu, now: float) -> Pdu:
        self._out += bytes(pdu)
        self._outstanding[pdu.sequence] = _Outstanding(pdu, now + self.config.response_timeout)
        if pdu.command_id not in _CONTROL:
            self._in_window += 1
        return pdu

    def _take_outstanding(self, seq: int) -> Pdu:
        pdu = self._outstanding.pop(seq).pdu
        if pdu.command_id not in _CONTROL:
            self._in_window -= 1
        return pdu

    def _send(self, pdu: Pdu) -> None:
        self._out += bytes(pdu)

    def _allocate_sequence(self) -> int:
        seq = next_sequence(self._seq)
        while seq in self._outstanding:  # never reuse one still in flight
            seq = next_sequence(seq)
        self._seq = seq
        return seq

    def _enquire_outstanding(self) -> bool:
        return any(o.pdu.command_id == c.ENQUIRE_LINK for o in self._outstanding.values())

    def _close(self, reason: str) -> list[Event]:
        pending = tuple(o.pdu for o in self._outstanding.values())
        self._outstanding.clear()
        self._in_window = 0
        self.state = transition(self.state, Transition.CLOSE)
        return [ConnectionClosed(reason, pending)]


__all__ = [
    "Role",
    "SessionConfig",
    "SmppSession",
    "State",
    "accounts_authenticator",
    "next_sequence",
]
