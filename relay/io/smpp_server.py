"""asyncio adapter for SMPP: one sans-IO session per TCP connection, one timer each.

`SmppServer` is the SMSC side gateways bind to; `SmppConnection` is the transport glue
shared with `relay.io.smpp_client`. The adapter only feeds bytes, drains events,
writes, and re-arms the timer; all protocol decisions live in relay.sms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from dialplan.numbers import mask
from relay.sms import constants as c
from relay.sms._state import CAN_RECEIVE, Role
from relay.sms.concat import ConcatError, split_text
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
from relay.sms.ids import MessageIds
from relay.sms.message import MessageAssembler, SmsMessage
from relay.sms.pdu import CancelSm, DeliverSm, LocalSmppError, Pdu, QuerySm
from relay.sms.receipt import (
    Receipt,
    build_receipt_text,
    is_receipt,
    parse_receipt_text,
    receipt_deliver_sm,
)
from relay.sms.session import SessionConfig, SmppSession, accounts_authenticator

log = logging.getLogger("relay.sms.smpp")

__all__ = [
    "NoRouteError",
    "OnCancel",
    "OnLost",
    "OnMessage",
    "OnQuery",
    "QueryAnswer",
    "Receipt",
    "SessionRef",
    "SmppConnection",
    "SmppServer",
    "build_receipt_text",
    "is_receipt",
    "parse_receipt_text",
    "receipt_deliver_sm",
]


class NoRouteError(LookupError):
    """No bound receiver or transceiver session for that gateway."""


@dataclass(frozen=True, slots=True)
class SessionRef:
    """What the application learns about the link a message came on."""

    conn_id: int
    system_id: str
    peer: str


OnMessage = Callable[[SessionRef, SmsMessage], Awaitable[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """What query_sm_resp says (§4.8.2); command_status ESME_RQUERYFAIL if unknown."""

    command_status: int
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


OnQuery = Callable[[SessionRef, QuerySm], Awaitable[QueryAnswer]]
# cancel_sm: the hook gets the gateway and the PDU, answers a command_status.
OnCancel = Callable[[SessionRef, CancelSm], Awaitable[int]]
# A message was handled (forwarded: ESME_ROK, message_id) but its answer could not be
# sent (the link went down meanwhile): the gateway will resend it.
OnLost = Callable[[SessionRef, SmsMessage, str], None]


async def reject_all(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
    """Default hook until the router is wired: refuse with ESME_RX_R_APPN (§5.1.3)."""
    return c.ESME_RX_R_APPN, ""


class ConnectionOwner(Protocol):
    """What an SmppConnection reports to (the server or the client)."""

    def connection_bound(self, conn: SmppConnection, event: Bound) -> None: ...
    def bind_refused(self, conn: SmppConnection, event: BindRefused) -> None: ...
    def message_received(self, conn: SmppConnection, event: MessageReceived) -> None: ...
    def connection_gone(self, conn: SmppConnection) -> None: ...
    def query_received(self, conn: SmppConnection, event: QueryRequested) -> None: ...
    def cancel_received(self, conn: SmppConnection, event: CancelRequested) -> None: ...


_conn_ids = itertools.count(1)


class SmppConnection(asyncio.Protocol):
    """Drives one SmppSession over one TCP connection."""

    def __init__(self, owner: ConnectionOwner, session: SmppSession) -> None:
        self.owner = owner
        self.session = session
        self.conn_id = next(_conn_ids)
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._flush_pending = False
        self._waiters: dict[int, asyncio.Future[Pdu]] = {}
        self._window = asyncio.Event()
        self._window.set()
        self.closed = asyncio.Event()
        self.protocol_errors = 0
        self.rejected = 0
        self.unbound_by_us = False  # our unbind was answered (graceful stop)
        self._ref: SessionRef | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The link's event loop (cheaper than asyncio.get_running_loop(): no getpid())."""
        return self._loop

    @property
    def ref(self) -> SessionRef:
        """The application's handle on this link."""
        ref = self._ref
        if ref is None or ref.system_id != self.session.peer_system_id or ref.peer != self.peer:
            ref = self._ref = SessionRef(self.conn_id, self.session.peer_system_id, self.peer)
        return ref

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and arm the session's first timer."""
        # uvloop's TCPTransport implements the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername")
        self.peer = f"{addr[0]}:{addr[1]}" if addr else "?"
        self.flush()

    def data_received(self, data: bytes) -> None:
        """Feed the session, act on its events, write its answers."""
        self._dispatch(self.session.receive_data(data, self._loop.time()))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Close the session and fail every request still waiting for an answer."""
        self._dispatch(self.session.connection_lost())
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("SMPP connection lost"))
        self._waiters.clear()
        self._window.set()
        self.closed.set()
        self.owner.connection_gone(self)

    # ---- driving the session ----
    def flush(self) -> None:
        """Write pending bytes soon: once per event-loop pass however many PDUs queued.

        Coalescing turns a burst (a window of submit_sm_resp and deliver_sm answered by
        several message tasks) into one write syscall and one timer check, not one per PDU.
        """
        if self.transport is None or self._flush_pending:
            return
        self._flush_pending = True
        self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        """Write pending bytes, close the link if the session ended, re-arm the timer."""
        self._flush_pending = False
        if self.transport is None:
            return
        out = self.session.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)
        if self.session.closed:
            self.transport.close()  # closes after the buffered bytes are written
        self._rearm()

    def _rearm(self) -> None:
        when = self.session.get_timer()
        if self._timer is not None:
            # Keep an armed timer that is due no later than needed: the idle deadline
            # moves with every PDU, and an early wake-up only re-arms (no handle per PDU).
            if when is None or self._timer.when() <= when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(self.session.handle_timer(self._loop.time()))
        self.flush()

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, MessageReceived):
                self.owner.message_received(self, ev)
            elif isinstance(ev, ResponseReceived):
                self._resolve(ev.request.sequence, ev.response)
            elif isinstance(ev, ResponseTimeout):
                self._fail(ev.request.sequence, TimeoutError("SMPP response timeout"))
            elif isinstance(ev, Bound):
                log.info("smpp bound system_id=%s state=%s peer=%s",
                         ev.system_id, ev.state.name, self.peer)
                self.owner.connection_bound(self, ev)
            elif isinstance(ev, BindRefused):
                log.warning("smpp bind refused system_id=%s status=0x%02X peer=%s",
                            ev.system_id, ev.command_status, self.peer)
                self.owner.bind_refused(self, ev)
            elif isinstance(ev, ProtocolError):
                self.protocol_errors += 1
                log.debug("smpp protocol error peer=%s: %s", self.peer, ev.error)
            elif isinstance(ev, MessageRejected):
                self.rejected += 1
            elif isinstance(ev, Unbound | ConnectionClosed):
                if isinstance(ev, Unbound) and not ev.by_peer:
                    self.unbound_by_us = True
                log.info("smpp link ended system_id=%s peer=%s: %s",
                         self.session.peer_system_id, self.peer, ev)
                if isinstance(ev, ConnectionClosed):
                    for req in ev.pending:
                        self._fail(req.sequence, ConnectionError(ev.reason))
            elif isinstance(ev, QueryRequested):
                self.owner.query_received(self, ev)
            elif isinstance(ev, CancelRequested):
                self.owner.cancel_received(self, ev)
            elif isinstance(ev, OutbindReceived):
                log.info("smpp outbind from %s ignored", self.peer)

    def _resolve(self, seq: int, response: Pdu) -> None:
        fut = self._waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_result(response)
        self._window.set()

    def _fail(self, seq: int, exc: Exception) -> None:
        fut = self._waiters.pop(seq, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self._window.set()

    # ---- application API ----
    async def request(self, pdu: Pdu) -> Pdu:
        """Send a request, waiting for window room; return the peer's response."""
        while self.session.window_free == 0 and not self.session.closed:
            self._window.clear()
            await self._window.wait()
        if self.session.closed or self.transport is None:
            raise ConnectionError("SMPP session is not open")
        sent = self.session.send_request(pdu, self._loop.time())
        fut: asyncio.Future[Pdu] = self._loop.create_future()
        self._waiters[sent.sequence] = fut
        self.flush()
        return await fut

    def respond(self, event: MessageReceived, status: int, message_id: str = "") -> None:
        """Answer a peer message (late answers after a disconnect are dropped)."""
        try:
            self.session.respond(event, status, message_id)
        except LocalSmppError:
            return
        self.flush()

    def close(self) -> None:
        """Close the TCP connection now."""
        if self.transport is not None:
            self.transport.close()

    async def unbind(self, timeout: float) -> bool:
        """Send unbind (§4.2) and wait up to `timeout` for unbind_resp; True if it came.
        The session goes UNBOUND on the answer and the link closes. unbind takes no
        window slot, so it goes out even while deliver_sm wait for answers."""
        if not self.session.bound or self.transport is None:
            return False
        try:
            self.session.unbind(self._loop.time())
        except LocalSmppError:
            return False
        self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.unbound_by_us


