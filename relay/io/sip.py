"""The asyncio adapter of the B2BUA: sockets, one timer, and the media jobs.

Thin by design (STYLE.md point 2): UDP datagrams and TCP messages (cut by
:class:`relay.sip.StreamFramer`) go into :class:`relay.b2bua.callmap.CallMap` with
the wall-clock time; after each batch of input the adapter sends what the call map
queued, starts the media jobs it asked for, hands the records of ended and refused
calls (their call events) to the record writer, and re-arms its single timer. The
media backend's own events (digits, prompt ends) go in the same way. No task per
packet: tasks exist only for media jobs that must wait, and the read handler never
raises.

UDP is a plain non-blocking socket on the loop's reader callback rather than a
DatagramProtocol: one wake-up reads every datagram already queued (up to
``UDP_BATCH``) and flushes once, so under load the per-message cost of the event
loop, the timer re-arm and the output drain is shared by the batch; and datagrams
go out with the socket's own ``sendto``. A full send buffer drops the datagram
(counted): UDP may lose it anyway, and the transaction layer retransmits.

Overload measurements for the switch's guard (relay/b2bua/overload.py): the first
datagram of each read batch is the oldest queued, and the kernel's receive timestamp
(SO_TIMESTAMP) says how long it waited; a repeating timer's drift is the loop's lag;
the media jobs in flight are counted at the same tick. A few syscalls a second, and
one `recvmsg` instead of a `recvfrom` per wake-up.

Streams (TCP, and TLS with ``start_tls``) are bounded by :class:`StreamLimits`
(issue 13): connections in all and per source address, an idle timeout, a deadline
for a message once its first byte came (slowloris), trunks only when so configured,
and file descriptors kept in reserve for media, the store and the API. A new
connection that would cross a limit is aborted at once (RST: its descriptor is free
again at once). Descriptors are allocated lowest first (POSIX), so a new socket's
number is the count of descriptors open below it: at or above ``soft limit -
reserve`` the reserve would be eaten. Each refusal and closing is counted in
``stats`` (exported as metrics by relay.io.voice).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from relay.b2bua.callmap import CallMap
from relay.b2bua.events import CallEnded, CallEvent, CallRefused, MediaJob
from relay.contacts import Scores
from relay.media.backend import MediaBackend, MediaCall, MediaEvent
from relay.rtp.session import Side
from relay.sdp import SdpError
from relay.sip import SipParseError, StreamFramer

from .hook import DecisionHook

__all__ = ["SipServer", "StreamLimits", "raise_fd_limit", "tls_context"]

log = logging.getLogger("relay.sip")

Address = tuple[str, int]
RecordSink = Callable[[dict[str, Any]], None]
EventSink = Callable[[CallEvent], None]
PromptPath = Callable[[str], Any]

#: Datagrams read per wake-up before the batch is flushed (then the loop runs timers
#: and other sockets, and wakes us again if more is queued).
UDP_BATCH = 64
#: Largest SIP datagram read (RFC 3261 §18.1.1: beyond the path MTU, use TCP).
MAX_DATAGRAM = 65535
#: Kernel receive buffer asked for: a burst of INVITEs must wait there, not be lost.
RCVBUF = 4 << 20
#: Seconds between two samples of the loop's lag (a timer's drift) and of queued jobs.
LAG_SAMPLE = 0.05
#: socket(7) SO_TIMESTAMP (Linux's value where Python does not name it): a struct
#: timeval of the datagram's arrival comes with it in recvmsg's ancillary data.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)
_TIMEVAL = struct.Struct("@ll")
#: Listen backlog of the TCP and TLS sockets: a burst of connections (trunks coming
#: back after an outage, or a crowd to refuse) waits there rather than retrying SYNs.
BACKLOG = 1024
#: Seconds between two sweeps of the stream connections (idle and slow ones).
STREAM_SWEEP = 1.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Bounds on SIP over TCP and TLS (`[sip] tcp_*` in relay.toml)."""

    max_connections: int = 4096  # TCP and TLS connections in all
    max_per_source: int = 64  # from one IP address
    idle_seconds: float = 120.0  # no byte this long: closed (0: never)
    message_seconds: float = 10.0  # a message must be complete this long after its first
                                   # byte, a new connection's first one after the connect
    trunks_only: bool = False  # connections from sources outside [relay] trunks: refused
    fd_reserve: int = 0  # descriptors never used for SIP streams (0: a quarter of the limit)


