"""The SIP call map: admission, transactions, dialogs and legs of every call.

:class:`CallMap` is sans-IO. The adapter feeds it datagrams (or parsed transaction
events) with ``now`` (wall-clock seconds, so records carry UTC times), drains
:meth:`CallMap.datagrams_to_send`, runs the :class:`MediaJob` s it asks for and hands
their results back through :meth:`CallMap.media_done`, passes the media backend's
events to :meth:`CallMap.media_event`, submits what :meth:`CallMap.take_call_events`
reports (the records of ended and refused calls among them), and re-arms one timer
from :meth:`CallMap.get_timer`.

This is the only part of the B2BUA that reads SIP requests for their meaning: which
source is a trusted trunk, Max-Forwards, Require, OPTIONS, which dialog or
transaction a message belongs to, and the dialled X, extension and caller of an
INVITE. Each admitted INVITE becomes a :class:`~.controller.CallController` with two
legs (:mod:`.legs`) that turn SIP into call-control events and back (sippy's split of
``CallMap.recvRequest`` from ``CallController.recvEvent``).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dialplan.numbers import InvalidNumber, normalise, split_extension
from dialplan.policy import Limit, Policy
from dialplan.route import Policies
from relay.guard import LeakGuard
from relay.media.backend import MediaEvent
from relay.sip import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    SipRequest,
    StrayResponse,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    system_random,
)
from relay.sip.digest import Credentials
from relay.sip.pike import Pike
from relay.sip.session_timer import MIN_SE_FLOOR, TIMER_TAG, uas_negotiate

from ._phases import Timer
from ._state import LegState
from .cdr import CallTimes, build_record
from .controller import CallController, ControlSettings, Table
from .egress import egress_ok
from .events import CallEvent, CallRefused, Fail, Incoming, MediaJob
from .legs import ALLOW, REL100, CalleeLeg, CallerLeg, _Leg, reason_header
from .overload import OverloadGuard
from .trunks import Trunk, TrunkSet

__all__ = ["CallMap", "Settings", "Wire"]

Address = tuple[str, int]


@dataclass
class Settings(ControlSettings):
    """Voice tunables (`[sip]` in relay.toml; see relay.io.voice)."""

    host: str = "127.0.0.1"  # the address we put in Via, Contact and From
    port: int = 5060
    outbound: Address = ("127.0.0.1", 5070)
    trunks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    no_early_media: tuple[str, ...] = ()  # trunks that get refusals unannounced
    symmetric: tuple[str, ...] = ()  # trunks (behind NAT) sent in-dialog requests at source
    # Outbound trunks ([[sip.trunk]]): empty means the one `outbound` address. Probed
    # with OPTIONS every probe_interval s when listed (0: never).
    outbound_trunks: tuple[Trunk, ...] = ()
    probe_interval: float = 30.0
    session_expires: int = 1800  # RFC 4028 session interval asked for and granted (0: off)
    min_se: int = 90  # the shortest session interval accepted (a shorter one: 422)
    # The least min_se may be: RFC 4028 §4's 90 s; lower only in tests ([sip] min_se_floor).
    min_se_floor: int = MIN_SE_FLOOR
    default_cc: str = ""
    max_calls: int = 5000
    cps: float = 0.0  # new calls per second admitted; 0 = no limit
    hangup_on_freeze: bool = False
    timers: TimerConfig = field(default_factory=TimerConfig)
    # Overload control (relay/b2bua/overload.py): the call map asks it per new INVITE,
    # the adapter feeds it measurements (socket queueing delay, loop lag, media jobs).
    overload: OverloadGuard = field(default_factory=OverloadGuard)
    # The egress leak guard (relay/guard.py): every message a leg sends is checked.
    guard: LeakGuard = field(default_factory=LeakGuard)
    # Digest credentials for the outbound trunk's 401/407 ([sip] trunk_auth_*; legs.py).
    trunk_auth: Credentials | None = None
    # Refusals outside a dialog go out once, without a 100 Trying, and are answered
    # again from a small cache (relay.sip.transaction.ReplyCache), as Kamailio's `sl`.
    stateless_refusals: bool = True
    # Per-source rate limit of sources that are not trunks (relay.sip.pike): more than
    # `rate_limit` datagrams in `rate_window` seconds bans the source for `rate_ban`
    # seconds; everything it sends meanwhile is dropped unanswered. 0: off.
    rate_limit: int = 0
    rate_window: float = 2.0
    rate_ban: float = 60.0


class Wire:
    """How legs send: through the transaction layer, remembering which leg asked."""

    def __init__(self, callmap: CallMap, s: Settings) -> None:
        self.callmap = callmap
        self.layer = callmap.layer
        self.host = s.host
        self.transport = "UDP"
        self.sent_by = f"{s.host}:{s.port}"
        self.outbound_host = s.outbound[0]
        self.session_expires = s.session_expires
        self.min_se = max(s.min_se_floor, s.min_se)
        self._contact_tail = f"@{s.host}:{s.port}>"
        self.tls_port: int | None = None  # set by the adapter when it listens on TLS

    def contact(self, user: str, transport: str = "UDP") -> str:
        """Our Contact: X at the relay, never anything of the other side; on TCP and
        TLS it names the transport (and the TLS port) so the peer comes back on it."""
        if transport == "TCP":
            return f"<sip:{user}{self._contact_tail[:-1]};transport=tcp>"
        if transport == "TLS" and self.tls_port is not None:
            return f"<sip:{user}@{self.host}:{self.tls_port};transport=tls>"
        return f"<sip:{user}{self._contact_tail}"

    def sent_by_for(self, transport: str) -> str:
        """The Via sent-by for requests on `transport` (TLS listens on its own port)."""
        if transport == "TLS" and self.tls_port is not None:
            return f"{self.host}:{self.tls_port}"
        return self.sent_by

    def request(self, leg: _Leg, purpose: str, req: SipRequest, dest: Address,
                now: float) -> TransactionKey:
        """Start a client transaction and remember (leg, purpose) for its responses."""
        if not egress_ok(self.callmap, leg, req, now):
            return TransactionKey("client", "blocked", req.method)  # never sent
        key = self.layer.send_request(req, dest, now)
        self.callmap._clients[key] = (leg, purpose)
        leg.client_keys.append(key)
        return key

    def respond(self, resp: Any, now: float, leg: _Leg) -> None:
        """Hand a response to its server transaction."""
        if egress_ok(self.callmap, leg, resp, now):
            self.layer.send_response(resp, now)

    def respond_reliably(self, resp: Any, now: float, leg: _Leg) -> None:
        """A provisional retransmitted until PRACKed (RFC 3262 §3)."""
        if egress_ok(self.callmap, leg, resp, now):
            self.layer.send_reliable_provisional(resp, now)

    def prack(self, key: TransactionKey) -> None:
        """The PRACK for INVITE `key`'s reliable provisional came: stop resending it."""
        self.layer.prack_received(key)

    def stateless(self, msg: SipRequest, dest: Address, leg: _Leg, now: float) -> None:
        """An ACK for a 2xx (RFC 3261 §13.2.2.4 sends it outside any transaction),
        queued in order with everything else."""
        if egress_ok(self.callmap, leg, msg, now):
            self.layer.send_stateless(msg, dest)


