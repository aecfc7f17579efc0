"""The thin asyncio adapter for the RTP relay: plain sockets, one epoll set per backend.

Each relay port (RTP, and RTCP on +1, facing each side of a call) is one non-blocking
UDP socket. All of a backend's sockets sit in one epoll set (`RtpPoller`) whose own
descriptor is the only thing registered with the event loop. When it is readable
the poller takes up to `batch` ready sockets in one `epoll_wait` and, for each,
reads one datagram with `recvfrom`, feeds the sans-IO `RelaySession` and, when the
session says so, sends the very same bytes with the *other* side's socket's `sendto`
(so each peer only ever sees the relay). No task, no allocation of our own and no
logging per packet; the handler never raises.

Why not one `DatagramProtocol` per port: at 20 ms per stream a socket almost never
holds two datagrams, so every packet was a loop wake-up of its own (the loop's
per-event dispatch, a transport that reads until EAGAIN, i.e. a second failing
`recvmsg`, and a `sendto` through the transport's own checks); the loop's handler per
socket (`add_reader`) still pays the dispatch per packet. One epoll set pays it once
per batch, and reads each ready socket once: a socket that still holds a datagram
is simply ready again in the next batch (level-triggered).

The clock is read once per batch (at most `batch` datagrams, well under a
millisecond of work): every datagram in it gets that arrival time. uvloop's clock
only has millisecond steps anyway; the recorder places audio by RTP timestamp and
uses arrival time only to anchor a stream, and the media timeout counts seconds.

Binding is synchronous (`socket`/`bind` never block) and numeric (no getaddrinfo), so
allocating a call's ports neither suspends the caller's coroutine nor hops to a thread.
Where `select.epoll` is missing, each socket gets its own `loop.add_reader` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import select
import socket
from collections.abc import Callable, Iterable

from relay.rtp.session import Address, RelaySession, Side

__all__ = ["CallSockets", "Clock", "RelayPort", "RtpPoller", "open_side"]

log = logging.getLogger(__name__)

#: Largest datagram read (RTP over UDP on Ethernet is well under 1500 bytes; bigger
#: datagrams are truncated by the kernel, which the peer would deserve).
MAX_DATAGRAM = 2048
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_TOS_EF = 0xB8  # DSCP EF (RFC 3246; RFC 4594 §4.3: telephony)
_EAGAIN = errno.EAGAIN

Clock = Callable[[], float]


class RelayPort:
    """One relay socket (RTP or RTCP) facing one side of one call."""

    __slots__ = ("errors", "fd", "receive", "recvfrom", "rtcp", "send", "side", "sock")

    def __init__(self, sock: socket.socket, session: RelaySession, side: Side,
                 rtcp: bool) -> None:
        """Wrap a bound non-blocking socket; `wire` it to its peer before reading."""
        self.sock = sock
        self.fd = sock.fileno()
        self.side = int(side)
        self.rtcp = rtcp
        self.errors = 0
        # The hot path's attribute loads: the session's decision and the two socket calls.
        # The relay's own voice (relay.media.playout) swaps this for a side it plays
        # into or listens to; every other call keeps the session's own.
        self.receive: Callable[[int, bytes, Address, float], Address | None] = (
            session.receive_rtcp if rtcp else session.receive)
        self.recvfrom = sock.recvfrom
        self.send: Callable[[bytes, Address], int] = _not_wired

    def wire(self, peer: RelayPort) -> None:
        """Forward what this port accepts out of `peer` (same kind, other side)."""
        self.send = peer.sock.sendto

    def handle(self, now: float) -> None:
        """Read one datagram, decide, forward. Never raises (STYLE 6)."""
        try:
            data, source = self.recvfrom(MAX_DATAGRAM)
        except OSError as exc:
            # EAGAIN: a spurious wake-up. Anything else: an error queued on the socket.
            if exc.errno != _EAGAIN:
                self.errors += 1
            return
        try:
            dest = self.receive(self.side, data, source, now)
            if dest is not None:
                self.send(data, dest)
        except Exception:  # a full send buffer, an unreachable peer, a failing tap
            self.count_error()

    def count_error(self) -> None:
        """Count a failed datagram (logged with its traceback at DEBUG)."""
        self.errors += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rtp relay error on %s side %s", "rtcp" if self.rtcp else "rtp",
                      Side(self.side).name, exc_info=True)

    def close(self) -> None:
        """Close the socket (the poller must have let go of it)."""
        self.sock.close()


def _not_wired(data: bytes, dest: Address) -> int:
    raise RuntimeError("relay port used before CallSockets wired it")


class RtpPoller:
    """Reads every relay socket of a backend through one epoll set on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock | None = None,
                 batch: int = 64) -> None:
        """`clock` defaults to `loop.time`; `batch` caps the datagrams per loop callback
        (other work on the loop, SIP for one, waits at most one batch)."""
        self._loop = loop
        self.clock = clock or loop.time
        self.batch = batch
        self._ports: dict[int, RelayPort] = {}
        self.wakeups = 0  # loop callbacks (batches) and the sockets they found ready
        self.ready = 0
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            self._poll = self._epoll.poll
            loop.add_reader(self._epoll.fileno(), self._on_ready)

    def __len__(self) -> int:
        """Sockets being read."""
        return len(self._ports)

    def add(self, port: RelayPort) -> None:
        """Start reading `port`."""
        if self._epoll is not None:
            self._epoll.register(port.fd, select.EPOLLIN)
        else:
            self._loop.add_reader(port.fd, self._on_one, port)
        self._ports[port.fd] = port

    def remove(self, port: RelayPort) -> None:
        """Stop reading `port` (idempotent)."""
        if self._ports.pop(port.fd, None) is None:
            return
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(port.fd)
        elif not self._loop.is_closed():
            self._loop.remove_reader(port.fd)

    def _on_ready(self) -> None:
        """The hot path: one datagram from each ready socket, up to `batch` of them.

        `RelayPort.handle` inlined: at 50,000 datagrams a second a call per datagram
        is measurable. Never raises.
        """
        try:
            ready = self._poll(0, self.batch)
        except OSError:
            return  # EINTR: the loop calls again while anything is ready
        now = self.clock()
        ports = self._ports
        self.wakeups += 1
        self.ready += len(ready)
        for fd, _ in ready:
            port = ports.get(fd)
            if port is None:
                continue
            # Callables kept in slots are loaded first and then called: Python 3.11
            # specialises that attribute load, not a method-style call through a slot.
            recvfrom = port.recvfrom
            try:
                data, source = recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                if exc.errno != _EAGAIN:
                    port.errors += 1
                continue
            receive = port.receive
            try:
                dest = receive(port.side, data, source, now)
                if dest is not None:
                    send = port.send
                    send(data, dest)
            except Exception:  # a full send buffer, an unreachable peer, a failing tap
                port.count_error()

    def _on_one(self, port: RelayPort) -> None:
        port.handle(self.clock())

    def close(self) -> None:
        """Stop reading everything (the sockets stay open: their owners close them)."""
        for port in list(self._ports.values()):
            self.remove(port)
        if self._epoll is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None