def raise_fd_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (media needs many sockets);
    returns (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for SIP over TLS (RFC 3261 §26.2.1, RFC 8996: TLS 1.2 or later)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class _Tcp(asyncio.Protocol):
    """One TCP or TLS connection: frame the stream, feed each message (RFC 3261 §18.3)."""

    def __init__(self, server: SipServer, tls: bool = False) -> None:
        self.server = server
        self.tls = tls
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.last = 0.0  # monotonic time of the last byte received (or the connect)
        self.started: float | None = None  # a message's first byte came then (not done)
        self.counted = False  # in server.streams (admitted)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        server = self.server
        refusal = server.stream_refusal(self.peer[0], transport)
        if refusal is not None:
            server.stats["tcp_refused_" + refusal] += 1
            self.transport.abort()  # an RST: the descriptor is free again at once
            return
        self.counted = True
        server.streams.add(self)
        server.per_source[self.peer[0]] = server.per_source.get(self.peer[0], 0) + 1
        self.last = time.monotonic()
        self.started = self.last  # the first message is due within message_seconds
        server.tcp[self.peer] = self.transport

    def data_received(self, data: bytes) -> None:
        if not self.counted:
            return
        now = self.last = time.monotonic()
        try:
            messages = self.framer.feed(data)
        except SipParseError:
            # RFC 3261 §18.3: no way to find the next message; drop the connection.
            self.server.stats["tcp_framing_errors"] += 1
            if self.transport is not None:
                self.transport.close()
            return
        if messages or messages.pong:
            self.started = None
        if self.framer.buffered and self.started is None:
            self.started = now  # a message began: it has message_seconds to complete
        if messages.pong and self.transport is not None:
            self.transport.write(b"\r\n")  # RFC 5626 §3.5.1
        for msg in messages:
            self.server.on_message(msg, self.peer, True)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.counted:
            return
        self.counted = False
        server = self.server
        server.streams.discard(self)
        left = server.per_source.get(self.peer[0], 1) - 1
        if left > 0:
            server.per_source[self.peer[0]] = left
        else:
            server.per_source.pop(self.peer[0], None)
        if server.tcp.get(self.peer) is self.transport:
            del server.tcp[self.peer]


class SipServer:
    """Runs one CallMap on a UDP socket (and a TCP listener on the same port).

    `records` receives the record of every ended or refused call; `events`, when
    given, every call event (ringing, answered, ended, refused) as it happens.
    `prompts` turns a prompt's name into the file the media backend plays.
    """

    def __init__(self, switch: CallMap, media: MediaBackend, records: RecordSink,
                 clock: Callable[[], float] = time.time, *, events: EventSink | None = None,
                 prompts: PromptPath | None = None,
                 scores: Scores | None = None, counter_timeout: float = 0.3,
                 hook: DecisionHook | None = None,
                 limits: StreamLimits | None = None) -> None:
        self.switch = switch
        self.hook = hook  # the per-call decision hook ([dialplan] hook_url)
        self.scores = scores  # callers' harassment scores (relay.contacts)
        self.counter_timeout = counter_timeout
        self.media = media
        self.records = records
        self.events = events
        self.prompts = prompts
        self.clock = clock
        self.udp: socket.socket | None = None
        self.tcp_server: asyncio.Server | None = None
        self.tls_server: asyncio.Server | None = None
        self.tcp: dict[Address, asyncio.Transport] = {}
        self.limits = limits or StreamLimits()
        self.streams: set[_Tcp] = set()  # admitted TCP and TLS connections
        self.per_source: dict[str, int] = {}  # admitted connections per source IP
        self.fd_ceiling = 0  # a stream socket numbered at or above this is refused
        self._sweep_timer: asyncio.TimerHandle | None = None
        self.jobs: set[asyncio.Task[None]] = set()
        self.stats = {"errors": 0, "tcp_framing_errors": 0, "udp_send_errors": 0,
                      "udp_receive_errors": 0, "tcp_refused_total": 0,
                      "tcp_refused_source": 0, "tcp_refused_fds": 0,
                      "tcp_refused_untrusted": 0, "tcp_closed_idle": 0,
                      "tcp_closed_slow": 0}
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._loop = asyncio.get_running_loop()
        set_listener = getattr(media, "set_listener", None)
        if set_listener is not None:
            set_listener(self.on_media_event)
        self.guard = switch.settings.overload
        self._stamped = False  # the UDP socket gives arrival times (SO_TIMESTAMP)
        self._lag_timer: asyncio.TimerHandle | None = None
        self._lag_due = 0.0

    # -- sockets --------------------------------------------------------------------
    @staticmethod
    def bind_udp(host: str, port: int) -> socket.socket:
        """Bind the UDP socket before the switch exists (its port goes into Via)."""
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # capped by rmem_max: the default works
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
        return sock

    async def start(self, udp: socket.socket, tcp: bool = True) -> None:
        """Read the bound UDP socket and listen on TCP at the same address."""
        self.udp = udp
        try:
            udp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            self._stamped = True
        except OSError:
            log.info("no SO_TIMESTAMP: overload control measures the loop's lag only")
        self._loop.add_reader(udp.fileno(), self._on_udp)
        self._sample_lag()
        self._fd_budget()
        self._rearm(self.switch.get_timer())  # timers due before any input (trunk probes)
        if tcp:
            host, port = udp.getsockname()[:2]
            try:
                self.tcp_server = await self._loop.create_server(
                    lambda: _Tcp(self), host, port, reuse_address=True, backlog=BACKLOG)
            except OSError as exc:
                log.warning("SIP over TCP disabled: cannot listen on %s:%s: %s",
                            host, port, exc)
        self._sweep_streams()

    async def start_tls(self, host: str, port: int, context: ssl.SSLContext) -> int:
        """Listen for SIP over TLS (same limits as TCP); returns the bound port."""
        self.tls_server = await self._loop.create_server(
            lambda: _Tcp(self, tls=True), host, port, ssl=context, reuse_address=True,
            backlog=BACKLOG,
            ssl_handshake_timeout=max(1.0, self.limits.message_seconds))
        return int(self.tls_server.sockets[0].getsockname()[1])

    def _fd_budget(self) -> None:
        """Check RLIMIT_NOFILE: the descriptors SIP streams may reach."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        reserve = self.limits.fd_reserve or max(256, soft // 4)
        self.fd_ceiling = soft - reserve
        if self.fd_ceiling < 64:
            log.warning("RLIMIT_NOFILE is %d: with %d descriptors kept in reserve, SIP "
                        "over TCP/TLS gets almost none (raise the limit)", soft, reserve)

    def stream_refusal(self, host: str, transport: asyncio.BaseTransport) -> str | None:
        """Why a new stream connection from `host` is refused, or None (admitted)."""
        lim = self.limits
        sock = transport.get_extra_info("socket")
        fileno = sock.fileno() if sock is not None else -1
        if fileno >= self.fd_ceiling:
            return "fds"
        if len(self.streams) >= lim.max_connections:
            return "total"
        if self.per_source.get(host, 0) >= lim.max_per_source:
            return "source"
        if lim.trunks_only and not self.switch._trusted(host):
            return "untrusted"
        return None

    def _sweep_streams(self) -> None:
        """Every STREAM_SWEEP s: close idle connections and unfinished messages."""
        lim = self.limits
        now = time.monotonic()
        idle_before = now - lim.idle_seconds if lim.idle_seconds > 0 else None
        slow_before = now - lim.message_seconds if lim.message_seconds > 0 else None
        for conn in list(self.streams):
            t = conn.transport
            if t is None:
                continue
            if slow_before is not None and conn.started is not None \
                    and conn.started < slow_before:
                self.stats["tcp_closed_slow"] += 1
                t.abort()
            elif idle_before is not None and conn.last < idle_before:
                self.stats["tcp_closed_idle"] += 1
                t.close()
        self._sweep_timer = self._loop.call_later(STREAM_SWEEP, self._sweep_streams)

    async def close(self) -> None:
        """Stop listening and cancel pending work."""
        if self._timer is not None:
            self._timer.cancel()
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.tcp_server is not None:
            self.tcp_server.close()
        if self.tls_server is not None:
            self.tls_server.close()
        for t in list(self.tcp.values()):
            t.close()
        if self.udp is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self.udp.fileno())
            self.udp.close()
            self.udp = None

    # -- input ------------------------------------------------------------------------
    def _on_udp(self) -> None:
        """The UDP socket is readable: take what is queued (a batch), then flush."""
        sock = self.udp
        if sock is None:
            return
        recvfrom = sock.recvfrom
        receive = self.switch.receive_datagram
        clock = self.clock
        for i in range(UDP_BATCH):
            try:
                if i or not self._stamped:
                    data, addr = recvfrom(MAX_DATAGRAM)
                else:
                    data, addr = self._recv_oldest(sock)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued on the socket, say
                self.stats["udp_receive_errors"] += 1
                log.debug("UDP receive error: %s", exc)
                break
            try:
                receive(data, (addr[0], addr[1]), clock())
            except Exception:
                # A bug in the TU must not kill the socket; count it and keep serving.
                self.stats["errors"] += 1
                log.exception("SIP message from %s:%s failed", addr[0], addr[1])
        self.flush()

    def _recv_oldest(self, sock: socket.socket) -> tuple[bytes, Any]:
        """The batch's first datagram, the oldest queued: report how long it waited."""
        data, ancillary, _flags, addr = sock.recvmsg(MAX_DATAGRAM, 64)
        for level, kind, value in ancillary:
            if (level == socket.SOL_SOCKET and kind == SO_TIMESTAMP
                    and len(value) >= _TIMEVAL.size):
                sec, usec = _TIMEVAL.unpack_from(value)
                self.guard.observe_delay(time.time() - (sec + usec / 1e6))
        return data, addr

    def _sample_lag(self) -> None:
        """Every LAG_SAMPLE s: the timer's drift is the loop's lag; count queued jobs."""
        now = self._loop.time()
        if self._lag_due:
            self.guard.observe_lag(now - self._lag_due)
        self.guard.observe_jobs(len(self.jobs))
        self._lag_due = now + LAG_SAMPLE
        self._lag_timer = self._loop.call_at(self._lag_due, self._sample_lag)

    def on_message(self, data: bytes, addr: Address, reliable: bool) -> None:
        """One datagram or framed TCP message; never raises."""
        try:
            self.switch.receive_datagram(data, addr, self.clock(), reliable=reliable)
        except Exception:
            # A bug in the TU must not kill the socket; count it and keep serving.
            self.stats["errors"] += 1
            log.exception("SIP message from %s:%s failed", addr[0], addr[1])
        self.flush()

    def on_media_event(self, ev: MediaEvent) -> None:
        """A digit or a prompt's end from the media backend; never raises."""
        try:
            self.switch.media_event(ev, self.clock())
        except Exception:
            self.stats["errors"] += 1
            log.exception("media event for call %s failed", ev.call_id)
        self.flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        try:
            self.switch.handle_timer(self.clock())
        except Exception:
            self.stats["errors"] += 1
            log.exception("SIP timer failed")
        self.flush()

    # -- output -----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what the switch queued, start its media jobs, submit records, re-arm."""
        sw = self.switch
        udp = self.udp
        tcp = self.tcp
        while True:
            for data, addr in sw.datagrams_to_send():
                conn = tcp.get(addr) if tcp else None
                if conn is not None:
                    conn.write(data)
                elif udp is not None:
                    try:
                        udp.sendto(data, addr)
                    except OSError as exc:
                        # EAGAIN (send buffer full), or an unreachable address: lost
                        # like any UDP datagram; the transaction retransmits or times out.
                        self.stats["udp_send_errors"] += 1
                        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                            log.debug("UDP send to %s:%s failed: %s", addr[0], addr[1], exc)
            jobs = sw.take_jobs()
            if not jobs:
                break
            for job in jobs:
                self._start_job(job)
        events = sw.take_call_events()
        if events:
            sink = self.events
            for ev in events:
                if type(ev) in _RECORDED:
                    self.records(ev.record)  # type: ignore[union-attr]
                if sink is not None:
                    sink(ev)
        self._rearm(sw.get_timer())

    def _start_job(self, job: MediaJob) -> None:
        # Eager start (what Python 3.12's eager tasks do): most media steps (SDP
        # rewriting) never suspend, so they finish here without a task and without
        # another trip through the event loop; only those that do wait get a task.
        coro = self._run(job)
        try:
            suspended = coro.send(None)
        except StopIteration:
            return
        except Exception:
            self.stats["errors"] += 1
            log.exception("media job for call %s failed", job.call_id)
            return
        task = self._loop.create_task(_resume(coro, suspended, self.flush))
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    def _rearm(self, deadline: float | None) -> None:
        # One timer. Re-armed only when the new deadline is earlier: a later one is
        # picked up when the armed timer fires (cheaper than cancelling per packet).
        if deadline is None:
            return
        if self._armed is not None and self._armed <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed = deadline
        delay = max(0.0, deadline - self.clock())
        self._timer = self._loop.call_later(delay, self._on_timer)

    async def _run(self, job: MediaJob) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = await _OPS[job.op](self, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # SdpError (400/488), PortsExhausted, OSError...
            error = exc
            if not isinstance(exc, SdpError):  # a peer's bad SDP is its problem, not ours
                log.warning("media %s of call %s failed: %s", job.op, job.call_id, exc)
        try:
            self.switch.media_done(job, result, error, self.clock())
        except Exception:
            self.stats["errors"] += 1
            log.exception("media result for call %s failed", job.call_id)

    # -- media operations, one per MediaJob.op ---------------------------------------------
    async def _setup(self, job: MediaJob) -> tuple[MediaCall, bytes]:
        media = self.media
        call = await media.allocate(job.call_id, job.record)
        try:
            # An INVITE without SDP (late offer): the callee will offer.
            sdp = await media.offer(call, Side.CALLER, job.sdp) if job.sdp else b""
        except BaseException:
            await media.release(call)
            raise
        return (call, sdp)

    async def _offer(self, job: MediaJob) -> bytes:
        return await self.media.offer(_handle(job), job.side, job.sdp)

    async def _answer(self, job: MediaJob) -> bytes:
        return await self.media.answer(_handle(job), job.side, job.sdp)

    async def _release(self, job: MediaJob) -> Any:
        return await self.media.release(_handle(job))

    async def _answer_local(self, job: MediaJob) -> bytes:
        return await self.media.answer_locally(_handle(job), job.side)

    async def _local_offer(self, job: MediaJob) -> bytes:
        return await self.media.local_offer(_handle(job), job.side)

    async def _play(self, job: MediaJob) -> int:
        if self.prompts is None:
            raise LookupError("no prompts configured")
        return await self.media.play(_handle(job), job.side, self.prompts(job.prompt),
                                     repeat=job.flag)

    async def _stop_play(self, job: MediaJob) -> None:
        await self.media.stop_play(_handle(job), job.side)

    async def _detect(self, job: MediaJob) -> None:
        await self.media.detect_digits(_handle(job), job.side, job.flag)

    async def _score(self, job: MediaJob) -> int:
        """The caller's harassment score (dialplan.score) from the shared contacts."""
        if self.scores is None or not job.key:
            return 0
        return await asyncio.wait_for(self.scores.score(job.key, self.clock()),
                                      self.counter_timeout)

    async def _hook(self, job: MediaJob) -> bool:
        """Ask the decision hook (its own deadline); HookError reaches the controller."""
        if self.hook is None:
            return True
        return await self.hook.ask({"at": self.clock(), **(job.info or {})})

    async def drain_jobs(self) -> None:
        """Wait for running media jobs (at shutdown)."""
        while self.jobs:
            await asyncio.gather(*list(self.jobs), return_exceptions=True)



def _handle(job: MediaJob) -> MediaCall:
    return job.handle  # type: ignore[return-value]


# MediaJob.op -> the operation that runs it (dispatch by table).
_OPS: dict[str, Callable[[SipServer, MediaJob], Any]] = {
    "setup": SipServer._setup, "offer": SipServer._offer, "answer": SipServer._answer,
    "release": SipServer._release, "answer_local": SipServer._answer_local,
    "local_offer": SipServer._local_offer, "play": SipServer._play,
    "stop_play": SipServer._stop_play, "detect": SipServer._detect,
    "score": SipServer._score, "hook": SipServer._hook,
}
_RECORDED = (CallEnded, CallRefused)


async def _resume(coro: Any, suspended: Any, after: Callable[[], None]) -> None:
    """Drive a coroutine that suspended during its eager start to its end, in a task,
    then call `after` (the adapter's flush: nobody else will send what it queued)."""
    waiting = suspended
    try:
        while True:
            try:
                if waiting is None:
                    await asyncio.sleep(0)  # a bare yield: give the loop one turn
                    value = None
                else:
                    # As asyncio.Task does with a yielded future: clear the flag its
                    # __await__ set, or awaiting it again raises RuntimeError.
                    if getattr(waiting, "_asyncio_future_blocking", None):
                        waiting._asyncio_future_blocking = False
                    value = await waiting
            except BaseException as exc:  # hand errors and cancellation to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting = coro.send(value)
            except StopIteration:
                return
    finally:
        after()
