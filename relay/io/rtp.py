"""The thin asyncio adapter for the RTP relay: one DatagramProtocol per relay port.

`datagram_received` feeds the sans-IO `RelaySession` and, when it says so, sends
the very same bytes out of the other side's socket (so each peer only ever sees the
relay's address). No task per packet, no logging per packet, never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from relay.rtp.session import Address, RelaySession, Side

__all__ = ["CallSockets", "RtpPortProtocol", "bind_side"]

log = logging.getLogger(__name__)


class RtpPortProtocol(asyncio.DatagramProtocol):
    """One relay port (RTP or RTCP) facing one side of one call."""

    def __init__(self, session: RelaySession, side: Side, rtcp: bool,
                 clock: Callable[[], float]) -> None:
        """`clock` is the loop's monotonic clock, read once per datagram."""
        self.side = side
        self.rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: RtpPortProtocol | None = None  # the same kind of port facing the other side
        self._receive = session.receive_rtcp if rtcp else session.receive
        self._clock = clock
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to send from."""
        # Selector loops hand a transport that is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_INET:
            # DSCP EF (RFC 3246, RFC 4594 §4.3: telephony) so networks that honour it
            # queue voice first; best effort, a refusal changes nothing else.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB8)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Hot path: decide, then forward from the other side's socket. Never raises."""
        try:
            dest = self._receive(self.side, data, addr, self._clock())
            if dest is not None:
                peer = self.peer
                if peer is not None and peer.transport is not None:
                    peer.transport.sendto(data, dest)
        except Exception:  # a datagram handler must not raise (STYLE 6); count it
            self.errors += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rtp relay error on %s side %s", "rtcp" if self.rtcp else "rtp",
                          self.side.name, exc_info=True)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (peer gone) are counted, not fatal: the peer may come back."""
        self.errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the transport so nothing is sent on a closed socket."""
        self.transport = None


class CallSockets:
    """The four sockets of a call: RTP and RTCP facing the caller and the callee."""

    def __init__(self, endpoints: dict[tuple[Side, bool], RtpPortProtocol]) -> None:
        """Wire each endpoint to its peer of the same kind on the other side."""
        self.endpoints = endpoints
        for (side, rtcp), ep in endpoints.items():
            ep.peer = endpoints[(side.other, rtcp)]

    @property
    def errors(self) -> int:
        """Handler errors and ICMP errors over all four sockets."""
        return sum(ep.errors for ep in self.endpoints.values())

    def close(self) -> None:
        """Close every socket (idempotent)."""
        for ep in self.endpoints.values():
            if ep.transport is not None:
                ep.transport.close()


def _family(host: str) -> socket.AddressFamily:
    """The family of a numeric bind address (the relay binds numeric addresses only)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def bind_side(session: RelaySession, host: str, side: Side,
                    port: int) -> dict[tuple[Side, bool], RtpPortProtocol]:
    """Bind the RTP (`port`) and RTCP (`port + 1`) sockets facing `side`.

    Raises OSError if either is taken, after closing whatever was bound.
    """
    loop = asyncio.get_running_loop()
    endpoints: dict[tuple[Side, bool], RtpPortProtocol] = {}
    try:
        for rtcp in (False, True):
            proto = RtpPortProtocol(session, side, rtcp, loop.time)
            # Bind the socket ourselves: `local_addr=` would resolve the host through
            # getaddrinfo in a worker thread, four times per call on the call path.
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((host, port + rtcp))
            except OSError:
                sock.close()
                raise
            await loop.create_datagram_endpoint(lambda p=proto: p,  # type: ignore[misc]
                                                sock=sock)
            endpoints[(side, rtcp)] = proto
    except BaseException:
        for ep in endpoints.values():
            if ep.transport is not None:
                ep.transport.close()
        raise
    return endpoints