class CallMap:
    """The B2BUA core of one node (see the module docstring for the adapter's duties)."""

    def __init__(self, settings: Settings, table: Table, *,
                 clock_id: Callable[[], str] | None = None,
                 policies: Policies | None = None) -> None:
        self.settings = settings
        self.table = table
        self.policies: Policies = policies or _NoPolicies()  # relay.policies.PolicyBook
        self.layer = TransactionLayer(settings.timers,
                                      stateless_refusals=settings.stateless_refusals)
        self.pike = (Pike(settings.rate_limit, settings.rate_window, settings.rate_ban)
                     if settings.rate_limit > 0 else None)
        self.wire = Wire(self, settings)
        self.calls: dict[str, CallController] = {}  # live and finishing, by relay call id
        self.live = 0  # calls not yet ended (the overload limit counts these)
        self.draining = False
        self._clients: dict[TransactionKey, tuple[_Leg, str]] = {}
        self._dialogs: dict[tuple[str, str], _Leg] = {}
        self._invites: dict[TransactionKey, CallController] = {}
        self._heap: list[tuple[float, int, str, Timer]] = []
        self._seq = 0
        self._jobs: list[MediaJob] = []
        self._events: list[CallEvent] = []
        self._trust: dict[str, bool] = {}
        self._nets = [ipaddress.ip_network(n, strict=False) for n in settings.trunks]
        self._quiet = [ipaddress.ip_network(n, strict=False) for n in settings.no_early_media]
        self._symmetric = [ipaddress.ip_network(n, strict=False) for n in settings.symmetric]
        self._tokens = settings.cps
        self._tokens_at = 0.0
        self._new_id = clock_id or (lambda: system_random(8).hex())
        self.counts: dict[str, int] = {
            "invites": 0, "bridged": 0, "answered": 0, "refused": 0, "untrusted": 0,
            "overload": 0, "media_errors": 0, "counter_errors": 0, "hook_errors": 0,
            "rate_limited": 0,
        }
        self.refusals: dict[int, int] = {}
        self._leaks: list[tuple[CallController, float]] = []  # blocked: hang up next
        self.trunks = (TrunkSet(list(settings.outbound_trunks)) if settings.outbound_trunks
                       else TrunkSet.single(settings.outbound))
        # call id -> the trunks (and their addresses) it has yet to try
        self._plans: dict[str, list[tuple[Trunk, Address]]] = {}
        self._probes: dict[TransactionKey, tuple[Trunk, Address]] = {}
        # The first probes go out at the first timer; a lone --outbound is never probed.
        self._probe_due: float | None = (0.0 if settings.outbound_trunks
                                         and settings.probe_interval > 0 else None)

    # -- adapter interface ----------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Address, now: float, *,
                         reliable: bool = False) -> None:
        """Feed one datagram (never raises on garbage: the layer answers 400 itself).

        A source over its rate limit (not a trunk) is dropped here, unparsed."""
        pike = self.pike
        if (pike is not None and not self._trusted(source[0])
                and source[0] not in self.trunks.hosts()
                and not pike.allow(source[0], now)):
            self.counts["rate_limited"] += 1
            return
        self.handle_events(self.layer.receive_datagram(data, source, now, reliable=reliable),
                           now)

    def handle_events(self, events: list[Event], now: float) -> None:
        """Act on transaction-layer events (dispatched by type)."""
        for ev in events:
            _EVENTS[type(ev)](self, ev, now)
        layer = self.layer
        if layer._trying:
            layer.send_trying(now)  # the 100s of INVITEs not refused at once

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Everything to transmit, in order."""
        while self._leaks:  # calls the leak guard stopped: end them (outside the leg)
            call, now = self._leaks.pop()
            call.hangup(now, cause=41, reason="leak_blocked")
        return self.layer.datagrams_to_send()

    def take_jobs(self) -> list[MediaJob]:
        """Media work to run (see MediaJob)."""
        jobs, self._jobs = self._jobs, []
        return jobs

    def take_call_events(self) -> list[CallEvent]:
        """Call events in order: ringing, answered, and ended or refused with the record
        (kind "call") to submit to the record writer."""
        events, self._events = self._events, []
        return events

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
        if self._probe_due is not None:
            mine = self._probe_due if mine is None else min(mine, self._probe_due)
        theirs = self.layer.get_timer()
        if mine is None:
            return theirs
        return mine if theirs is None else min(mine, theirs)

    def handle_timer(self, now: float) -> None:
        """Fire every due timer: transaction timers (RFC 3261 A-M) and call timers."""
        self.handle_events(self.layer.handle_timer(now), now)
        if self._probe_due is not None and self._probe_due <= now:
            self._probe(now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, cid, name = heapq.heappop(heap)
            call = self.calls.get(cid)
            if call is None or call.timers.get(name) != deadline:
                continue
            call.on_timer(name, now)

    def media_done(self, job: MediaJob, result: Any, error: BaseException | None,
                   now: float) -> None:
        """The adapter finished `job`: the call goes on with its result."""
        call = self.calls.get(job.call_id)
        if call is not None:
            call.media_done(job, result, error, now)

    def media_event(self, ev: MediaEvent, now: float) -> None:
        """A digit or a prompt's end reported by the media backend."""
        call = self.calls.get(ev.call_id)
        if call is not None:
            call.media_event(ev, now)

    def hangup(self, call: CallController, now: float, *, cause: int = 16,
               reason: str = "") -> None:
        """The relay ends a call (max duration, freeze, drain, operator)."""
        call.hangup(now, cause=cause, reason=reason)

    @property
    def dialog_count(self) -> int:
        """Dialogs (either leg) the map still routes in-dialog requests by."""
        return len(self._dialogs)

    def hangup_all(self, now: float) -> int:
        """End every live call (the end of a drain); returns how many."""
        live = [c for c in self.calls.values() if not c.ended]
        for call in live:
            call.hangup(now, reason="drain")
        return len(live)

    def live_calls(self) -> list[dict[str, Any]]:
        """A read-only snapshot of the calls not yet ended, oldest first: what
        `GET /v1/calls/live` shows (times in seconds and leg times in UTC ms, as a
        record stores them; real numbers: the API masks them per role)."""
        out: list[dict[str, Any]] = []
        for c in self.calls.values():
            if c.ended:
                continue
            legs = {leg: dict(v) for leg, v in c.times.legs.items()
                    if leg == "caller" or v["invite_at"] is not None}
            out.append({"id": c.id, "x": c.x, "ext": c.ext, "caller": c.caller,
                        "callee": c.callee, "binding": c.binding, "out_id": c.out_id,
                        "direction": c.direction, "phase": c.phase.value,
                        "started_at": c.started_at, "legs": legs,
                        "answered_at": legs["caller"]["answer_at"],
                        "recording": c.record_media})
        out.sort(key=lambda d: float(d["started_at"]))
        return out

    def hangup_call(self, call_id: str, now: float, *, reason: str = "operator") -> bool:
        """An operator ends one live call (BYE, CANCEL or a final response to each leg,
        through the controller's own ending path); False when no such call is live."""
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return False
        call.hangup(now, cause=16, reason=reason)
        return True

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
            call.hangup(now, cause=41, reason="media_timeout")
        return len(ended)

    def sweep(self, now: float) -> None:
        """Once a second: hang up calls whose binding froze, if so configured."""
        if not self.settings.hangup_on_freeze:
            return
        for call in [c for c in self.calls.values() if not c.ended and c.binding]:
            entry = self.table.lookup(call.x, call.caller, call.ext)
            if entry is None or entry.id != call.binding or entry.effective_state(now) != "active":
                call.hangup(now, cause=22, reason="frozen")

    # -- what the controllers ask of the call map (controller.Host) -----------------------
    def place(self, call: CallController) -> CalleeLeg | None:
        """A callee leg for `call`: a new dialog toward the first trunk of its plan
        (None when no trunk has an address)."""
        plan = self._plans[call.id] = self.trunks.plan()
        return self._leg_to(call, *plan.pop(0)) if plan else None

    def failover(self, call: CallController, failed: Any) -> CalleeLeg | None:
        """The callee leg toward `failed`'s trunk gave up (408, 503, transport): mark
        that target down and place the call on the next target of its plan, if any."""
        trunk = self.trunks.by_name.get(getattr(failed, "trunk", "") or "")
        if trunk is not None:
            trunk.failovers += 1
            self.trunks.mark(trunk, False, f"call failed {failed.code}",
                             getattr(failed, "target", None))
        if isinstance(failed, CalleeLeg):
            self._dialogs.pop((failed.call_id, failed.local_tag), None)
            for key in failed.client_keys:
                self._clients.pop(key, None)
            failed.control = None
        plan = self._plans.get(call.id)
        return self._leg_to(call, *plan.pop(0)) if plan else None

    def _leg_to(self, call: CallController, trunk: Trunk, address: Address) -> CalleeLeg:
        trunk.calls += 1
        b = CalleeLeg(self.wire, call.x, address)
        b.trunk = trunk.name
        b.target = address
        b.to_host = trunk.host
        b.symmetric = self.wire.transport != "UDP" or self._in(address[0], self._symmetric)
        b.control = call
        self._dialogs[(b.call_id, b.local_tag)] = b
        return b

    def arm(self, call: CallController, timer: Timer, deadline: float) -> None:
        """Remember a call's timer (a re-armed one leaves a stale heap entry behind)."""
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, call.id, timer))

    def job(self, job: MediaJob) -> None:
        """Queue media work for the adapter."""
        self._jobs.append(job)

    def job_seq(self) -> int:
        """A fresh media job number."""
        self._seq += 1
        return self._seq

    def emit(self, event: CallEvent) -> None:
        """Queue a call event for the adapter."""
        self._events.append(event)

    def new_id(self) -> str:
        """A fresh relay call id."""
        return self._new_id()

    def leaked(self, call: CallController, now: float) -> None:
        """The leak guard blocked a message of `call`: hang it up when the current
        step is over (see datagrams_to_send)."""
        self._leaks.append((call, now))

    def ending(self, call: CallController) -> None:
        """The call stops counting as live (its media may still be releasing)."""
        self.live -= 1

    def finished(self, call: CallController) -> None:
        """Forget a call whose record is out: its dialogs, transactions and cycles."""
        self.calls.pop(call.id, None)
        self._plans.pop(call.id, None)
        a = call.a
        assert isinstance(a, CallerLeg)
        self._invites.pop(a.key, None)
        self._dialogs.pop((a.invite.call_id, a.local_tag), None)
        b = call.b if isinstance(call.b, CalleeLeg) else None
        cancelling = b is not None and b.state is LegState.CANCELLING
        keep = b.key if b is not None and cancelling else None
        if b is not None:
            self._dialogs.pop((b.call_id, b.local_tag), None)
        for leg in (a, b):
            if leg is None:
                continue
            for key in leg.client_keys:
                if key != keep:  # a 2xx may still cross our CANCEL: it must be ACKed and BYEd
                    self._clients.pop(key, None)
        if not cancelling:
            # Break the controller <-> leg cycles (and the queue's closures) so that
            # reference counting frees the call now: left to the cycle collector,
            # every call was garbage it had to find, and its pauses were most of the
            # relay's p99 setup latency. A leg whose CANCEL a 2xx may still cross
            # keeps its controller (it must ACK and BYE), and the collector takes it later.
            call.queue.clear()
            a.control = None
            if b is not None:
                b.control = None

    # -- transaction events -----------------------------------------------------------
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
            # A draining node fails the balancer's OPTIONS probe, so it gets no new calls.
            self._reply(req, 503 if self.draining else 200, now,
                        [("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._reply(req, 481, now)
        else:
            self._reply(req, 405, now, [("Allow", ALLOW)])  # RFC 3261 §8.2.1

    def _on_ack(self, ev: AckReceived, now: float) -> None:
        leg = self._dialogs.get((ev.request.call_id, ev.request.to_tag or ""))
        if isinstance(leg, CallerLeg) and leg.control is not None:
            answer = leg.on_ack(ev.request)
            if answer is not None:
                leg.control.late_answer(answer, now)

    def _on_response(self, ev: ResponseReceived, now: float) -> None:
        resp, key = ev.response, ev.key
        if self._probes and key in self._probes:
            if resp.status >= 200:  # any answer but 503 means the target is there
                trunk, target = self._probes.pop(key)
                self.trunks.mark(trunk, resp.status != 503, f"OPTIONS {resp.status}", target)
            return
        found = self._clients.get(key)
        if found is None:
            return
        leg, purpose = found
        if resp.status >= 200 and (purpose != "invite" or resp.status >= 300
                                   or leg.control is None or leg.control.ended):
            del self._clients[key]  # a 2xx to INVITE may be retransmitted: keep the key
        if purpose == "invite" and isinstance(leg, CalleeLeg):
            if resp.status != 503 and leg.target is not None:
                answering = self.trunks.by_name.get(leg.trunk or "")
                if answering is not None and answering.down:  # it answers: up again
                    self.trunks.mark(answering, True, target=leg.target)
            self._route(leg, leg.on_invite_response(resp, now), now)
        elif purpose != "cancel":
            self._route(leg, leg.on_response(purpose, resp, now), now)

    def _on_timeout(self, ev: TransactionTimeout | TransportError, now: float) -> None:
        key = ev.key
        if key.role == "server":
            call = self._invites.get(key)
            if call is not None and getattr(ev, "timer", "") == "P":
                # RFC 3262 §3: no PRACK for 64*T1: reject the INVITE with a 5xx.
                if call.a.can("fail"):
                    call.a.deliver(Fail(504, 102, "no_prack"), now)
                call.hangup(now, cause=102, reason="no_prack")
                return
            if call is not None:
                a = call.a
                assert isinstance(a, CallerLeg)
                self._route(a, a.on_invite_timeout(now), now)
            return
        probe = self._probes.pop(key, None)
        if probe is not None:
            self.trunks.mark(probe[0], False, "OPTIONS timeout", probe[1])
            return
        found = self._clients.pop(key, None)
        if found is None:
            return
        leg, purpose = found
        if purpose == "invite" and isinstance(leg, CalleeLeg):
            self._route(leg, leg.on_invite_timeout(now, isinstance(ev, TransportError)), now)
        elif purpose != "cancel":
            self._route(leg, leg.on_timeout(purpose, now), now)

    def _on_cancel(self, ev: CancelReceived, now: float) -> None:
        call = self._invites.get(ev.invite_key) if ev.invite_key is not None else None
        self._reply(ev.request, 200 if call is not None else 481, now)
        if call is not None:
            a = call.a
            assert isinstance(a, CallerLeg)
            self._route(a, a.on_cancel(now), now)

    def _on_stray(self, ev: StrayResponse, now: float) -> None:
        """A late retransmission for a finished call: nothing to do."""

    def _route(self, leg: _Leg, events: list[Any], now: float) -> None:
        control = leg.control
        if control is not None and events:
            control.leg_events(leg, events, now)
        elif control is not None:
            control._pump(now)

    # -- trunk probes -------------------------------------------------------------------
    def _probe(self, now: float) -> None:
        """OPTIONS to every target of every trunk (one outstanding probe per target)."""
        self._probe_due = now + self.settings.probe_interval
        busy = {(id(trunk), target) for trunk, target in self._probes.values()}
        w = self.wire
        for trunk, address in ((t, a) for t in self.trunks.trunks for a in t.targets):
            if (id(trunk), address) in busy:
                continue
            req = SipRequest("OPTIONS", f"sip:{address[0]}:{address[1]}", [
                ("Via", f"SIP/2.0/{w.transport} {w.sent_by};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:relay@{w.host}>;tag={new_tag()}"),
                ("To", f"<sip:{trunk.host}>"),
                ("Call-ID", new_call_id(w.host)),
                ("CSeq", "1 OPTIONS"),
                ("Allow", ALLOW),
            ], b"")
            self._probes[self.layer.send_request(req, address, now)] = (trunk, address)

    # -- admission ----------------------------------------------------------------------
    def _unsupported(self, req: SipRequest, now: float) -> bool:
        """RFC 3261 §8.2.2.3: a Require naming an extension we lack (100rel...; we
        implement only session timers) gets 420 with those option-tags in Unsupported."""
        if "require" not in req.headers:
            return False
        tags = [t for t in req.headers.get_list("require")
                if t and t.lower() not in (TIMER_TAG, REL100)]
        if not tags:
            return False
        self._reply(req, 420, now, [("Unsupported", ", ".join(tags))])
        return True

    def _reply(self, req: SipRequest, status: int, now: float,
               extra: list[tuple[str, str]] | None = None) -> None:
        resp = build_response(req, status, to_tag=new_tag(), extra_headers=extra or ())
        self.layer.send_response(resp, now)

    def _in(self, host: str, nets: list[Any]) -> bool:
        if not nets:
            return False  # the usual case for the optional lists: no address parsed
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in nets)

    def _trusted(self, host: str) -> bool:
        ok = self._trust.get(host)
        if ok is None:
            ok = self._in(host, self._nets)
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

    def _on_invite(self, req: SipRequest, key: TransactionKey, source: Address,
                   now: float) -> None:
        self.counts["invites"] += 1
        cc = self.settings.default_cc
        ext: str | None = None
        try:
            dialled, ext = split_extension(getattr(req.request_uri, "user", None) or "")
            x: str | None = normalise(dialled, cc)
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
            # Cheap: a counter, and a record for one refusal in `sample_every` only.
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
        incoming = Incoming(x, caller, ext, req.body,
                            70 if mf is None else mf,
                            not self._quiet or not self._in(source[0], self._quiet))
        session, min_se = uas_negotiate(req, self.settings.session_expires,
                                        self.wire.min_se, now)
        if min_se is not None:
            # RFC 4028 §8.1: too short a session: 422 with the shortest we accept.
            self.counts["refused"] += 1
            self.refusals[422] = self.refusals.get(422, 0) + 1
            self._reply(req, 422, now, [("Min-SE", str(min_se))])
            return
        call_id = self._new_id()
        a = CallerLeg(self.wire, x, req, key, source)
        a.session = session
        # TCP and TLS answer on the connection the INVITE came on (it is the only way
        # back to most trunks); UDP follows the route set or Contact unless configured.
        a.symmetric = req.top_via.transport.upper() != "UDP" or self._in(source[0],
                                                                         self._symmetric)
        call = CallController(self, self.settings, self.table, call_id, a, incoming, now)
        a.control = call
        self.calls[call_id] = call
        self.live += 1
        self._dialogs[(req.call_id, a.local_tag)] = a
        self._invites[key] = call
        call.start(now)

    def _refuse(self, req: SipRequest, x: str | None, caller: str | None, code: int,
                cause: int, unconnected: str, now: float,
                extra: list[tuple[str, str]] | None = None) -> None:
        """Refuse before any call exists (loops, overload, an undialable X): cheap."""
        self.counts["refused"] += 1
        self.refusals[code] = self.refusals.get(code, 0) + 1
        self._reply(req, code, now, [reason_header(cause, unconnected), *(extra or ())])
        self._refused_record(req, x, caller, code, cause, unconnected, now)

    def _refused_record(self, req: SipRequest, x: str | None, caller: str | None, code: int,
                        cause: int, unconnected: str, now: float) -> None:
        times = CallTimes()
        times.stamp("caller", "invite_at", now)
        times.stamp("caller", "end_at", now)
        times.legs["caller"]["sip_code"] = code
        call_id = self._new_id()
        self._events.append(CallRefused(call_id, now, build_record(
            call_id=call_id, started_at=now, x=x, caller=caller, callee=None,
            binding=None, out_id=None, direction=None, times=times, sip_code=code,
            cause=cause, released_by="relay", unconnected=unconnected, recording=None)))


class _NoPolicies:
    """No policies and an empty blocklist (a call map built without a node)."""

    def for_binding(self, name: str | None) -> Policy | None:
        return None

    def blocked(self, caller: str | None, x: str, now: float) -> bool:
        return False

    def admit(self, key: str, now: float, limit: Limit) -> bool:
        return True

    def score_now(self, caller: str, now: float) -> int | None:
        return 0


# Transaction-layer event -> handler (dispatch by table, STYLE.md).
_EVENTS: dict[type, Callable[[CallMap, Any, float], None]] = {
    RequestReceived: CallMap._on_request,
    ResponseReceived: CallMap._on_response,
    AckReceived: CallMap._on_ack,
    CancelReceived: CallMap._on_cancel,
    TransactionTimeout: CallMap._on_timeout,
    TransportError: CallMap._on_timeout,
    StrayResponse: CallMap._on_stray,
}