class SmppServer:
    """The SMSC side: gateways bind with a system_id and password from `accounts`.

    Messages reach `on_message` once per complete (reassembled) message: parts before
    the last are answered ESME_ROK as they arrive, the part that completes the set
    is answered with the hook's (command_status, message_id).
    """

    def __init__(
        self,
        host: str,
        port: int,
        accounts: Mapping[str, str],
        *,
        on_message: OnMessage | None = None,
        on_query: OnQuery | None = None,
        on_cancel: OnCancel | None = None,
        on_lost: OnLost | None = None,
        config: SessionConfig | None = None,
        reassembly_timeout: float = 60.0,
        ids: MessageIds | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.accounts = accounts
        self.on_message: OnMessage = on_message or reject_all
        self.on_query = on_query
        self.on_cancel = on_cancel
        self.on_lost = on_lost
        self.config = config or SessionConfig()
        if on_query is not None or on_cancel is not None:
            self.config = dataclasses.replace(self.config, message_store=True)
        self.connections: set[SmppConnection] = set()
        self._receivers: dict[str, list[SmppConnection]] = {}
        self._rr: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._assembler = MessageAssembler(reassembly_timeout)
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = ids or MessageIds()
        self._refs = itertools.count(1)
        self.messages_in = 0
        self.draining = False  # stopping: new messages are left unanswered (resent later)

    async def start(self) -> None:
        """Listen on host:port (port 0 picks a free one, readable as `self.port`)."""
        loop = asyncio.get_running_loop()
        auth = accounts_authenticator(self.accounts)

        def factory() -> SmppConnection:
            conn = SmppConnection(self, SmppSession(Role.SERVER, loop.time(), self.config, auth))
            self.connections.add(conn)
            return conn

        self._server = await loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("smpp server listening on %s:%d", self.host, self.port)

    async def stop(self, drain: float = 5.0, unbind: float = 3.0) -> None:
        """Stop gracefully: stop listening; leave new messages unanswered (the gateway
        resends them on its next link); let messages already being handled finish and
        be answered (up to `drain` seconds); unbind every bound link and wait for its
        unbind_resp (up to `unbind` seconds); then close whatever is left."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _done, late = await asyncio.wait(list(self._tasks), timeout=drain)
            for task in late:
                task.cancel()  # left unanswered: the gateway resends, the retry book dedups
        links = [x for x in self.connections if x.session.bound]
        if links:
            answered = await asyncio.gather(*(x.unbind(unbind) for x in links))
            log.info("smpp unbound %d of %d gateway link(s)", sum(answered), len(links))
        for conn in list(self.connections):
            conn.close()
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._expiry is not None:
            self._expiry.cancel()

    # ---- deliver_sm towards gateways ----
    def bound_receivers(self, system_id: str) -> list[SmppConnection]:
        """Live RX/TRX connections of a gateway."""
        return [x for x in self._receivers.get(system_id, []) if x.session.state in CAN_RECEIVE]

    async def deliver(self, system_id: str, pdu: DeliverSm) -> Pdu:
        """Send one deliver_sm to a bound RX/TRX link of `system_id` (round-robin)."""
        conns = self.bound_receivers(system_id)
        if not conns:
            raise NoRouteError(f"no receiver bound for {system_id!r}")
        start = self._rr.get(system_id, 0)
        self._rr[system_id] = start + 1
        n = len(conns)
        conn = conns[start % n]
        if n > 1 and conn.session.window_free == 0:
            # Round-robin, skipping links whose window is full while another has room.
            order = [conns[(start + k) % n] for k in range(n)]
            conn = next((x for x in order if x.session.window_free > 0), order[0])
        return await conn.request(pdu)

    async def deliver_text(
        self, system_id: str, source_addr: str, destination_addr: str, text: str, **fields: Any
    ) -> list[Pdu]:
        """Encode, split if long (8-bit-ref UDH) and deliver `text`; one response per part."""
        data_coding, parts = split_text(text, next(self._refs) & 0xFF)
        esm = fields.pop("esm_class", 0) | (c.ESM_CLASS_UDHI if len(parts) > 1 else 0)
        out = []
        for body in parts:
            pdu = DeliverSm(source_addr=source_addr, destination_addr=destination_addr,
                            data_coding=data_coding, esm_class=esm, short_message=body, **fields)
            out.append(await self.deliver(system_id, pdu))
        return out

    # ---- ConnectionOwner ----
    def connection_bound(self, conn: SmppConnection, event: Bound) -> None:
        """Register a bound link; RX/TRX links become delivery targets."""
        if event.state in CAN_RECEIVE:
            self._receivers.setdefault(event.system_id, []).append(conn)

    def bind_refused(self, conn: SmppConnection, event: BindRefused) -> None:
        """Nothing to do: the session answered; the gateway may retry."""

    def connection_gone(self, conn: SmppConnection) -> None:
        """Forget a closed link."""
        self.connections.discard(conn)
        for lst in self._receivers.values():
            if conn in lst:
                lst.remove(conn)

    def message_received(self, conn: SmppConnection, event: MessageReceived) -> None:
        """Answer parts as they come; hand a complete message to the hook once.

        Every part gets its own id (relay.sms.ids) in its submit_sm_resp; the message
        lists them (`SmsMessage.part_ids`) so each leads to the record and each gets
        the receipt it asked for.
        """
        if self.draining:
            return  # unanswered: the gateway resends it to whichever node takes over
        loop = conn.loop
        part_id = self._ids()
        try:
            msg = self._assembler.add(conn.session.peer_system_id, event, loop.time(), part_id)
        except ConcatError as exc:
            log.debug("smpp bad concatenation from %s: %s", conn.peer, exc)
            conn.respond(event, c.ESME_RINVESMCLASS)
            return
        if msg is None:
            self._arm_expiry()  # a part is waiting for the rest of its set
            conn.respond(event, c.ESME_ROK, part_id)
            return
        self.messages_in += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("smpp message %s -> %s parts=%d from %s",
                      mask(msg.source_addr), mask(msg.destination_addr),
                      len(msg.parts), conn.session.peer_system_id)
        if self._expiry is not None:
            self._arm_expiry()  # this message may have completed the last waiting set
        task = loop.create_task(self._answer(conn, event, msg, part_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: SmppConnection, event: MessageReceived, msg: SmsMessage,
                      part_id: str) -> None:
        try:
            status, message_id = await self.on_message(conn.ref, msg)
        except Exception:
            log.exception("smpp on_message hook failed")
            status, message_id = c.ESME_RSYSERR, ""
        if status == c.ESME_ROK and (len(msg.parts) > 1 or not message_id):
            # The part that completed the set is answered with its own id, like the others.
            message_id = part_id
        if conn.session.closed and status == c.ESME_ROK and self.on_lost is not None:
            self.on_lost(conn.ref, msg, message_id)
        conn.respond(event, status, message_id)

    def pending_part(self, part_id: str, system_id: str) -> bool:
        """True if `part_id` is a part `system_id` sent of a message still waiting for
        its other parts."""
        return self._assembler.waiting(part_id, system_id)

    def cancel_pending(self, part_id: str) -> int:
        """Drop the incomplete message holding `part_id` (cancel_sm); parts dropped."""
        parts = self._assembler.cancel(part_id)
        self._arm_expiry()
        return len(parts)

    def query_received(self, conn: SmppConnection, event: QueryRequested) -> None:
        """query_sm: answered from the application's message records."""
        self._spawn(conn, self._query(conn, event))

    def cancel_received(self, conn: SmppConnection, event: CancelRequested) -> None:
        """cancel_sm: the application cancels what is not forwarded yet."""
        self._spawn(conn, self._cancel(conn, event))

    def _spawn(self, conn: SmppConnection, coro: Coroutine[Any, Any, None]) -> None:
        task = conn.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _query(self, conn: SmppConnection, event: QueryRequested) -> None:
        answer = QueryAnswer(c.ESME_RQUERYFAIL)
        if self.on_query is not None:
            try:
                answer = await self.on_query(conn.ref, event.pdu)
            except Exception:
                log.exception("smpp query hook failed")
        conn.session.answer_query(event.pdu, answer.command_status,
                                  final_date=answer.final_date,
                                  message_state=answer.message_state,
                                  error_code=answer.error_code)
        conn.flush()

    async def _cancel(self, conn: SmppConnection, event: CancelRequested) -> None:
        status = c.ESME_RCANCELFAIL
        if self.on_cancel is not None:
            try:
                status = await self.on_cancel(conn.ref, event.pdu)
            except Exception:
                log.exception("smpp cancel hook failed")
        conn.session.answer_cancel(event.pdu, status)
        conn.flush()

    def _arm_expiry(self) -> None:
        when = self._assembler.next_deadline()
        if self._expiry is not None:
            if when is not None and self._expiry.when() <= when:
                return  # keep it: an early wake-up only re-arms (no timer per part)
            self._expiry.cancel()
            self._expiry = None
        if when is not None:
            self._expiry = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        for parts in self._assembler.expire(asyncio.get_running_loop().time()):
            log.info("smpp dropped incomplete message: %d part(s) of %s", len(parts),
                     mask(parts[0].source_addr) if parts else "?")
        self._arm_expiry()
