"""asyncio SMPP client: bind as transceiver to an upstream SMSC and stay bound.

Reconnects with capped exponential backoff; incoming deliver_sm are reassembled and
handed to the same kind of `on_message` hook the server uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from dialplan.numbers import mask
from relay.io.smpp_server import OnMessage, SmppConnection, reject_all
from relay.sms import constants as c
from relay.sms._state import Role
from relay.sms.concat import ConcatError, split_text
from relay.sms.events import BindRefused, Bound, MessageReceived
from relay.sms.message import MessageAssembler, SmsMessage
from relay.sms.pdu import Pdu, SubmitSm
from relay.sms.session import SessionConfig, SmppSession

log = logging.getLogger("relay.sms.smpp")


class BindError(ConnectionError):
    """The SMSC refused our bind; `command_status` says why."""

    def __init__(self, command_status: int) -> None:
        super().__init__(f"bind refused: command_status=0x{command_status:08X}")
        self.command_status = command_status


class SmppClient:
    """An ESME link to an upstream SMSC, bound as transceiver (§4.1.5)."""

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        system_type: str = "",
        on_message: OnMessage | None = None,
        config: SessionConfig | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        reassembly_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.system_id = system_id
        self.password = password
        self.system_type = system_type
        self.on_message: OnMessage = on_message or reject_all
        self.config = config or SessionConfig(enquire_link_interval=30.0)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connects = 0  # successful binds, for tests and metrics
        self.last_bind_error: int | None = None
        self._conn: SmppConnection | None = None
        self._bound = asyncio.Event()
        self._bind_result: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._assembler = MessageAssembler(reassembly_timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self._refs = itertools.count(1)
        self._stopping = False

    @property
    def bound(self) -> bool:
        """True while a bound transceiver link is up."""
        return self._bound.is_set()

    async def start(self) -> None:
        """Start the connect-bind-reconnect loop in the background."""
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait_bound(self, timeout: float | None = None) -> None:
        """Wait until the link is bound (raises TimeoutError)."""
        await asyncio.wait_for(self._bound.wait(), timeout)

    async def stop(self) -> None:
        """Unbind politely (if bound), close, and stop reconnecting."""
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.session.bound:
            with contextlib.suppress(Exception):
                conn.session.unbind(asyncio.get_running_loop().time())
                conn.flush()
                await asyncio.wait_for(conn.closed.wait(), 2.0)
        if conn is not None:
            conn.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()

    async def submit(self, pdu: SubmitSm, timeout: float | None = None) -> Pdu:
        """Send one submit_sm once bound; return submit_sm_resp (or generic_nack)."""
        await self.wait_bound(timeout)
        assert self._conn is not None
        return await self._conn.request(pdu)

    async def submit_text(
        self, source_addr: str, destination_addr: str, text: str, **fields: Any
    ) -> list[Pdu]:
        """Encode, split if long (8-bit-ref UDH) and submit `text`; one response per part."""
        data_coding, parts = split_text(text, next(self._refs) & 0xFF)
        esm = fields.pop("esm_class", 0) | (c.ESM_CLASS_UDHI if len(parts) > 1 else 0)
        return [
            await self.submit(SubmitSm(source_addr=source_addr, destination_addr=destination_addr,
                                       data_coding=data_coding, esm_class=esm,
                                       short_message=body, **fields))
            for body in parts
        ]

    # ---- reconnect loop ----
    async def _run(self) -> None:
        delay = self.backoff_initial
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self._connect_and_bind(loop)
                delay = self.backoff_initial  # a successful bind resets the backoff
                assert self._conn is not None
                await self._conn.closed.wait()
            except (OSError, BindError, TimeoutError) as exc:
                log.info("smpp client %s:%d: %s; retry in %.1fs", self.host, self.port, exc, delay)
            self._bound.clear()
            self._conn = None
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(self.backoff_max, delay * 2)

    async def _connect_and_bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._bind_result = loop.create_future()
        session = SmppSession(Role.CLIENT, loop.time(), self.config)
        transport, conn = await loop.create_connection(
            lambda: SmppConnection(self, session), self.host, self.port
        )
        self._conn = conn
        session.bind(loop.time(), self.system_id, self.password, "trx", self.system_type)
        conn.flush()
        closed: asyncio.Future[Any] = loop.create_task(conn.closed.wait())
        waiting: set[asyncio.Future[Any]] = {self._bind_result, closed}
        await asyncio.wait(
            waiting,
            timeout=self.config.response_timeout, return_when=asyncio.FIRST_COMPLETED,
        )
        closed.cancel()
        if not self._bind_result.done():
            transport.close()
            raise ConnectionError("link closed before bind_resp")
        status = self._bind_result.result()
        if status != c.ESME_ROK:
            self.last_bind_error = status
            transport.close()
            raise BindError(status)
        self.connects += 1
        self._bound.set()

    # ---- ConnectionOwner ----
    def connection_bound(self, conn: SmppConnection, event: Bound) -> None:
        """Our bind_transceiver was accepted."""
        if self._bind_result is not None and not self._bind_result.done():
            self._bind_result.set_result(c.ESME_ROK)

    def bind_refused(self, conn: SmppConnection, event: BindRefused) -> None:
        """Our bind was refused (or timed out)."""
        if self._bind_result is not None and not self._bind_result.done():
            self._bind_result.set_result(event.command_status or c.ESME_RBINDFAIL)

    def query_received(self, conn: SmppConnection, event: object) -> None:
        """Never: an SMSC does not send query_sm to an ESME (the session refuses it)."""

    def cancel_received(self, conn: SmppConnection, event: object) -> None:
        """Never: an SMSC does not send cancel_sm to an ESME (the session refuses it)."""

    def connection_gone(self, conn: SmppConnection) -> None:
        """The link dropped: the run loop reconnects."""
        if conn is self._conn:
            self._bound.clear()

    def message_received(self, conn: SmppConnection, event: MessageReceived) -> None:
        """deliver_sm from the SMSC: parts answered at once, whole messages to the hook."""
        loop = conn.loop
        now = loop.time()
        try:
            msg = self._assembler.add(self.system_id, event, now)
        except ConcatError:
            conn.respond(event, c.ESME_RINVESMCLASS)
            return
        self._assembler.expire(now)  # cheap; the client sees few concurrent sets
        if msg is None:
            conn.respond(event, c.ESME_ROK)
            return
        task = loop.create_task(self._answer(conn, event, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: SmppConnection, event: MessageReceived, msg: SmsMessage) -> None:
        try:
            status, _ = await self.on_message(conn.ref, msg)
        except Exception:
            log.exception("smpp client on_message hook failed for %s",
                          mask(msg.source_addr))
            status = c.ESME_RSYSERR
        conn.respond(event, status)
