"""The native engine: both sides of every call on asyncio, on the project's own sans-IO
cores (relay.sip for the SIP codec, relay.sdp, relay.rtp for RTP).

The caller side (one UDP socket) places each attempt at its offset and checks the final
answer; the callee side (the `--callee` socket) answers the B-legs as the attempt says
(answer delay, refusal code, talk time, who hangs up). With `rtp`, both sides send a
G.711 tone (PCMU, 20 ms) while the call is up and check what arrives: payload, loss, and
one-way delay (sender and receiver share this process's clock). Every message and packet
received is checked for the other side's real number, SIP port and RTP port.

Transactions are kept to what loopback needs: INVITE, BYE and CANCEL are retransmitted
on RFC 3261's T1 doubling (§17.1.1.2) until answered, a 2xx on the callee side until
its ACK; anything else that arrives twice is answered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from recordings.g711 import PT_PCMU, encode, tone
from relay.rtp.packet import RtpError, RtpPacket
from relay.sdp import SdpError, SessionDescription, remote_media
from relay.sip import SipParseError
from relay.sip.message import SipRequest, SipResponse, build_response, parse_message

from .plan import Attempt, Plan
from .report import Result

__all__ = ["Counters", "NativeEngine"]

T1 = 0.5
# 400 Hz at 8 kHz: 20 samples a period, so every 20 ms frame carries the same bytes.
TONE = encode(tone(400.0, 160), PT_PCMU)
FINAL_TIMEOUT = 32.0  # RFC 3261 Timer B (64*T1) after the callee should have answered


@dataclass(slots=True)
class Counters:
    """What the progress line shows."""

    attempted: int = 0
    completed: int = 0
    refused: int = 0
    failed: int = 0
    setups: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    placed_at: deque[float] = field(default_factory=lambda: deque(maxlen=5000))


def _user(uri_text: str) -> str:
    """The user part of the first SIP or tel URI in `uri_text` ("" when none)."""
    m = _USER.search(uri_text)
    return m.group(1) if m else ""


_USER = re.compile(r"(?:sips?|tel):([^@;>\s]+)")


def _digits(number: str) -> str:
    return number.lstrip("+")


class _Flag:
    """A one-way flag to wait on with a timeout, without asyncio.wait_for's task per wait
    (the engine's hot path: a few waits per call)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout: float) -> bool:
        """True once set, False after `timeout` seconds."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        f: asyncio.Future[None] = loop.create_future()
        self._waiters.append(f)
        h = loop.call_later(max(0.0, timeout), _wake, f)
        try:
            await f
        finally:
            h.cancel()
        return self._set


def _wake(f: asyncio.Future[None]) -> None:
    if not f.done():
        f.set_result(None)


class _Inbox:
    """What arrives for one call: (message, its text); `get` waits with a timeout."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[tuple[SipRequest | SipResponse, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: tuple[SipRequest | SipResponse, str]) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def wake(self) -> None:
        """Wake a waiting `get` now, without an item (the run is stopping)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float) -> tuple[SipRequest | SipResponse, str] | None:
        """The next item, or None after `timeout` seconds."""
        if not self._items and timeout > 0:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            h = loop.call_later(timeout, _wake, self._waiter)
            try:
                await self._waiter
            finally:
                h.cancel()
                self._waiter = None
        return self._items.popleft() if self._items else None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class _Stream:
    """One side's RTP for one call: its socket, what it sent (seq -> time), what it got."""

    def __init__(self, engine: NativeEngine, result: Result, forbidden_port: Callable[[], int]
                 ) -> None:
        self.engine = engine
        self.result = result
        self.forbidden_port = forbidden_port  # the other side's own RTP port
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.peer: tuple[str, int] | None = None
        self.peer_stream: _Stream | None = None
        self.sent: dict[int, float] = {}
        self.seq = secrets.randbelow(0x8000)
        self.ts = 0
        self.ssrc = secrets.randbits(32)
        self.sending = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.received),
                                                   local_addr=("127.0.0.1", 0))
        self.transport = cast(asyncio.DatagramTransport, t)
        self.port = t.get_extra_info("sockname")[1]

    def tick(self, now: float) -> None:
        if not self.sending or self.peer is None or self.transport is None:
            return
        pkt = RtpPacket(payload_type=PT_PCMU, sequence_number=self.seq, timestamp=self.ts,
                        ssrc=self.ssrc, marker=not self.sent, payload=TONE)
        self.sent[self.seq] = now
        self.transport.sendto(bytes(pkt), self.peer)
        self.result.rtp_sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:
            self.result.rtp_bad += 1
            return
        r = self.result
        r.rtp_received += 1
        if pkt.payload != TONE:
            r.rtp_bad += 1
        if self.engine.check_leaks and addr[1] == self.forbidden_port():
            self.engine.leak(r, f"RTP from the other side's own port {addr[1]}")
        peer = self.peer_stream
        if peer is not None:
            sent = peer.sent.get(pkt.sequence_number)
            if sent is not None:
                r.rtp_delay_ms.append((now - sent) * 1000.0)

    def close(self) -> None:
        self.sending = False
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class _Leg:
    """The callee side's view of one B-leg."""

    invite: SipRequest
    addr: tuple[str, int]
    attempt: Attempt | None
    result: Result | None
    to_tag: str
    final: bytes | None = None
    acked: _Flag = field(default_factory=_Flag)
    ended: _Flag = field(default_factory=_Flag)
    cancelled: bool = False
    stream: _Stream | None = None


