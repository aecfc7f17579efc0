"""The call controller: admission, routing, and the glue between the two legs.

:class:`Switch` is sans-IO. The adapter feeds it datagrams (or parsed transaction
events) with ``now`` (wall-clock seconds, so records carry UTC times), drains
:meth:`Switch.datagrams_to_send`, runs the :class:`MediaJob` s it asks for and hands
their results back through :meth:`Switch.media_done`, submits the call records from
:meth:`Switch.take_records`, and re-arms one timer from :meth:`Switch.get_timer`.

Every call-control event of one call goes through that call's queue, in order, so a
media job in flight (say, rewriting a 183's SDP) can never be overtaken by a later
event (the 486 that followed it).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dialplan.numbers import InvalidNumber, normalise
from dialplan.route import Bridge, decide
from relay.rtp.session import Side
from relay.sip import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    SipRequest,
    SipResponse,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    build_response,
    new_tag,
    system_random,
)

from ._state import LegState
from .cdr import CallTimes, build_record
from .events import (
    Answer,
    CCEvent,
    Connect,
    Disconnect,
    Fail,
    Info,
    InfoReply,
    MediaJob,
    Offer,
    Ring,
    Try,
)
from .legs import ALLOW, CalleeLeg, CallerLeg, _Leg, reason_header
from .overload import OverloadGuard

__all__ = ["Call", "Settings", "Switch", "Wire"]

Address = tuple[str, int]

# Refusal reason -> the record's unconnected_cause (issue 3's vocabulary).
_UNCONNECTED = {"no_binding": "no_binding", "frozen": "frozen", "expired": "frozen",
                "stranger": "stranger", "disabled": "policy", "no_party": "policy"}


class Table(Protocol):
    """What the switch needs of relay.bindings.table.BindingTable (memory only)."""

    def lookup(self, x: str, caller: str | None, ext: str | None = None) -> Any: ...
    def in_use(self, x: str) -> bool: ...


@dataclass
class Settings:
    """Voice tunables (`[sip]` in relay.toml; see relay.b2bua.attach)."""

    host: str = "127.0.0.1"  # the address we put in Via, Contact and From
    port: int = 5060
    outbound: Address = ("127.0.0.1", 5070)
    trunks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    default_cc: str = ""
    ring_timeout: float = 60.0
    max_call_seconds: float = 7200.0
    max_calls: int = 5000
    cps: float = 0.0  # new calls per second admitted; 0 = no limit
    hangup_on_freeze: bool = False
    timers: TimerConfig = field(default_factory=TimerConfig)
    # Overload control (relay/b2bua/overload.py), fed by the adapter. It lives here
    # only until the call map owns its admission state.
    overload: OverloadGuard = field(default_factory=OverloadGuard)


class Wire:
    """How legs send: through the transaction layer, remembering which leg asked."""

    def __init__(self, switch: Switch, s: Settings) -> None:
        self.switch = switch
        self.layer = switch.layer
        self.host = s.host
        self.transport = "UDP"
        self.sent_by = f"{s.host}:{s.port}"
        self.outbound_host = s.outbound[0]
        self._contact_tail = f"@{s.host}:{s.port}>"

    def contact(self, user: str) -> str:
        """Our Contact: X at the relay, never anything of the other side."""
        return f"<sip:{user}{self._contact_tail}"

    def request(self, leg: _Leg, purpose: str, req: SipRequest, dest: Address,
                now: float) -> TransactionKey:
        """Start a client transaction and remember (leg, purpose) for its responses."""
        key = self.layer.send_request(req, dest, now)
        self.switch._clients[key] = (leg, purpose)
        leg.call.client_keys.append(key)
        return key

    def respond(self, resp: SipResponse, now: float) -> None:
        """Hand a response to its server transaction."""
        self.layer.send_response(resp, now)

    def stateless(self, msg: SipRequest, dest: Address) -> None:
        """An ACK for a 2xx (RFC 3261 §13.2.2.4 sends it outside any transaction),
        queued in order with everything else."""
        self.layer.send_stateless(msg, dest)


class Call:
    """One bridged call: two legs, its media handle, its queue and its record."""

    def __init__(self, call_id: str, x: str, caller: str | None, decision: Bridge,
                 entry: Any, now: float) -> None:
        self.id = call_id
        self.x = x
        self.caller = caller
        self.callee = decision.to
        self.binding = decision.binding
        self.direction = decision.direction
        self.out_id: str | None = getattr(entry, "out_id", None)
        self.record_media = bool(getattr(entry, "record", False))
        mcs = getattr(entry, "max_call_seconds", None)
        self.max_seconds: float | None = float(mcs) if mcs else None
        self.started_at = now
        self.a: CallerLeg
        self.b: CalleeLeg | None = None
        self.media: object = None
        self.queue: deque[tuple[Callable[[], MediaJob | None], Callable[..., None]]] = deque()
        self.busy: MediaJob | None = None
        self.times = CallTimes()
        self.timers: dict[str, float] = {}
        self.client_keys: list[TransactionKey] = []
        self.ended = False
        self.released_by: str | None = None
        self.end_reason: str | None = None  # why the relay ended it (record's end_reason)
        self.cause: int | None = None
        self.recording: object = None


class Switch:
    """The B2BUA core of one node (see the module docstring for the adapter's duties)."""

    def __init__(self, settings: Settings, table: Table, *,
                 clock_id: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self.table = table
        self.layer = TransactionLayer(settings.timers)
        self.wire = Wire(self, settings)
        self.calls: dict[str, Call] = {}  # live and finishing calls by relay call id
        self.live = 0  # calls not yet ended (the overload limit counts these)
        self.draining = False
        self._clients: dict[TransactionKey, tuple[_Leg, str]] = {}
        self._dialogs: dict[tuple[str, str], _Leg] = {}
        self._invites: dict[TransactionKey, Call] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._jobs: list[MediaJob] = []
        self._records: list[dict[str, Any]] = []
        self._trust: dict[str, bool] = {}
        self._nets = [ipaddress.ip_network(n, strict=False) for n in settings.trunks]
        self._tokens = settings.cps
        self._tokens_at = 0.0
        self._new_id = clock_id or (lambda: system_random(8).hex())
        self.counts: dict[str, int] = {
            "invites": 0, "bridged": 0, "answered": 0, "refused": 0, "untrusted": 0,
            "overload": 0, "media_errors": 0,
        }
        self.refusals: dict[int, int] = {}

    # -- adapter interface ----------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Address, now: float, *,
                         reliable: bool = False) -> None:
        """Feed one datagram (never raises on garbage: the layer answers 400 itself)."""
        self.handle_events(self.layer.receive_datagram(data, source, now, reliable=reliable),
                           now)

    def handle_events(self, events: list[Event], now: float) -> None:
        """Act on transaction-layer events."""
        for ev in events:
            self._dispatch(ev, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything to transmit, in order."""
        return self.layer.datagrams_to_send()

    def take_jobs(self) -> list[MediaJob]:
        """Media work to run (see MediaJob)."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def take_records(self) -> list[dict[str, Any]]:
        """Finished call records (kind "call") to submit to the record writer."""
        recs, self._records = self._records, []
        return recs

    def get_timer(self) -> float | None:
        """The earliest deadline of the transaction layer and of the calls."""
        heap = self._heap
        while heap:
            deadline, _, cid, name = heap[0]
            call = self.calls.get(cid)
            if call is not None and call.timers.get(name) == deadline:
                break
            heapq.heappop(heap)
        mine = heap[0][0] if heap else None
        theirs = self.layer.get_timer()
        if mine is None:
            return theirs
        return mine if theirs is None else min(mine, theirs)

    def handle_timer(self, now: float) -> None:
        """Fire every due timer: transaction timers (RFC 3261 A-M) and call timers."""
        self.handle_events(self.layer.handle_timer(now), now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, cid, name = heapq.heappop(heap)
            call = self.calls.get(cid)
            if call is None or call.timers.get(name) != deadline:
                continue
            del call.timers[name]
            if name == "ring":
                self._ring_timeout(call, now)
            elif name == "duration":
                self.hangup(call, now, cause=16, reason="max_duration")

    def media_done(self, job: MediaJob, result: Any, error: BaseException | None,
                   now: float) -> None:
        """The adapter finished `job`: run the waiting continuation, then the next job."""
        call = self.calls.get(job.call_id)
        if call is None or call.busy is not job:
            return
        call.busy = None
        if job.op == "setup" and error is None:
            call.media, result = result
        _make, cont = call.queue.popleft()
        if error is not None:
            self.counts["media_errors"] += 1
        cont(result, error, now)
        self._pump(call, now)

    def hangup(self, call: Call, now: float, *, cause: int = 16, reason: str = "") -> None:
        """The relay ends a call (max duration, freeze, drain): BYE or 480 to both."""
        if call.ended:
            return
        if reason:
            call.end_reason = reason
        ev = Disconnect("relay", cause)
        call.a.disconnect(ev, now)
        if call.b is not None:
            call.b.disconnect(ev, now)
        self._end(call, "relay", cause, now)
        self._pump(call, now)

    def hangup_all(self, now: float) -> int:
        """End every live call (the end of a drain); returns how many."""
        live = [c for c in self.calls.values() if not c.ended]
        for call in live:
            self.hangup(call, now, reason="drain")
        return len(live)

    def media_timeout(self, idle: Iterable[object], now: float) -> int:
        """End answered calls whose media handle is in `idle` (the backend's
        `idle_calls(timeout)`: no RTP or RTCP from either side): BYE both legs,
        Q.850 cause 41 (temporary failure), end_reason "media_timeout". Returns how many."""
        handles = {id(h) for h in idle}
        if not handles:
            return 0
        ended = [c for c in self.calls.values()
                 if not c.ended and id(c.media) in handles
                 and c.times.legs["caller"]["answer_at"] is not None]
        for call in ended:
            self.hangup(call, now, cause=41, reason="media_timeout")
        return len(ended)

    def sweep(self, now: float) -> None:
        """Once a second: hang up calls whose binding froze, if so configured."""
        if not self.settings.hangup_on_freeze:
            return
        for call in [c for c in self.calls.values() if not c.ended]:
            entry = self.table.lookup(call.x, call.caller)
            if entry is None or entry.id != call.binding or entry.effective_state(now) != "active":
                self.hangup(call, now, cause=22, reason="frozen")

    # -- dispatch -------------------------------------------------------------------
    def _dispatch(self, ev: Event, now: float) -> None:
        if isinstance(ev, RequestReceived):
            self._on_request(ev, now)
        elif isinstance(ev, ResponseReceived):
            self._on_response(ev.response, ev.key, now)
        elif isinstance(ev, AckReceived):
            leg = self._dialogs.get((ev.request.call_id, ev.request.to_tag or ""))
            if isinstance(leg, CallerLeg):
                answer = leg.on_ack(ev.request)
                if answer is not None:
                    self._late_answer(leg.call, answer, now)
        elif isinstance(ev, CancelReceived):
            self._on_cancel(ev, now)
        elif isinstance(ev, (TransactionTimeout, TransportError)):
            self._on_timeout(ev.key, isinstance(ev, TransportError), now)
        # StrayResponse: a late retransmission for a finished call; nothing to do.

    def _on_request(self, ev: RequestReceived, now: float) -> None:
        req = ev.request
        to_tag = req.to_tag
        if to_tag is not None:
            leg = self._dialogs.get((req.call_id, to_tag))
            if leg is None:
                self._reply(req, 481, now)  # RFC 3261 §12.2.2
                return
            if not self._unsupported(req, now):
                self._route(leg, leg.on_request(req, now), now)
            return
        if not self._trusted(ev.source[0]):
            # Never a lookup for an untrusted source (DESIGN.md), just a counter.
            self.counts["untrusted"] += 1
            self._reply(req, 403, now)
            if req.method == "INVITE":
                self._refused_record(req, None, None, 403, 21, "untrusted", now)
            return
        if self._unsupported(req, now):
            if req.method == "INVITE":
                self.counts["refused"] += 1
                self.refusals[420] = self.refusals.get(420, 0) + 1
                self._refused_record(req, None, None, 420, 79, "error", now)
            return
        method = req.method
        if method == "INVITE":
            self._on_invite(req, ev.key, ev.source, now)
        elif method == "OPTIONS":
            self._reply(req, 200, now, [("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._reply(req, 481, now)
        else:
            self._reply(req, 405, now, [("Allow", ALLOW)])  # RFC 3261 §8.2.1

    def _unsupported(self, req: SipRequest, now: float) -> bool:
        """RFC 3261 §8.2.2.3: a Require naming an extension we lack (100rel, timer...:
        we implement none) gets 420 with those option-tags in Unsupported."""
        if "require" not in req.headers:
            return False
        tags = [t for t in req.headers.get_list("require") if t]
        if not tags:
            return False
        self._reply(req, 420, now, [("Unsupported", ", ".join(tags))])
        return True

    def _reply(self, req: SipRequest, status: int, now: float,
               extra: list[tuple[str, str]] | None = None) -> None:
        resp = build_response(req, status, to_tag=new_tag(), extra_headers=extra or ())
        self.layer.send_response(resp, now)

    def _trusted(self, host: str) -> bool:
        ok = self._trust.get(host)
        if ok is None:
            try:
                addr = ipaddress.ip_address(host)
                ok = any(addr in net for net in self._nets)
            except ValueError:
                ok = False
            if len(self._trust) > 10000:
                self._trust.clear()  # bounded: a scan from many sources must not grow it
            self._trust[host] = ok
        return ok

    def _admit(self, now: float) -> bool:
        s = self.settings
        if self.live >= s.max_calls:
            return False
        if not s.overload.admit(now):
            return False
        if s.cps > 0:
            self._tokens = min(s.cps, self._tokens + (now - self._tokens_at) * s.cps)
            self._tokens_at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
        return True

    # -- a new call -------------------------------------------------------------------
    def _on_invite(self, req: SipRequest, key: TransactionKey, source: Address,
                   now: float) -> None:
        self.counts["invites"] += 1
        cc = self.settings.default_cc
        try:
            x: str | None = normalise(getattr(req.request_uri, "user", None) or "", cc)
        except InvalidNumber:
            x = None
        try:
            caller: str | None = normalise(getattr(req.from_.uri, "user", None) or "", cc)
        except InvalidNumber:
            caller = None  # an unparsable caller can only be a stranger
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            # RFC 3261 §16.3 step 3 (we act as a proxy would for loop protection).
            self._refuse(req, x, caller, 483, 25, "error", now)
            return
        if self.draining or not self._admit(now):
            self.counts["overload"] += 1
            # Cheap: a counter and a record for one refusal in `sample_every` only.
            extra = [("Retry-After", self.settings.overload.retry_after)]
            if self.draining or self.settings.overload.sample():
                self._refuse(req, x, caller, 503, 42, "policy", now, extra)
            else:
                self.counts["refused"] += 1
                self.refusals[503] = self.refusals.get(503, 0) + 1
                self._reply(req, 503, now, [reason_header(42, "policy"), *extra])
            return
        if x is None:
            self._refuse(req, None, caller, 404, 1, "no_binding", now)
            return
        table = self.table
        entry = table.lookup(x, caller)
        decision = decide(entry, table.in_use(x), caller, now, "voice")
        if not isinstance(decision, Bridge):
            self._refuse(req, x, caller, decision.code, decision.cause,
                         _UNCONNECTED.get(decision.reason, "policy"), now,
                         binding=decision.binding, out_id=getattr(entry, "out_id", None),
                         text=decision.reason)
            return
        self.counts["bridged"] += 1
        call = Call(self._new_id(), x, caller, decision, entry, now)
        call.a = CallerLeg(self.wire, call, req, key, source)
        call.times.stamp("caller", "invite_at", now)
        self.calls[call.id] = call
        self.live += 1
        self._dialogs[(req.call_id, call.a.local_tag)] = call.a
        self._invites[key] = call
        hops = min(69, (mf if mf is not None else 70) - 1)
        sdp = req.body

        def placed(result: bytes, error: BaseException | None, now: float) -> None:
            if call.ended:
                return
            if error is not None:
                status = int(getattr(error, "status", 503))  # SdpError knows its status
                call.a.fail(Fail(status, 65 if status == 488 else 47, "media"), now,
                            retry_after=5 if status == 503 else None)
                self._end(call, "relay", 47, now)
                return
            b = call.b = CalleeLeg(self.wire, call, self.settings.outbound)
            self._dialogs[(b.call_id, b.local_tag)] = b
            b.place(Try(call.x, call.callee, result, hops), now)
            call.times.stamp("callee", "invite_at", now)
            self._arm(call, "ring", now + self.settings.ring_timeout)

        self._enqueue(call, lambda: MediaJob(self._next(), call.id, "setup", Side.CALLER, sdp,
                                             call.record_media), placed)
        self._pump(call, now)

    def _refuse(self, req: SipRequest, x: str | None, caller: str | None, code: int,
                cause: int, unconnected: str, now: float,
                extra: list[tuple[str, str]] | None = None, *, binding: str | None = None,
                out_id: str | None = None, text: str = "") -> None:
        self.counts["refused"] += 1
        self.refusals[code] = self.refusals.get(code, 0) + 1
        self._reply(req, code, now, [reason_header(cause, text or unconnected), *(extra or ())])
        self._refused_record(req, x, caller, code, cause, unconnected, now, binding, out_id)

    def _refused_record(self, req: SipRequest, x: str | None, caller: str | None, code: int,
                        cause: int, unconnected: str, now: float, binding: str | None = None,
                        out_id: str | None = None) -> None:
        times = CallTimes()
        times.stamp("caller", "invite_at", now)
        times.stamp("caller", "end_at", now)
        times.legs["caller"]["sip_code"] = code
        self._records.append(build_record(
            call_id=self._new_id(), started_at=now, x=x, caller=caller, callee=None,
            binding=binding, out_id=out_id, direction=None, times=times, sip_code=code,
            cause=cause, released_by="relay", unconnected=unconnected, recording=None))

    # -- events from the legs ---------------------------------------------------------
    def _route(self, leg: _Leg, events: list[CCEvent], now: float) -> None:
        call = leg.call
        for ev in events:
            self._from_leg(call, leg, ev, now)
        self._pump(call, now)

    def _other(self, call: Call, leg: _Leg) -> _Leg | None:
        return call.b if leg is call.a else call.a

    def _from_leg(self, call: Call, leg: _Leg, ev: CCEvent, now: float) -> None:
        side = Side.CALLER if leg is call.a else Side.CALLEE
        a = call.a
        if isinstance(ev, Ring):
            call.times.stamp("callee", "ring_at", now)

            def ring(sdp: bytes | None, error: BaseException | None, now: float) -> None:
                if a.can("ring") and not call.ended:
                    a.ring(Ring(ev.code, sdp or b""), now)
                    call.times.stamp("caller", "ring_at", now)

            self._enqueue(call, self._job(call, "answer", side, ev.sdp), ring)
        elif isinstance(ev, Connect):
            call.times.stamp("callee", "answer_at", now)
            call.timers.pop("ring", None)

            def connect(sdp: bytes | None, error: BaseException | None, now: float) -> None:
                if call.ended or not a.can("connect"):
                    return
                if error is not None or sdp is None:
                    a.fail(Fail(488, 65, "media"), now)
                    self.hangup(call, now, cause=65, reason="media")
                    return
                a.connect(Connect(sdp), now)
                if call.b is not None and call.b.late:
                    a.late_answer_pending = True
                self.counts["answered"] += 1
                call.times.stamp("caller", "answer_at", now)
                limit = call.max_seconds or self.settings.max_call_seconds
                self._arm(call, "duration", now + limit)

            # Late offer: the callee's 2xx carries the offer, not an answer.
            op = "offer" if call.b is not None and call.b.late else "answer"
            self._enqueue(call, self._job(call, op, side, ev.sdp), connect)
        elif isinstance(ev, Fail):
            self._enqueue(call, _nojob, lambda _r, _e, now: self._fail(call, ev, now))
        elif isinstance(ev, Disconnect):
            self._enqueue(call, _nojob, lambda _r, _e, now: self._disconnect(call, leg, ev, now))
        elif isinstance(ev, Offer):
            self._offer(call, leg, side, ev)
        elif isinstance(ev, Answer):
            self._answer(call, leg, side, ev)
        elif isinstance(ev, Info):
            other = self._other(call, leg)
            if other is not None and other.can("info"):
                other.info(ev, now)
            else:
                leg.info_reply(InfoReply(481), now)
        elif isinstance(ev, InfoReply):
            other = self._other(call, leg)
            if other is not None and other.can("info_reply"):
                other.info_reply(ev, now)

    def _late_answer(self, call: Call, sdp: bytes, now: float) -> None:
        """The caller's ACK answered the callee's offer: ACK the callee with it."""
        def acked(out: bytes | None, error: BaseException | None, now: float) -> None:
            b = call.b
            if call.ended or b is None:
                return
            if error is not None or out is None:
                b.ack_with(b"")  # complete the callee's transaction, then end the call
                self.hangup(call, now, cause=65 if error is not None else 31, reason="media")
                return
            b.ack_with(out)

        self._enqueue(call, self._job(call, "answer", Side.CALLER, sdp), acked)
        self._pump(call, now)

    def _fail(self, call: Call, ev: Fail, now: float) -> None:
        if call.a.can("fail"):
            call.a.fail(ev, now)
        self._end(call, "callee", ev.cause, now)

    def _disconnect(self, call: Call, leg: _Leg, ev: Disconnect, now: float) -> None:
        other = self._other(call, leg)
        if other is not None:
            other.disconnect(ev, now)
        self._end(call, ev.by, ev.cause, now)

    def _offer(self, call: Call, leg: _Leg, side: Side, ev: Offer) -> None:
        def sent(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            other = self._other(call, leg)
            if call.ended or not leg.can("answer"):
                return
            if error is not None or sdp is None:
                leg.answer(Answer(int(getattr(error, "status", 488))), now)
            elif other is None or not other.can("offer") or other.pending_out \
                    or other.pending_in is not None:
                leg.answer(Answer(491), now)  # RFC 3261 §14.2
            else:
                other.offer(Offer(ev.method, sdp), now)

        self._enqueue(call, self._job(call, "offer", side, ev.sdp), sent)

    def _answer(self, call: Call, leg: _Leg, side: Side, ev: Answer) -> None:
        def answered(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            other = self._other(call, leg)
            if call.ended or other is None or not other.can("answer"):
                return
            if ev.code >= 300 or not ev.sdp:
                other.answer(Answer(ev.code), now)
            elif error is not None or sdp is None:
                other.answer(Answer(488), now)
            else:
                other.answer(Answer(ev.code, sdp), now)

        sdp = ev.sdp if ev.code < 300 else b""
        self._enqueue(call, self._job(call, "answer", side, sdp), answered)

    # -- responses and timeouts --------------------------------------------------------
    def _on_response(self, resp: SipResponse, key: TransactionKey, now: float) -> None:
        found = self._clients.get(key)
        if found is None:
            return
        leg, purpose = found
        if resp.status >= 200 and (purpose != "invite" or resp.status >= 300
                                   or leg.call.ended):
            del self._clients[key]  # a 2xx to INVITE may be retransmitted: keep the key
        if purpose == "invite" and isinstance(leg, CalleeLeg):
            self._route(leg, leg.on_invite_response(resp, now), now)
        elif purpose != "cancel":
            self._route(leg, leg.on_response(purpose, resp, now), now)

    def _on_timeout(self, key: TransactionKey, transport: bool, now: float) -> None:
        if key.role == "server":
            call = self._invites.get(key)
            if call is not None:
                self._route(call.a, call.a.on_invite_timeout(now), now)
            return
        found = self._clients.pop(key, None)
        if found is None:
            return
        leg, purpose = found
        if purpose == "invite" and isinstance(leg, CalleeLeg):
            self._route(leg, leg.on_invite_timeout(now, transport), now)
        elif purpose != "cancel":
            self._route(leg, leg.on_timeout(purpose, now), now)

    def _on_cancel(self, ev: CancelReceived, now: float) -> None:
        call = self._invites.get(ev.invite_key) if ev.invite_key is not None else None
        self._reply(ev.request, 200 if call is not None else 481, now)
        if call is not None:
            self._route(call.a, call.a.on_cancel(now), now)

    def _ring_timeout(self, call: Call, now: float) -> None:
        """No answer within ring_timeout: CANCEL the callee, 480 to the caller."""
        if call.ended or not call.a.can("fail"):
            return
        if call.b is not None:
            call.b.disconnect(Disconnect("relay", 19), now)
        call.a.fail(Fail(480, 19, "no_answer"), now)
        self._end(call, "relay", 19, now)
        self._pump(call, now)

    # -- the call's queue and its end -----------------------------------------------
    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _job(self, call: Call, op: str, side: Side, sdp: bytes
             ) -> Callable[[], MediaJob | None]:
        if not sdp:
            return _nojob
        return lambda: (MediaJob(self._next(), call.id, op, side, sdp, handle=call.media)
                        if call.media is not None and not call.ended else None)

    def _enqueue(self, call: Call, make: Callable[[], MediaJob | None],
                 cont: Callable[..., None]) -> None:
        call.queue.append((make, cont))

    def _pump(self, call: Call, now: float) -> None:
        """Run queued continuations until one needs the media backend."""
        q = call.queue
        while q and call.busy is None:
            make, cont = q[0]
            job = make()
            if job is not None:
                call.busy = job
                self._jobs.append(job)
                return
            q.popleft()
            cont(None, None, now)

    def _arm(self, call: Call, name: str, deadline: float) -> None:
        call.timers[name] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, call.id, name))

    def _end(self, call: Call, by: str, cause: int, now: float) -> None:
        """The call is over: stamp it, release its media, then write its record."""
        if call.ended:
            return
        call.ended = True
        self.live -= 1
        call.released_by = by
        call.cause = cause
        call.timers.clear()
        call.times.stamp("caller", "end_at", now)
        if call.b is not None:
            call.times.stamp("callee", "end_at", now)

        def make() -> MediaJob | None:
            if call.media is None:
                return None
            return MediaJob(self._next(), call.id, "release", handle=call.media)

        def released(result: object, error: BaseException | None, now: float) -> None:
            call.recording = result
            self._finish(call)

        call.queue.append((make, released))

    def _finish(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self._invites.pop(call.a.key, None)
        self._dialogs.pop((call.a.invite.call_id, call.a.local_tag), None)
        b = call.b
        if b is not None:
            self._dialogs.pop((b.call_id, b.local_tag), None)
        for key in call.client_keys:
            if b is not None and key == b.key and b.state is LegState.CANCELLING:
                continue  # a 2xx may still cross our CANCEL: it must be ACKed and BYEd
            self._clients.pop(key, None)
        times = call.times
        times.legs["caller"]["sip_code"] = call.a.code
        if b is not None:
            times.legs["callee"]["sip_code"] = b.code
        answered = call.a.code == 200
        self._records.append(build_record(
            call_id=call.id, started_at=call.started_at, x=call.x, caller=call.caller,
            callee=call.callee, binding=call.binding, out_id=call.out_id,
            direction=call.direction, times=times, sip_code=call.a.code, cause=call.cause,
            released_by=call.released_by, unconnected="none" if answered or b else "error",
            recording=call.recording, end_reason=call.end_reason))
        if b is None or b.state is not LegState.CANCELLING:
            # Break the call <-> leg cycles (and the queue's closures) so that
            # reference counting frees the call now: left to the cycle collector,
            # every call was garbage it had to find, and its pauses were most of the
            # relay's p99 setup latency. A leg whose CANCEL a 2xx may still cross
            # keeps its call (it must ACK and BYE), and the collector takes it later.
            call.queue.clear()
            del call.a.call
            if b is not None:
                del b.call


def _nojob() -> MediaJob | None:
    return None
