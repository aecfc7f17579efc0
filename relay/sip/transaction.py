"""The SIP transaction layer (RFC 3261 §17, RFC 6026), sans-IO.

One :class:`TransactionLayer` owns every client and server transaction. The
adapter feeds it parsed messages (or raw datagrams) with the time, drains
:meth:`TransactionLayer.datagrams_to_send`, and re-arms one timer from
:meth:`TransactionLayer.get_timer`; everything the TU must know comes back as
events (see :mod:`relay.sip.events`). State transitions live in :mod:`._state`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass

from ._state import INITIAL, Kind, State, TransactionStateError, transition
from .events import (
    AckReceived,
    Address,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from .grammar import MAGIC_COOKIE, SipParseError
from .message import (
    Headers,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    stamp_via,
)

__all__ = [
    "LocalProtocolError",
    "TimerConfig",
    "TransactionLayer",
    "TransactionStateError",
    "build_ack_for_non2xx",
    "build_cancel",
]


class LocalProtocolError(Exception):
    """The TU misused the API (a *local* error): unknown transaction, no branch..."""


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / table 4 base values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0  # §17.1.1.2: "at least 32 seconds" on unreliable transports


class ReplyCache:
    """Stateless refusals already sent, by server transaction key, bounded by bytes.

    Kamailio's `sl` answers a request without creating a transaction; a
    retransmission of that request is simply answered again. Processing it again
    would give the same answer but a new To tag, so the answer is kept here for one
    transaction lifetime (64*T1) and sent again as it was. Entries are evicted
    oldest first when the bytes held would pass ``max_bytes``; an evicted entry only
    means a retransmission is processed afresh.
    """

    #: Estimated bytes of one entry besides its message (key, tuple, dict slot).
    ENTRY = 300

    def __init__(self, max_bytes: int = 2 << 20, ttl: float = 32.0) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.bytes = 0
        self._entries: OrderedDict[TransactionKey, tuple[float, Address, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: TransactionKey, peer: Address, data: bytes, now: float) -> None:
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[2]) + self.ENTRY
        entries[key] = (now + self.ttl, peer, data)
        self.bytes += len(data) + self.ENTRY
        while entries and (self.bytes > self.max_bytes
                           or next(iter(entries.values()))[0] <= now):
            _, (_, _, gone) = entries.popitem(last=False)
            self.bytes -= len(gone) + self.ENTRY

    def get(self, key: TransactionKey, peer: Address, now: float) -> bytes | None:
        """The answer sent to `peer` for `key`, while it is fresh."""
        hit = self._entries.get(key)
        if hit is None or hit[0] <= now or hit[1] != peer:
            return None
        return hit[2]


class _Txn:
    """One transaction's state; behaviour lives in the layer and the table."""

    __slots__ = (
        "ack_index",
        "acked",
        "interval",
        "key",
        "kind",
        "last",
        "peer",
        "rel1xx",
        "reliable",
        "request",
        "state",
        "timers",
    )

    def __init__(self, kind: Kind, key: TransactionKey, request: SipRequest, peer: Address,
                 reliable: bool, t1: float) -> None:
        self.kind = kind
        self.key = key
        self.state: State = INITIAL[kind]
        # Dropped once the transaction only lingers (see TransactionLayer._linger).
        self.request: SipRequest | None = request
        self.peer = peer
        self.reliable = reliable
        self.last: bytes | None = None  # the last message sent, for retransmission
        self.timers: dict[str, float] = {}  # armed timer name -> deadline
        self.interval = t1  # current retransmission interval for A/E/G
        self.acked = False
        self.ack_index: tuple[str, int, str] | None = None
        # A reliable provisional awaiting PRACK (RFC 3262 §3): bytes, interval, give-up.
        self.rel1xx: tuple[bytes, float, float] | None = None