class NativeEngine:
    """Places a plan's attempts against `target` and answers B-legs on `callee`."""

    name = "native"

    def __init__(self, plan: Plan, target: tuple[str, int], callee: tuple[str, int], *,
                 rtp: bool = False, check_leaks: bool = True) -> None:
        self.plan = plan
        self.target = target
        self.callee = callee
        self.rtp = rtp
        self.check_leaks = check_leaks
        self.counters = Counters()
        self.results: list[Result] = []
        self.t0 = 0.0
        self._calls: dict[str, _Inbox] = {}
        self._legs: dict[str, _Leg] = {}
        # B-legs not yet arrived, per (X, B): the attempts the caller side placed.
        self._expect: dict[tuple[str, str], deque[tuple[Attempt, Result]]] = defaultdict(deque)
        self._streams: set[_Stream] = set()
        self._uac: asyncio.DatagramTransport | None = None
        self._uas: asyncio.DatagramTransport | None = None
        self._sink_port = 9
        self.parties: dict[str, set[str]] = defaultdict(set)
        for b in plan.bindings:
            self.parties[b.x] |= {n for n in (b.a, b.b) if n}  # AXN/AXE may have no A
        for a in plan.attempts:
            if a.callee:
                self.parties[a.x] |= {a.caller, a.callee}
        self._uac_port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_streams: dict[int, tuple[_Stream | None, list[_Stream]]] = {}

    # --- wiring ---

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._from_target),
                                                   local_addr=("127.0.0.1", 0))
        self._uac = cast(asyncio.DatagramTransport, t)
        self._uac_port = t.get_extra_info("sockname")[1]
        t2, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._to_callee),
                                                    local_addr=self.callee)
        self._uas = cast(asyncio.DatagramTransport, t2)
        for t in (self._uac, self._uas):
            sock = t.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def close(self) -> None:
        for s in list(self._streams):
            s.close()
        for t in (self._uac, self._uas):
            if t is not None:
                t.close()

    def leak(self, r: Result, what: str) -> None:
        if what not in r.leaks:
            r.leaks.append(what)

    # --- the run ---

    async def run(self, stop: asyncio.Event, on_start: Callable[[float], None] | None = None
                  ) -> None:
        """Place every attempt at its offset until `stop` is set; then end what is up."""
        await self.open()
        ticker = asyncio.ensure_future(self._rtp_ticker()) if self.rtp else None
        self.t0 = time.monotonic()
        if on_start is not None:
            on_start(self.t0)
        try:
            for a in self.plan.attempts:
                # Sleep in slices of at most 0.2 s so that Ctrl-C is heard during long gaps.
                while (delay := self.t0 + a.offset - time.monotonic()) > 0 \
                        and not stop.is_set():
                    await asyncio.sleep(min(delay, 0.2))
                if stop.is_set():
                    break
                r = Result(a, placed_at=time.monotonic() - self.t0)
                self.results.append(r)
                self.counters.attempted += 1
                self.counters.placed_at.append(time.monotonic())
                task = asyncio.ensure_future(self._uac_call(a, r, stop))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            woken = False
            while self._tasks:
                if stop.is_set() and not woken:
                    # Calls waiting for their talk time or an answer end now (BYE, CANCEL).
                    woken = True
                    for q in list(self._calls.values()):
                        q.wake()
                await asyncio.wait(set(self._tasks), timeout=0.2)
        finally:
            if ticker is not None:
                ticker.cancel()
            await asyncio.sleep(0.1)
            self.close()

    async def _rtp_ticker(self) -> None:
        nxt = time.monotonic()
        while True:
            nxt += 0.02
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            now = time.monotonic()
            for s in list(self._streams):
                s.tick(now)

    def _sdp(self, port: int) -> bytes:
        sid = secrets.randbelow(10**9)
        return (f"v=0\r\no=- {sid} {sid} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n").encode()

    def _finish(self, r: Result) -> None:
        r.ended_at = time.monotonic() - self.t0
        c = self.counters
        o = r.outcome
        if o == "completed":
            c.completed += 1
        elif o == "refused":
            c.refused += 1
        else:
            c.failed += 1

    # --- caller side ---

    def _from_target(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except (SipParseError, ValueError):
            return
        q = self._calls.get(msg.call_id)
        if q is not None:
            q.put((msg, data.decode("latin-1")))
        elif isinstance(msg, SipRequest) and msg.method not in ("ACK",):
            self._uac_send(bytes(build_response(msg, 481)), addr)

    def _uac_send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        if self._uac is not None:
            self._uac.sendto(data, addr or self.target)

    def _check_caller_side(self, a: Attempt, r: Result, text: str) -> None:
        """A message the caller received: nothing of the callee's side in it."""
        if not self.check_leaks:
            return
        for n in self.parties.get(a.x, set()) - {a.caller}:
            if _digits(n) in text or _digits(n)[-9:] in text:
                self.leak(r, f"callee number {n[:6]}… in a message to the caller")
        if f":{self.callee[1]}" in text:
            self.leak(r, f"callee SIP port {self.callee[1]} in a message to the caller")

    async def _uac_call(self, a: Attempt, r: Result, stop: asyncio.Event) -> None:
        try:
            await self._uac_call_inner(a, r, stop)
        except Exception as exc:
            r.error = r.error or f"engine error: {exc!r}"
        finally:
            self._finish(r)

    async def _uac_call_inner(self, a: Attempt, r: Result, stop: asyncio.Event) -> None:
        cid = f"lt{secrets.token_hex(8)}@loadtest"
        q = _Inbox()
        self._calls[cid] = q
        stream: _Stream | None = None
        callee_stream: list[_Stream] = []
        if self.rtp:
            stream = _Stream(self, r, lambda: callee_stream[0].port if callee_stream else -1)
            await stream.open()
        media_port = stream.port if stream else self._sink_port
        if a.callee:
            self._expect[(a.x, a.callee)].append((a, r))
        self._pending_streams[id(r)] = (stream, callee_stream)
        host, port = self.target
        tag = secrets.token_hex(6)
        branch = "z9hG4bK" + secrets.token_hex(8)
        user = f"{a.x};ext={a.ext}" if a.ext else a.x  # AXE: RFC 3966 extension
        ruri = f"sip:{user}@{host}:{port}"
        via = f"SIP/2.0/UDP 127.0.0.1:{self._uac_port};branch={branch};rport"
        frm = f"<sip:{a.caller}@127.0.0.1>;tag={tag}"
        to = f"<sip:{user}@{host}>"
        body = self._sdp(media_port)
        invite = bytes(SipRequest("INVITE", ruri, [
            ("Via", via), ("Max-Forwards", "70"), ("From", frm), ("To", to),
            ("Call-ID", cid), ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:{a.caller}@127.0.0.1:{self._uac_port}>"),
            ("Content-Type", "application/sdp"), ("Content-Length", str(len(body)))], body))
        sent_at = time.monotonic()
        self._uac_send(invite)
        retrans, interval = sent_at + T1, T1
        provisional = False
        final: SipResponse | None = None
        deadline = sent_at + a.answer_delay + FINAL_TIMEOUT
        cancel_at = sent_at + a.cancel_after if a.cancel_after is not None else None
        cancelled = False
        try:
            while final is None:
                now = time.monotonic()
                if now >= deadline:
                    r.error = r.error or "timeout (no final answer)"
                    return
                if stop.is_set() and not cancelled:
                    cancel_at = now
                    r.cancelled_on_stop = True
                wake = deadline
                if not provisional:
                    wake = min(wake, retrans)
                if cancel_at is not None and not cancelled:
                    wake = min(wake, cancel_at)
                if stop.is_set() and not cancelled:
                    wake = now
                got = await q.get(max(0.0, wake - now))
                if got is None:
                    now = time.monotonic()
                    if cancel_at is not None and not cancelled and now >= cancel_at:
                        cancelled = True
                        self._uac_send(bytes(SipRequest("CANCEL", ruri, [
                            ("Via", via), ("Max-Forwards", "70"), ("From", frm), ("To", to),
                            ("Call-ID", cid), ("CSeq", "1 CANCEL"), ("Content-Length", "0")])))
                    elif not provisional and now >= retrans:
                        self._uac_send(invite)
                        interval = min(interval * 2, 4.0)
                        retrans = now + interval
                    continue
                msg, text = got
                self._check_caller_side(a, r, text)
                if isinstance(msg, SipRequest):
                    continue
                if msg.cseq.method != "INVITE":
                    continue
                if msg.status < 200:
                    provisional = True
                    continue
                final = msg
            r.code = final.status
            r.reason = final.headers.get("Reason") or ""
            r.setup_ms = (time.monotonic() - sent_at) * 1000.0
            if final.status >= 300:
                self._uac_send(bytes(SipRequest("ACK", ruri, [
                    ("Via", via), ("Max-Forwards", "70"), ("From", frm),
                    ("To", final.headers.get("To") or to), ("Call-ID", cid),
                    ("CSeq", "1 ACK"), ("Content-Length", "0")])))
                self._drop_expect(a, r)
                return
            self.counters.setups.append(r.setup_ms)
            await self._uac_dialog(a, r, final, ruri, frm, cid, q, stream, stop)
        finally:
            self._calls.pop(cid, None)
            self._pending_streams.pop(id(r), None)
            if stream is not None:
                self._close_later(stream)

    def _drop_expect(self, a: Attempt, r: Result) -> None:
        if a.callee:
            dq = self._expect.get((a.x, a.callee))
            if dq:
                for item in list(dq):
                    if item[1] is r:
                        dq.remove(item)

    async def _uac_dialog(self, a: Attempt, r: Result, ok: SipResponse, ruri: str, frm: str,
                          cid: str, q: _Inbox,
                          stream: _Stream | None, stop: asyncio.Event) -> None:
        to = ok.headers.get("To") or ""
        contact = ok.contacts[0].uri if ok.contacts else None
        target_uri = str(contact) if contact is not None else ruri
        routes = [str(rr) for rr in reversed(ok.record_routes)]
        route_h = [("Route", v) for v in routes]

        def request(method: str, cseq: int) -> bytes:
            via = (f"SIP/2.0/UDP 127.0.0.1:{self._uac_port};"
                   f"branch=z9hG4bK{secrets.token_hex(8)};rport")
            return bytes(SipRequest(method, target_uri, [
                ("Via", via), ("Max-Forwards", "70"), *route_h, ("From", frm), ("To", to),
                ("Call-ID", cid), ("CSeq", f"{cseq} {method}"), ("Content-Length", "0")]))

        self._uac_send(request("ACK", 1))
        if stream is not None and ok.body:
            try:
                media = remote_media(SessionDescription.parse(ok.body))
                if media.address:
                    stream.peer = (media.address, media.rtp_port)
                    stream.sending = True
                    self._streams.add(stream)
            except SdpError:
                pass
        end_at = time.monotonic() + a.talk
        # The callee hangs up on its own; the caller waits a little longer, then does.
        if a.hangup_by == "callee":
            end_at += 5.0 + a.talk
        while True:
            now = time.monotonic()
            if now >= end_at or stop.is_set():
                break
            got = await q.get(end_at - now if not stop.is_set() else 0)
            if got is None:
                break
            msg, text = got
            self._check_caller_side(a, r, text)
            if isinstance(msg, SipRequest) and msg.method == "BYE":
                if stream is not None:
                    stream.sending = False
                self._uac_send(bytes(build_response(msg, 200)))
                return
            if isinstance(msg, SipResponse) and msg.cseq.method == "INVITE" and msg.status == 200:
                self._uac_send(request("ACK", 1))  # our ACK was lost: the 200 came again
        if stream is not None:
            stream.sending = False
        bye = request("BYE", 2)
        interval = T1
        give_up = time.monotonic() + 16.0
        self._uac_send(bye)
        while time.monotonic() < give_up:
            got = await q.get(interval)
            if got is None:
                self._uac_send(bye)
                interval = min(interval * 2, 4.0)
                continue
            msg = got[0]
            if isinstance(msg, SipResponse) and msg.cseq.method == "BYE" and msg.status >= 200:
                return
            if isinstance(msg, SipRequest) and msg.method == "BYE":  # crossed BYEs
                self._uac_send(bytes(build_response(msg, 200)))
        r.error = "no answer to BYE"

    def _close_later(self, s: _Stream) -> None:
        def close() -> None:
            self._streams.discard(s)
            s.close()
        asyncio.get_running_loop().call_later(0.3, close)

    # --- callee side ---

    def _to_callee(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except (SipParseError, ValueError):
            return
        leg = self._legs.get(msg.call_id)
        if isinstance(msg, SipResponse):
            if leg is not None and msg.cseq.method == "BYE" and msg.status >= 200:
                leg.ended.set()
            return
        text = data.decode("latin-1")
        if msg.method == "INVITE":
            if leg is not None:  # a retransmission: answer as last time
                if leg.final is not None and self._uas is not None:
                    self._uas.sendto(leg.final, addr)
                return
            b = _user(msg.uri)
            x = _user(msg.headers.get("From") or "")
            a, r = None, None
            dq = self._expect.get((x, b))
            if dq:
                a, r = dq.popleft()
            leg = _Leg(msg, addr, a, r, secrets.token_hex(6))
            self._legs[msg.call_id] = leg
            self._check_callee_side(leg, text)
            task = asyncio.ensure_future(self._uas_call(leg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if leg is None:
            if msg.method != "ACK" and self._uas is not None:
                self._uas.sendto(bytes(build_response(msg, 481)), addr)
            return
        self._check_callee_side(leg, text)
        if msg.method == "ACK":
            leg.acked.set()
        elif msg.method == "BYE":
            if self._uas is not None:
                self._uas.sendto(bytes(build_response(msg, 200, to_tag=leg.to_tag)), addr)
            if leg.stream is not None:
                leg.stream.sending = False
            leg.ended.set()
        elif msg.method == "CANCEL":
            if self._uas is not None:
                self._uas.sendto(bytes(build_response(msg, 200, to_tag=leg.to_tag)), addr)
            leg.cancelled = True
            leg.ended.set()
        elif self._uas is not None:
            self._uas.sendto(bytes(build_response(msg, 200, to_tag=leg.to_tag)), addr)

    def _check_callee_side(self, leg: _Leg, text: str) -> None:
        a, r = leg.attempt, leg.result
        if not self.check_leaks or a is None or r is None:
            return
        d = _digits(a.caller)
        if d in text or d[-9:] in text:
            self.leak(r, f"caller number {a.caller[:6]}… in a message to the callee")
        if f":{self._uac_port}" in text:
            self.leak(r, f"caller SIP port {self._uac_port} in a message to the callee")
        pending = self._pending_streams.get(id(r))
        if pending and pending[0] is not None and re.search(
                rf"m=audio {pending[0].port}\b", text):
            self.leak(r, f"caller RTP port {pending[0].port} in SDP to the callee")

    async def _uas_call(self, leg: _Leg) -> None:
        try:
            await self._uas_call_inner(leg)
        except Exception as exc:
            if leg.result is not None:
                leg.result.error = leg.result.error or f"callee side: {exc!r}"
        finally:
            loop = asyncio.get_running_loop()
            loop.call_later(40.0, self._legs.pop, leg.invite.call_id, None)
            if leg.stream is not None:
                self._close_later(leg.stream)

    async def _uas_call_inner(self, leg: _Leg) -> None:
        assert self._uas is not None
        inv, a = leg.invite, leg.attempt
        delay = a.answer_delay if a is not None else 0.0
        code = a.callee_code if a is not None else 200
        send = self._uas.sendto
        send(bytes(build_response(inv, 180, to_tag=leg.to_tag, record_route=True)), leg.addr)
        if delay > 0:
            await leg.ended.wait(delay)
        if leg.cancelled or leg.ended.is_set():
            leg.final = bytes(build_response(inv, 487, to_tag=leg.to_tag))
            send(leg.final, leg.addr)
            return
        if code >= 300:
            leg.final = bytes(build_response(inv, code, to_tag=leg.to_tag))
            send(leg.final, leg.addr)
            return
        stream = None
        if self.rtp and leg.result is not None:
            pending = self._pending_streams.get(id(leg.result))
            caller_stream = pending[0] if pending else None
            stream = _Stream(self, leg.result, lambda: caller_stream.port if caller_stream else -1)
            await stream.open()
            if pending is not None:
                pending[1].append(stream)
                if caller_stream is not None:
                    caller_stream.peer_stream = stream
                    stream.peer_stream = caller_stream
            leg.stream = stream
            try:
                media = remote_media(SessionDescription.parse(inv.body))
                if media.address:
                    stream.peer = (media.address, media.rtp_port)
            except SdpError:
                pass
        body = self._sdp(stream.port if stream else self._sink_port)
        leg.final = bytes(build_response(
            inv, 200, to_tag=leg.to_tag, record_route=True,
            extra_headers=[("Contact", f"<sip:callee@127.0.0.1:{self.callee[1]}>"),
                           ("Content-Type", "application/sdp"),
                           ("Content-Length", str(len(body)))], body=body))
        interval = T1
        send(leg.final, leg.addr)
        deadline = time.monotonic() + 32.0
        while not leg.acked.is_set() and time.monotonic() < deadline:
            if not await leg.acked.wait(interval):
                send(leg.final, leg.addr)
                interval = min(interval * 2, 4.0)
        if stream is not None and stream.peer is not None:
            stream.sending = True
            self._streams.add(stream)
        talk = a.talk if a is not None else 1.0
        if a is None or a.hangup_by == "caller":
            await leg.ended.wait(talk + 40.0)
            return
        if await leg.ended.wait(talk):
            return  # the caller hung up first
        if stream is not None:
            stream.sending = False
        frm = inv.headers.get("To") or ""
        if ";tag=" not in frm:
            frm += f";tag={leg.to_tag}"
        target = str(inv.contacts[0].uri) if inv.contacts else inv.uri
        routes = [("Route", str(rr)) for rr in inv.record_routes]

        def bye() -> bytes:
            return bytes(SipRequest("BYE", target, [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.callee[1]};"
                        f"branch=z9hG4bK{secrets.token_hex(8)};rport"),
                ("Max-Forwards", "70"), *routes, ("From", frm),
                ("To", inv.headers.get("From") or ""), ("Call-ID", inv.call_id),
                ("CSeq", "1 BYE"), ("Content-Length", "0")]))

        msg = bye()
        interval = T1
        give_up = time.monotonic() + 16.0
        send(msg, leg.addr)
        while time.monotonic() < give_up:
            if await leg.ended.wait(interval):
                return
            send(msg, leg.addr)
            interval = min(interval * 2, 4.0)


def engine_cpu() -> float:
    """This process's CPU seconds (user + system), to tell where the engine's limit is."""
    t = os.times()
    return t.user + t.system