class CallSockets:
    """The four sockets of a call: RTP and RTCP facing the caller and the callee."""

    def __init__(self, ports: Iterable[RelayPort]) -> None:
        """Wire each port to its peer of the same kind on the other side."""
        self.ports = {(p.side, p.rtcp): p for p in ports}
        for (side, rtcp), port in self.ports.items():
            port.wire(self.ports[(1 - side, rtcp)])
        self._poller: RtpPoller | None = None

    @property
    def errors(self) -> int:
        """Handler and socket errors over all four sockets."""
        return sum(p.errors for p in self.ports.values())

    def start(self, poller: RtpPoller) -> None:
        """Start reading every socket."""
        self._poller = poller
        for port in self.ports.values():
            poller.add(port)

    def close(self) -> None:
        """Stop reading and close every socket (idempotent)."""
        for port in self.ports.values():
            if self._poller is not None:
                self._poller.remove(port)
            port.close()
        self._poller = None


def _family(host: str) -> socket.AddressFamily:
    """The family of a numeric bind address (the relay binds numeric addresses only)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_side(session: RelaySession, host: str, side: Side, port: int) -> list[RelayPort]:
    """Bind the RTP (`port`) and RTCP (`port + 1`) sockets facing `side`.

    Synchronous and non-blocking. Raises OSError if either port is taken, after
    closing whatever was bound.
    """
    family = _family(host)
    ports: list[RelayPort] = []
    try:
        for rtcp in (False, True):
            sock = socket.socket(family, socket.SOCK_DGRAM | _NONBLOCK)
            try:
                if not _NONBLOCK:
                    sock.setblocking(False)
                if family == socket.AF_INET:
                    # Networks that honour DSCP queue voice first; best effort, a
                    # refusal changes nothing else.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _TOS_EF)
                sock.bind((host, port + rtcp))
            except BaseException:
                sock.close()
                raise
            ports.append(RelayPort(sock, session, side, rtcp))
    except BaseException:
        for p in ports:
            p.close()
        raise
    return ports