def _server_key(msg: SipRequest | SipResponse) -> TransactionKey:
    """RFC 3261 §17.2.3: branch + sent-by + method (ACK matches INVITE).

    Works on the request and on the TU's response to it (same top Via and CSeq).
    """
    via = msg.top_via
    cseq = msg.cseq
    method = "INVITE" if cseq.method == "ACK" else cseq.method
    sent_by = via.host if via.port is None else f"{via.host}:{via.port}"
    branch = via.branch
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        # RFC 3261 §17.2.3 RFC 2543 fallback, simplified: without the cookie a
        # request is identified by Call-ID, CSeq number and From tag (the To tag is
        # left out so the ACK for a non-2xx, which carries it, still matches).
        branch = f"rfc2543;{msg.call_id};{cseq.number};{msg.from_tag}"
    return TransactionKey("server", branch, method, sent_by)


def _client_key(msg: SipRequest | SipResponse) -> TransactionKey | None:
    """RFC 3261 §17.1.3: top Via branch + CSeq method."""
    branch = msg.top_via.branch
    if branch is None:
        return None
    return TransactionKey("client", branch, msg.cseq.method)


def build_ack_for_non2xx(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 §17.1.1.3)."""
    h = Headers()
    h.add("Via", request.headers.get_list("via")[0])
    for name in ("from", "call-id"):
        h.add(name, request.headers.get(name) or "")
    h.add("To", response.headers.get("to") or "")
    h.add("CSeq", f"{request.cseq.number} ACK")
    h.add("Max-Forwards", "70")
    for route in request.headers.get_all("route"):
        h.add("Route", route)
    return SipRequest("ACK", request.uri, h)


def build_cancel(request: SipRequest) -> SipRequest:
    """A CANCEL for a pending INVITE (RFC 3261 §9.1): same branch, CSeq number, Route."""
    h = Headers()
    h.add("Via", request.headers.get_list("via")[0])
    for name in ("from", "to", "call-id"):
        h.add(name, request.headers.get(name) or "")
    h.add("CSeq", f"{request.cseq.number} CANCEL")
    h.add("Max-Forwards", "70")
    for route in request.headers.get_all("route"):
        h.add("Route", route)
    return SipRequest("CANCEL", request.uri, h)


_RESP_INPUT = {1: "1xx", 2: "2xx"}
# States in which a transaction only absorbs retransmissions until a timer ends it.
_LINGERING = frozenset((State.ACCEPTED, State.COMPLETED, State.CONFIRMED))
# Server states before any response: a refusal sent there may be stateless.
_FRESH = frozenset((State.PROCEEDING, State.TRYING))


def _class_input(prefix: str, status: int) -> str:
    return prefix + _RESP_INPUT.get(status // 100, "3456")


class TransactionLayer:
    """All transactions of one SIP endpoint, driven by messages and ``now``.

    ``reliable`` is the default transport kind (per call it can be overridden):
    on a reliable transport timers A/E/G are not used and D/I/J/K are zero.
    ``auto_trying`` makes INVITE server transactions send 100 Trying at once
    (RFC 3261 §17.2.1); turn it off when the TU always answers within 200 ms.
    ``stamp_received`` adds received/rport to the top Via of new requests
    (RFC 3261 §18.2.1, RFC 3581). Responses always go back to the address the
    request came from (symmetric response routing, as RFC 3581 asks with rport).

    ``stateless_refusals`` (as Kamailio's `sl`): a 3xx-6xx answered to a request
    before any provisional response is sent once, its transaction forgotten at once,
    and no timer retransmits it; a retransmission of the request gets the same bytes
    again from a :class:`ReplyCache` and its ACK is absorbed. An unanswered refusal
    flood then costs one datagram back per datagram in (amplification 1, not ~12)
    and no state for 32 s. With it, ``auto_trying`` defers the 100 Trying until the
    TU has seen the request: :meth:`send_trying` sends it for every INVITE the TU
    did not answer at once (a refusal made then goes out without a 100).
    """

    def __init__(self, timers: TimerConfig | None = None, *, reliable: bool = False,
                 auto_trying: bool = True, stamp_received: bool = True,
                 stateless_refusals: bool = False, reply_cache_bytes: int = 2 << 20) -> None:
        self.config = timers or TimerConfig()
        self.reliable = reliable
        self.auto_trying = auto_trying
        self.stamp_received = stamp_received
        self.stateless_refusals = stateless_refusals
        self.replies = ReplyCache(reply_cache_bytes, 64 * self.config.t1)
        self._trying: list[TransactionKey] = []  # INVITEs whose 100 waits for the TU
        self._clients: dict[TransactionKey, _Txn] = {}
        self._servers: dict[TransactionKey, _Txn] = {}
        # (Call-ID, CSeq number, From tag) -> accepted INVITE server transaction,
        # so a 2xx ACK (new branch) can stop the 2xx retransmissions.
        self._accepted: dict[tuple[str, int, str], _Txn] = {}
        self._heap: list[tuple[float, int, TransactionKey, str]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self.stats = {"malformed": 0, "dropped": 0, "stray_responses": 0,
                      "stateless_replies": 0, "replies_resent": 0}

    # -- introspection ----------------------------------------------------------------
    def __len__(self) -> int:
        """Live transactions (client and server)."""
        return len(self._clients) + len(self._servers)

    def state_of(self, key: TransactionKey) -> State | None:
        """The state of a live transaction, or None when it is gone."""
        txn = (self._clients if key.role == "client" else self._servers).get(key)
        return None if txn is None else txn.state

    # -- output ---------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain the messages to transmit, in order, as (bytes, address)."""
        out, self._out = self._out, []
        return out

    def send_stateless(self, msg: SipRequest | SipResponse, dest: Address) -> None:
        """Queue a message outside any transaction (2xx ACK, a reply to garbage)."""
        self._out.append((bytes(msg), dest))

    # -- timers -----------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest pending deadline, or None when no timer is armed."""
        heap = self._heap
        while heap:
            deadline, _, key, name = heap[0]
            txn = (self._clients if key.role == "client" else self._servers).get(key)
            if txn is not None and txn.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the timer was stopped or its txn ended
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``; return the resulting events."""
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, key, name = heapq.heappop(heap)
            txn = (self._clients if key.role == "client" else self._servers).get(key)
            if txn is None or txn.timers.get(name) != deadline:
                continue
            del txn.timers[name]
            if name == "P":
                self._resend_reliable(txn, now, events)
                continue
            self._apply(txn, "timer_" + name, now, None, events)
        return events

    def _start(self, txn: _Txn, name: str, event: str, now: float) -> bool:
        """Arm timer ``name``; return True when it is zero and fires at once."""
        cfg = self.config
        if name in "AEG":
            if txn.reliable and not (name == "G" and txn.state is State.ACCEPTED):
                return False  # §17.1.1.2, §17.1.2.2, §17.2.1: no retransmission on TCP
            if not event.startswith("timer_"):
                txn.interval = cfg.t1
            elif name == "A":
                txn.interval *= 2  # §17.1.1.2: A doubles without a cap
            elif name == "E" and txn.state is State.PROCEEDING:
                txn.interval = cfg.t2  # §17.1.2.2: in Proceeding E fires every T2
            else:
                txn.interval = min(txn.interval * 2, cfg.t2)
            delay = txn.interval
        elif name in "BFHLM":
            delay = 64 * cfg.t1
        elif name == "D":
            delay = 0.0 if txn.reliable else cfg.timer_d
        elif name == "J":
            delay = 0.0 if txn.reliable else 64 * cfg.t1
        else:  # I, K
            delay = 0.0 if txn.reliable else cfg.t4
        if delay <= 0:
            return True
        deadline = now + delay
        txn.timers[name] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, txn.key, name))
        return False

    def _arm(self, txn: _Txn, name: str, deadline: float) -> None:
        """Arm a timer outside the state table (P: reliable provisionals)."""
        txn.timers[name] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, txn.key, name))

    # -- the state machine driver -----------------------------------------------------
    def _apply(self, txn: _Txn, event: str, now: float,
               msg: SipRequest | SipResponse | None, events: list[Event],
               source: Address | None = None) -> None:
        state, actions = transition(txn.kind, txn.state, event)
        txn.state = state
        immediate: list[str] = []
        for act in actions:
            if act == "send":
                assert msg is not None
                txn.last = bytes(msg)
                self._out.append((txn.last, txn.peer))
            elif act == "resend":
                if txn.last is not None:
                    self._out.append((txn.last, txn.peer))
            elif act == "pass":
                if isinstance(msg, SipResponse):
                    events.append(ResponseReceived(msg, txn.key))
                elif isinstance(msg, SipRequest):  # a 2xx ACK reached an Accepted IST
                    txn.acked = True
                    events.append(AckReceived(msg, source or txn.peer, txn.key))
            elif act == "ack":
                assert isinstance(msg, SipResponse) and txn.request is not None
                self._out.append((bytes(build_ack_for_non2xx(txn.request, msg)), txn.peer))
            elif act.startswith("start_"):
                if self._start(txn, act[6:], event, now):
                    immediate.append(act[6:])
            elif act.startswith("stop_"):
                txn.timers.pop(act[5:], None)
            elif act == "timeout":
                events.append(TransactionTimeout(txn.key, event[6:]))
            elif act == "timeout_unacked":
                if not txn.acked:
                    events.append(TransactionTimeout(txn.key, event[6:]))
            elif act == "transport_error":
                events.append(TransportError(txn.key))
        if txn.state is State.TERMINATED:
            self._remove(txn)
            return
        if txn.state is State.ACCEPTED and txn.kind is Kind.IST and txn.ack_index is None:
            req = txn.request
            assert req is not None
            txn.ack_index = (req.call_id, req.cseq.number, req.from_tag or "")
            self._accepted[txn.ack_index] = txn
        if txn.state in _LINGERING and txn.request is not None:
            self._linger(txn)
        for name in immediate:
            self._apply(txn, "timer_" + name, now, None, events)
            if txn.state is State.TERMINATED:
                break

    @staticmethod
    def _linger(txn: _Txn) -> None:
        """Forget what a transaction that only absorbs retransmissions no longer needs.

        RFC 3261 keeps a finished transaction for up to 32 s (Timers D, J, L, M) to
        absorb retransmissions. At 1,000 calls/s that is ~100,000 transactions, and
        with their parsed requests millions of objects the garbage collector walks:
        its pauses were most of the relay's p99 setup latency. A server transaction
        answers a retransmission with `last` (its response); a client transaction
        needs its request only to ACK a retransmitted 3xx-6xx (INVITE, Completed).
        """
        if txn.kind is Kind.ICT and txn.state is State.COMPLETED:
            txn.last = None  # the INVITE is not sent again
            return
        txn.request = None
        if txn.kind is Kind.ICT or txn.kind is Kind.NICT:
            txn.last = None

    def _remove(self, txn: _Txn) -> None:
        txn.timers.clear()
        (self._clients if txn.key.role == "client" else self._servers).pop(txn.key, None)
        if txn.ack_index is not None and self._accepted.get(txn.ack_index) is txn:
            del self._accepted[txn.ack_index]

    def _remote(self, txn: _Txn, event: str, now: float, msg: SipRequest | SipResponse,
                events: list[Event], source: Address | None = None) -> None:
        """Apply a peer-triggered input; one the table forbids is dropped, not raised."""
        try:
            self._apply(txn, event, now, msg, events, source)
        except TransactionStateError:
            self.stats["dropped"] += 1

    # -- TU -> network ----------------------------------------------------------------
    def send_request(self, request: SipRequest, dest: Address, now: float, *,
                     reliable: bool | None = None) -> TransactionKey:
        """Start a client transaction for ``request`` and queue it for ``dest``.

        The request must carry a top Via with an RFC 3261 branch (z9hG4bK...).
        An ACK is not a transaction: use :meth:`send_stateless`.
        """
        if request.method == "ACK":
            raise LocalProtocolError("ACK is sent with send_stateless, not in a transaction")
        try:
            key = _client_key(request)
        except SipParseError as exc:
            raise LocalProtocolError(f"request lacks Via or CSeq: {exc}") from exc
        if key is None or not key.branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError("top Via needs a branch starting with z9hG4bK")
        if key in self._clients:
            raise LocalProtocolError(f"client transaction {key} already exists")
        kind = Kind.ICT if request.method == "INVITE" else Kind.NICT
        txn = _Txn(kind, key, request, dest, self.reliable if reliable is None else reliable,
                   self.config.t1)
        self._clients[key] = txn
        txn.last = bytes(request)
        self._out.append((txn.last, dest))
        first, final = ("A", "B") if kind is Kind.ICT else ("E", "F")
        self._start(txn, first, "send", now)
        self._start(txn, final, "send", now)
        if request.method == "CANCEL":
            self._guard_cancelled_invite(key, now)
        return key

    def _guard_cancelled_invite(self, cancel_key: TransactionKey, now: float) -> None:
        """RFC 3261 §9.1: with no final response to the INVITE 64*T1 after its CANCEL,
        the client transaction is destroyed. Proceeding has no timer of its own
        (§17.1.1.2), so without this an INVITE whose final response never comes (a
        peer gone after its 1xx, a 487 that cannot be matched) would live for ever.
        Timer B is re-armed; the TU hears of it as a TransactionTimeout."""
        txn = self._clients.get(cancel_key._replace(method="INVITE"))
        if txn is not None and txn.state is State.PROCEEDING:
            self._start(txn, "B", "send", now)

    def send_response(self, response: SipResponse, now: float) -> list[Event]:
        """Hand a response to its server transaction (matched by Via and CSeq)."""
        try:
            key = _server_key(response)
        except SipParseError as exc:
            raise LocalProtocolError(f"response lacks Via, CSeq or Call-ID: {exc}") from exc
        txn = self._servers.get(key)
        if txn is None:
            raise LocalProtocolError(f"no server transaction for {key}")
        events: list[Event] = []
        if (self.stateless_refusals and response.status >= 300 and txn.last is None
                and txn.state in _FRESH):
            # Stateless (see the class docstring): once, cached, no transaction left.
            data = bytes(response)
            self._out.append((data, txn.peer))
            self.replies.put(key, txn.peer, data, now)
            self.stats["stateless_replies"] += 1
            self._remove(txn)
            return events
        self._apply(txn, _class_input("send_", response.status), now, response, events)
        return events

    def send_reliable_provisional(self, response: SipResponse, now: float) -> None:
        """A 101-199 sent reliably (RFC 3262 §3): as any provisional, and again at T1,
        2*T1... until :meth:`prack_received`, a final response, or 64*T1, when the TU
        gets ``TransactionTimeout(key, "P")`` (it should reject the INVITE with a 5xx).
        On a reliable transport it is sent once and waits as long for its PRACK."""
        self.send_response(response, now)
        txn = self._servers.get(_server_key(response))
        if txn is None or txn.state is not State.PROCEEDING or txn.last is None:
            return
        t1 = self.config.t1
        txn.rel1xx = (txn.last, t1, now + 64 * t1)
        self._arm(txn, "P", now + (64 * t1 if txn.reliable else t1))

    def prack_received(self, key: TransactionKey) -> None:
        """The TU matched a PRACK to the reliable provisional of INVITE `key`."""
        txn = self._servers.get(key)
        if txn is not None:
            txn.rel1xx = None
            txn.timers.pop("P", None)

    def _resend_reliable(self, txn: _Txn, now: float, events: list[Event]) -> None:
        rel = txn.rel1xx
        if rel is None or txn.state is not State.PROCEEDING:
            return
        data, interval, give_up = rel
        if now >= give_up:
            txn.rel1xx = None
            events.append(TransactionTimeout(txn.key, "P"))
            return
        self._out.append((data, txn.peer))
        interval *= 2  # §3: "starts at T1 seconds and doubles for each retransmission"
        txn.rel1xx = (data, interval, give_up)
        self._arm(txn, "P", min(now + interval, give_up))

    def send_trying(self, now: float) -> None:
        """Send the deferred 100 Trying of every new INVITE the TU has not answered."""
        keys, self._trying = self._trying, []
        for key in keys:
            txn = self._servers.get(key)
            if (txn is not None and txn.last is None and txn.state is State.PROCEEDING
                    and txn.request is not None):
                self._apply(txn, "send_1xx", now, build_response(txn.request, 100), [])

    def transport_error(self, key: TransactionKey, now: float) -> list[Event]:
        """The adapter could not send for ``key`` (RFC 3261 §17.1.4, §17.2.4)."""
        txn = (self._clients if key.role == "client" else self._servers).get(key)
        events: list[Event] = []
        if txn is not None:
            try:
                self._apply(txn, "transport_error", now, None, events)
            except TransactionStateError:
                self._remove(txn)
                events.append(TransportError(key))
        return events

    # -- network -> TU ----------------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Address, now: float, *,
                         reliable: bool | None = None) -> list[Event]:
        """Parse and receive one datagram; never raises on garbage.

        A malformed request is answered statelessly with its 400/505 when the
        mandatory headers could be read; a malformed response is dropped.
        """
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            self.stats["malformed"] += 1
            reply = build_error_response(exc)
            if reply is not None:
                self._out.append((bytes(reply), source))
            return []
        return self.receive(msg, source, now, reliable=reliable)

    def receive(self, msg: SipRequest | SipResponse, source: Address, now: float, *,
                reliable: bool | None = None) -> list[Event]:
        """Route a parsed message to its transaction or create a server transaction."""
        events: list[Event] = []
        if isinstance(msg, SipResponse):
            key = _client_key(msg)
            txn = self._clients.get(key) if key is not None else None
            if txn is None:
                self.stats["stray_responses"] += 1
                events.append(StrayResponse(msg, source))
            else:
                self._remote(txn, _class_input("recv_", msg.status), now, msg, events)
            return events
        skey = _server_key(msg)
        txn = self._servers.get(skey)
        if txn is None and self.replies.bytes:
            again = self.replies.get(skey, source, now)
            if again is not None:
                # A stateless refusal's request again: the same answer; its ACK: absorbed.
                if msg.method != "ACK":
                    self.stats["replies_resent"] += 1
                    self._out.append((again, source))
                return events
        if msg.method == "ACK":
            if txn is not None and txn.kind is Kind.IST:
                self._remote(txn, "recv_ack", now, msg, events, source)
                return events
            # A 2xx ACK has its own branch (RFC 3261 §17.1.1.3 vs §13.2.2.4).
            accepted = self._accepted.get((msg.call_id, msg.cseq.number, msg.from_tag or ""))
            if accepted is not None:
                self._remote(accepted, "recv_ack", now, msg, events, source)
            else:
                events.append(AckReceived(msg, source, None))
            return events
        if txn is not None:
            self._remote(txn, "recv_request", now, msg, events)  # a retransmission
            return events
        if self.stamp_received:
            stamp_via(msg, source)
        is_reliable = self.reliable if reliable is None else reliable
        kind = Kind.IST if msg.method == "INVITE" else Kind.NIST
        txn = _Txn(kind, skey, msg, source, is_reliable, self.config.t1)
        self._servers[skey] = txn
        if msg.method == "CANCEL":
            ikey = skey._replace(method="INVITE")
            invite = self._servers.get(ikey)
            events.append(CancelReceived(msg, source, skey, ikey if invite is not None else None))
            return events
        events.append(RequestReceived(msg, source, skey))
        if kind is Kind.IST and self.auto_trying:
            if self.stateless_refusals:
                self._trying.append(skey)  # sent by send_trying unless refused at once
            else:
                self._apply(txn, "send_1xx", now, build_response(msg, 100), events)
        return events
