"""rtpengine's ng control protocol over UDP: one socket, replies matched by cookie.

The ng protocol (rtpengine's docs, "ng control protocol"): one UDP datagram per
request, `<cookie> <bencoded dict>`; the reply carries the same cookie. UDP loses
datagrams, so a request is resent with the *same* cookie after `timeout`:
rtpengine keeps a cookie cache and answers a resent request from it instead of
running the command twice (an offer run twice would allocate twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from typing import Any, cast

from relay.media.bencode import BencodeError, Value, decode_ng, encode_ng
from relay.rtp.session import Address

__all__ = ["NgClient", "NgError", "NgTimeout"]


class NgError(Exception):
    """rtpengine answered `result: error` (or garbage). `status` is a SIP hint (500)."""

    status = 500

    def __init__(self, command: str, reason: str) -> None:
        """`reason` is rtpengine's `error-reason`."""
        super().__init__(f"rtpengine {command}: {reason}")
        self.command = command
        self.reason = reason


class NgTimeout(NgError):
    """No reply after every retry: rtpengine is down or unreachable (SIP hint 503)."""

    status = 503


# --- the ng transport: one socket, futures keyed by cookie ---


class NgClient(asyncio.DatagramProtocol):
    """Sends ng requests to one rtpengine and matches replies by cookie."""

    def __init__(self, addr: tuple[str, int], *, timeout: float = 0.5,
                 retries: int = 3) -> None:
        """`timeout` per try; `retries` resends after the first try."""
        self.addr = addr
        self.timeout = timeout
        self.retries = retries
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[bytes, Value]]] = {}
        self._prefix = secrets.token_hex(4)
        self._counter = 0
        self.bad_replies = 0

    async def connect(self) -> None:
        """Open the UDP socket (connected, so only rtpengine's replies arrive)."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=self.addr)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Resolve the request this reply's cookie names; never raises (STYLE 6)."""
        try:
            cookie, body = decode_ng(data)
        except BencodeError:
            self.bad_replies += 1
            return
        fut = self._pending.get(cookie)
        if fut is not None and not fut.done():
            fut.set_result(body)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable: rtpengine is not there yet; the retry loop decides."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever is still waiting."""
        self.transport = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NgTimeout("request", "control socket closed"))

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()

    async def request(self, message: Mapping[str, Any]) -> dict[bytes, Value]:
        """Send `message` and return rtpengine's reply dict (`result` checked).

        Raises `NgTimeout` after `retries` resends, `NgError` on `result: error`.
        """
        if self.transport is None:
            raise NgTimeout(str(message.get("command")), "not connected")
        command = str(message.get("command"))
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}".encode()
        datagram = encode_ng(cookie, message)
        fut: asyncio.Future[dict[bytes, Value]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = fut
        try:
            for _ in range(1 + self.retries):
                if self.transport is None:
                    break
                self.transport.sendto(datagram)  # same cookie: rtpengine dedups it
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                    break
            if not fut.done():
                raise NgTimeout(command, f"no reply after {1 + self.retries} tries")
            reply = fut.result()
        finally:
            self._pending.pop(cookie, None)
            if not fut.done():
                fut.cancel()
        result = reply.get(b"result")
        if result == b"error":
            reason = reply.get(b"error-reason", b"unknown error")
            raise NgError(command, text(reason))
        if result not in (b"ok", b"pong"):
            raise NgError(command, f"unexpected result {text(result)!r}")
        return reply


def text(value: Value | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
