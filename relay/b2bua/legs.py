"""The two legs of a bridged call: SIP in, leg-neutral events out, and back.

Privacy rule (DESIGN.md "SIP behaviour"): a leg builds every message it sends from
its own dialog state and the event it was handed. Nothing is copied from the other
leg's messages but an SDP body (already rewritten by the media backend) and, for
INFO, a DTMF body and its Content-Type (other INFO bodies are refused with 415).
A whitelist, not a blacklist: headers we do not know (X-*, Diversion, History-Info,
P-Asserted-Identity, User-Agent...) cannot cross.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relay.sip import (
    Dialog,
    SipRequest,
    SipResponse,
    TransactionKey,
    build_cancel,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    system_random,
)
from relay.sip.digest import Credentials, authorization, choose
from relay.sip.session_timer import (
    TIMER_TAG,
    SessionTimer,
    retry_interval,
    uac_negotiate,
    uac_offer,
)

from ._state import LegKind, LegState, allowed, transition
from .events import (
    Ack,
    Answer,
    CCEvent,
    Connect,
    Disconnect,
    Fail,
    Info,
    InfoReply,
    Offer,
    Ring,
    Try,
)
from .signals import dtmf_digit, map_failure, reason_header

if TYPE_CHECKING:
    from .callmap import Wire

__all__ = ["CalleeLeg", "CallerLeg", "dtmf_digit", "reason_header"]

Address = tuple[str, int]
SDP = "application/sdp"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK"
REL100 = "100rel"  # RFC 3262's option tag
# INFO bodies relayed between legs (RFC 6086 legacy DTMF usage); others get 415.
INFO_TYPES = ("application/dtmf-relay", "application/dtmf", "audio/telephone-event")


def _body_headers(body: bytes, content_type: str = SDP) -> list[tuple[str, str]]:
    return [("Content-Type", content_type)] if body else []


class _Leg:
    """What both legs share: in-dialog requests (RFC 3261 §12.2) and their answers."""

    kind: LegKind
    role: str  # "caller" or "callee": who released, in call records
    late = False  # callee leg: our INVITE had no offer (the 2xx offers, the ACK answers)
    # Call-control event -> what the leg does with it (dispatch by table, STYLE.md).
    HANDLERS: dict[type, Callable[[Any, Any, float], None]]

    def __init__(self, wire: Wire, x: str, peer: Address) -> None:
        self.wire = wire
        self.x = x  # the virtual number: our identity toward this leg's peer
        self.control: Any = None  # the CallController this leg reports to
        self.client_keys: list[TransactionKey] = []  # our client transactions
        self.peer = peer
        self.state = LegState.IDLE
        self.dialog: Dialog | None = None
        self.local_tag = new_tag()
        # Inbound offer (re-INVITE/UPDATE) waiting for the other side's answer.
        self.pending_in: SipRequest | None = None
        self.pending_out = False  # our own offer toward this peer is outstanding
        self.infos_in: deque[SipRequest] = deque()
        self.last_sdp_sent = b""
        self.last_ack: tuple[int, SipRequest] | None = None  # for re-ACKing a 2xx
        self.code: int | None = None  # the final status of the initial INVITE
        # Egress leak guard (relay/b2bua/egress.py): needles made once per leg; a
        # sealed leg sends nothing more (its peer got a clean 500 instead of a leak).
        self.sealed = False
        self.guard_key: tuple[str | None, str | None] | None = None
        self.needles: tuple[bytes, ...] = ()
        # Digest (RFC 3261 §22.2): in-dialog requests as sent (to re-send one when the
        # trunk challenges it), challenges answered per purpose, nonce counts.
        self.sent: dict[str, tuple[str, bytes, str, list[tuple[str, str]]]] = {}
        self.auth_tries: dict[str, int] = {}
        self.nonce_counts: dict[str, int] = {}
        self.auth_cache: tuple[str, Any] | None = None  # the last challenge answered
        self.contact = wire.contact(x)  # ours, in this leg's transport
        self.session: SessionTimer | None = None  # RFC 4028, once the dialog is confirmed
        # Send in-dialog requests back to `peer` (where the INVITE came from or went)
        # rather than to the route set or Contact (RFC 3261 §12.2.1.1): trunks behind
        # NAT (`[sip] symmetric`), and every leg on TCP, whose connection is reused.
        self.symmetric = False
        self._hop: tuple[str, Address] | None = None  # (next hop as written, its address)

    def dialog_peer(self) -> Address:
        """The address of this leg's next in-dialog request (see `symmetric`)."""
        dialog = self.dialog
        if self.symmetric or dialog is None:
            return self.peer
        hop = dialog.route_set[0] if dialog.route_set else dialog.remote_target
        cached = self._hop
        if cached is None or cached[0] != hop:  # parsed once per route set or target
            cached = self._hop = (hop, dialog.next_hop_address() or self.peer)
        return cached[1]

    # -- state ---------------------------------------------------------------------
    def _go(self, event: str) -> None:
        self.state = transition(self.kind, self.state, event)

    def can(self, event: str) -> bool:
        """Whether `event` is allowed now (remote inputs are checked, then dropped)."""
        return allowed(self.kind, self.state, event)

    def deliver(self, ev: CCEvent, now: float) -> None:
        """Act on a call-control event from the controller (the leg-neutral way in)."""
        self.HANDLERS[type(ev)](self, ev, now)

    @property
    def negotiating(self) -> bool:
        """An offer/answer exchange with this peer is open (a new one would glare)."""
        return self.pending_out or self.pending_in is not None

    @property
    def dead(self) -> bool:
        """The leg has ended."""
        return self.state is LegState.DEAD

    # -- sending -------------------------------------------------------------------
    def _respond(self, request: SipRequest, status: int, now: float, *,
                 body: bytes = b"", extra: list[tuple[str, str]] | None = None,
                 reliably: bool = False) -> None:
        headers = list(extra or ())
        if status < 300 or body:
            headers.append(("Contact", self.contact))
        if body:
            headers.append(("Content-Type", SDP))
            self.last_sdp_sent = body
        session = self.session
        if session is not None and 200 <= status < 300 and request.method in ("INVITE",
                                                                                "UPDATE"):
            # RFC 4028 §9: the 2xx names the interval and refresher; a refresh from the
            # peer (or its first INVITE) restarts the session.
            headers.append(session.header(we_are_uac=False))
            if session.peer_supports:
                headers.append(("Require", TIMER_TAG))
            session.touch(now)
        # §12.1.1: 18x and 2xx that make the dialog echo the INVITE's Record-Route.
        resp = build_response(request, status, to_tag=self.local_tag, extra_headers=headers,
                              body=body, record_route=100 < status < 300
                              and request.method == "INVITE" and request.to_tag is None)
        if reliably:
            self.wire.respond_reliably(resp, now, self)
        else:
            self.wire.respond(resp, now, self)

    def _send_in_dialog(self, method: str, purpose: str, now: float, *, body: bytes = b"",
                        content_type: str = SDP, extra: list[tuple[str, str]] | None = None
                        ) -> None:
        dialog = self.dialog
        if dialog is None:
            return
        headers = list(extra or ())
        if method == "INVITE":
            headers.append(("Allow", ALLOW))
        self.sent[purpose] = (method, body, content_type, list(extra or ()))
        if self.session is not None and method in ("INVITE", "UPDATE"):
            headers += [("Supported", TIMER_TAG), self.session.header(we_are_uac=True)]
        req = dialog.create_request(method, body=body,
                                    content_type=content_type if body else None,
                                    extra_headers=headers)
        if body and content_type == SDP:
            self.last_sdp_sent = body
        if self.auth_cache is not None:
            # §22.3: credentials go with later requests of the dialog unasked (a BYE's
            # challenge could come after the call is gone and find nobody to answer it).
            self._answer(*self.auth_cache, req)
        self.wire.request(self, purpose, req, self.dialog_peer(), now)

    # -- digest challenges from the trunk (RFC 3261 §22.2) -------------------------------
    def _credentials(self, purpose: str, resp: SipResponse) -> tuple[str, Any] | None:
        """(header name, challenge) to answer `resp`, or None: no credentials, nothing
        we can answer, or already answered once for this request (a second challenge
        means wrong credentials, unless the nonce was only stale, RFC 7616 §3.3)."""
        creds: Credentials | None = getattr(self.wire.callmap.settings, "trunk_auth", None)
        if creds is None or resp.status not in (401, 407):
            return None
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = choose(resp.headers.get_all(header))
        tries = self.auth_tries.get(purpose, 0)
        if challenge is None or tries >= 2 or (tries == 1 and not challenge.stale):
            return None
        self.auth_tries[purpose] = tries + 1
        return ("Authorization" if resp.status == 401 else "Proxy-Authorization", challenge)

    def _answer(self, name: str, challenge: Any, req: SipRequest) -> None:
        """Add the digest answering `challenge` to `req` (its URI, method and body)."""
        creds = self.wire.callmap.settings.trunk_auth
        assert creds is not None  # _credentials found them
        self.auth_cache = (name, challenge)
        count = self.nonce_counts[challenge.nonce] = self.nonce_counts.get(challenge.nonce,
                                                                            0) + 1
        if len(self.nonce_counts) > 8:  # a leg lives for one call: keep it small
            self.nonce_counts = {challenge.nonce: count}
        req.headers.remove("authorization")
        req.headers.remove("proxy-authorization")
        req.headers.add(name, authorization(challenge, creds, req.method, req.uri,
                                            cnonce=system_random(8).hex(), nc=count,
                                            body=req.body))

    def _resend_challenged(self, purpose: str, resp: SipResponse, now: float) -> bool:
        """An in-dialog request the trunk challenged goes again with credentials and the
        next CSeq (§22.2); True when it did."""
        found = self._credentials(purpose, resp)
        sent = self.sent.get(purpose)
        if found is None or sent is None or self.dialog is None:
            return False
        method, body, content_type, extra = sent
        headers = list(extra)
        if method == "INVITE":
            headers.append(("Allow", ALLOW))
        if self.session is not None and method in ("INVITE", "UPDATE"):
            headers += [("Supported", TIMER_TAG), self.session.header(we_are_uac=True)]
        req = self.dialog.create_request(method, body=body,
                                         content_type=content_type if body else None,
                                         extra_headers=headers)
        self._answer(found[0], found[1], req)
        self.wire.request(self, purpose, req, self.dialog_peer(), now)
        return True

    def _send_ack(self, cseq: int, now: float) -> None:
        if self.dialog is None:
            return
        if self.last_ack is None or self.last_ack[0] != cseq:
            self.last_ack = (cseq, self._credited(self.dialog.create_ack(cseq)))
        self.wire.stateless(self.last_ack[1], self.dialog_peer(), self, now)

    def _credited(self, ack: SipRequest) -> SipRequest:
        """§13.2.2.4: the ACK for a 2xx carries the same credentials as the INVITE."""
        invite = getattr(self, "invite", None)
        if invite is not None:
            for name in ("Authorization", "Proxy-Authorization"):
                value = invite.headers.get(name)
                if value is not None:
                    ack.headers.add(name, value)
        return ack

    # -- controller -> leg: mid-call events ------------------------------------------
    def offer(self, ev: Offer, now: float) -> None:
        """Send a re-INVITE or UPDATE carrying the (rewritten) offer."""
        self._go("offer")
        self.pending_out = True
        self._send_in_dialog(ev.method, "offer", now, body=ev.sdp)

    def answer(self, ev: Answer, now: float) -> None:
        """Answer the peer's pending offer."""
        self._go("answer")
        req, self.pending_in = self.pending_in, None
        if req is not None:
            self._respond(req, ev.code, now, body=ev.sdp if ev.code < 300 else b"")

    def info(self, ev: Info, now: float) -> None:
        """Relay an INFO body."""
        self._go("info")
        self._send_in_dialog("INFO", "info", now, body=ev.body,
                             content_type=ev.content_type or "application/octet-stream")

    def info_reply(self, ev: InfoReply, now: float) -> None:
        """Answer the oldest INFO from the peer."""
        self._go("info_reply")
        if self.infos_in:
            self._respond(self.infos_in.popleft(), ev.code, now)

    def disconnect(self, ev: Disconnect, now: float) -> None:
        """End the leg toward its peer (each leg knows how: BYE, CANCEL or a final)."""
        raise NotImplementedError

    def bye(self, now: float, cause: int = 16) -> None:
        """End a confirmed dialog (RFC 3261 §15.1.1)."""
        self._send_in_dialog("BYE", "bye", now, extra=[reason_header(cause)])

    def refresh(self, now: float) -> None:
        """Refresh the session (RFC 4028 §7.4, §9): UPDATE without a body where the peer
        allows it, else a re-INVITE repeating the SDP it has. An offer already open
        with this peer refreshes the session when it completes: nothing to send."""
        session = self.session
        if session is None or session.refreshing or self.state is not LegState.CONNECTED:
            return
        session.refreshing = True
        if self.negotiating:
            return
        if session.use_update:
            self._send_in_dialog("UPDATE", "refresh", now)
        else:
            self.pending_out = True  # a re-INVITE from the peer now would glare: 491
            self._send_in_dialog("INVITE", "refresh", now, body=self.last_sdp_sent)

    # -- peer -> leg ------------------------------------------------------------------
    def on_request(self, req: SipRequest, now: float) -> list[CCEvent]:
        """An in-dialog request from this leg's peer (not ACK, not CANCEL)."""
        method = req.method
        if self.dialog is not None and self.dialog.receive_request(req) is not None:
            self._respond(req, 500, now, extra=[("Retry-After", "1")])  # §12.2.2: old CSeq
            return []
        if method == "PRACK":
            self._respond(req, self.on_prack(req, now), now)
            return []
        if method == "BYE":
            if not self.can("bye"):
                self._respond(req, 481, now)
                return []
            self._go("bye")
            self._respond(req, 200, now)
            return [Disconnect(self.role)]
        if method in ("INVITE", "UPDATE"):
            if method == "INVITE" and self.state is LegState.EARLY:
                # §14.1: no re-INVITE before the INVITE's final response; UPDATE is
                # the early dialog's way (RFC 3311 §5).
                self._respond(req, 491, now, extra=[("Retry-After", "1")])
                return []
            if not self.can("remote_offer"):
                # RFC 3311 §5.2 allows UPDATE in early dialogs; we only renegotiate
                # once connected, so ask the peer to try later.
                self._respond(req, 491 if method == "INVITE" else 500, now,
                              extra=[("Retry-After", "1")])
                return []
            if self.pending_in is not None or self.pending_out:
                self._respond(req, 491, now)  # §14.2: glare
                return []
            if not req.body:
                # A session refresh without an offer: offer what this peer already has
                # (its answer comes in the ACK; the media did not change).
                self._respond(req, 200, now, body=self.last_sdp_sent)
                return []
            self._go("remote_offer")
            self.pending_in = req
            return [Offer(method, req.body)]
        if method == "INFO":
            if not self.can("remote_info"):
                self._respond(req, 481, now)
                return []
            ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
            if req.body and ctype not in INFO_TYPES:
                # Only DTMF crosses: any other body (SDP, XML, text) could carry the
                # sender's addresses or identity to the other party.
                self._respond(req, 415, now, extra=[("Accept", ", ".join(INFO_TYPES))])
                return []
            self._go("remote_info")
            self.infos_in.append(req)
            ctype_raw = req.headers.get("content-type")
            return [Info(ctype_raw, req.body, dtmf_digit(ctype, req.body) if req.body else None)]
        if method == "OPTIONS":
            self._respond(req, 200, now, extra=[("Allow", ALLOW)])
            return []
        # REFER, NOTIFY, MESSAGE...: a transfer would reveal or move a real party.
        self._respond(req, 501 if method != "REFER" else 403, now)
        return []

    def on_prack(self, req: SipRequest, now: float) -> int:
        """A PRACK (RFC 3262 §3): 200 if it acknowledges our reliable provisional, else
        481. Only the caller leg sends reliable provisionals."""
        return 481

    def on_response(self, purpose: str, resp: SipResponse, now: float) -> list[CCEvent]:
        """A response to one of our in-dialog requests."""
        if resp.status < 200:
            return []
        if resp.status in (401, 407) and self._resend_challenged(purpose, resp, now):
            return []
        self.auth_tries.pop(purpose, None)
        if self.dialog is not None:
            self.dialog.receive_response(SipRequest(resp.cseq.method, ""), resp)
        if purpose == "refresh":
            return self._refreshed(resp, now)
        if (self.session is not None and resp.status < 300
                and resp.cseq.method in ("INVITE", "UPDATE")):
            self.session.touch(now)  # a re-INVITE or UPDATE that succeeded refreshes too
        if purpose == "offer":
            if resp.cseq.method == "INVITE" and resp.status < 300:
                self._send_ack(resp.cseq.number, now)  # §13.2.2.4 end-to-end ACK
            if not self.pending_out:
                return []  # a retransmitted 2xx, re-ACKed above
            self.pending_out = False
            return [Answer(resp.status, resp.body if resp.status < 300 else b"")]
        if purpose == "info":
            return [InfoReply(resp.status)]
        return []

    def _refreshed(self, resp: SipResponse, now: float) -> list[CCEvent]:
        session = self.session
        if resp.cseq.method == "INVITE":
            if resp.status < 300:
                self._send_ack(resp.cseq.number, now)
            self.pending_out = False
        if session is None:
            return []
        if resp.status < 300:
            session.touch(now)
            return []
        if resp.status in (408, 481) and self.can("bye"):
            # §10 of RFC 4028 and §12.2.1.2 of RFC 3261: the dialog is gone.
            self._go("bye")
            return [Disconnect(self.role, 102)]
        return []  # refused otherwise: the session expires unless the peer refreshes

    def on_timeout(self, purpose: str, now: float) -> list[CCEvent]:
        """Timer F/B for an in-dialog request: RFC 3261 §12.2.1.2 ends the dialog."""
        if purpose == "refresh":
            if self.pending_out and self.session is not None and self.session.refreshing:
                self.pending_out = False
            if self.can("bye"):
                self._go("bye")
                return [Disconnect(self.role, 102)]
            return []
        if purpose == "offer" and self.pending_out:
            self.pending_out = False
            return [Answer(408)]
        if purpose == "info":
            return [InfoReply(408)]
        return []


class CallerLeg(_Leg):
    """The leg facing the caller: we are the UAS of its INVITE."""

    kind = LegKind.UAS
    role = "caller"

    def __init__(self, wire: Wire, x: str, invite: SipRequest, key: TransactionKey,
                 source: Address) -> None:
        super().__init__(wire, x, source)
        self.state = LegState.TRYING
        self.invite = invite
        self.key = key
        self.late_answer_pending = False  # late offer: the answer comes in the ACK
        # The caller's transport is the dialog's: Via and Contact name it (RFC 3261
        # §18.1.1, §8.1.1.8), so a TCP or TLS trunk comes back on TCP or TLS.
        transport = invite.top_via.transport.upper()
        transport = transport if transport in ("TCP", "TLS") else "UDP"
        self.contact = wire.contact(x, transport)
        self.dialog = Dialog.from_uas(invite, local_tag=self.local_tag,
                                      local_contact=self.contact,
                                      sent_by=wire.sent_by_for(transport), transport=transport)
        if not self.dialog.remote_target:
            # No Contact (a broken trunk): aim in-dialog requests at its From URI; they
            # go to the source address anyway.
            self.dialog.remote_target = str(invite.from_.uri)
        # RFC 3262: the caller requires reliable provisionals, or supports them (then
        # those carrying early media go reliably, as a trunk's reliable 183 would).
        tags = {t.strip().lower() for t in invite.headers.get_list("require")}
        self.rel100 = ("required" if REL100 in tags else "supported"
                       if REL100 in {t.strip().lower() for t in
                                     invite.headers.get_list("supported")} else "")
        self.rseq = int.from_bytes(system_random(3), "big") + 1  # §7.1: random start
        self.unacked: int | None = None  # the RSeq awaiting its PRACK
        self.held: Ring | None = None  # a later 18x waiting for that PRACK (§3)

    def ring(self, ev: Ring, now: float) -> None:
        """18x toward the caller (§13.3.1.1), with early media SDP if any; reliably
        (Require: 100rel, RSeq) when the caller asked for it (RFC 3262 §3)."""
        self._go("ring")
        if not (self.rel100 == "required" or (self.rel100 and ev.sdp)):
            self._respond(self.invite, ev.code, now, body=ev.sdp)
            return
        if self.unacked is not None:
            self.held = ev  # one unacknowledged reliable provisional at a time
            return
        self._send_reliably(ev, now)

    def on_prack(self, req: SipRequest, now: float) -> int:
        """RAck names our RSeq, the INVITE's CSeq and INVITE (RFC 3262 §7.2)."""
        parts = (req.headers.get("rack") or "").split()
        try:
            rseq, cseq, method = int(parts[0]), int(parts[1]), parts[2].upper()
        except (IndexError, ValueError):
            return 481
        if (self.unacked is None or rseq != self.unacked or cseq != self.invite.cseq.number
                or method != "INVITE"):
            return 481
        self.unacked = None
        self.wire.prack(self.key)
        held, self.held = self.held, None
        if held is not None and self.state is LegState.EARLY:
            self._send_reliably(held, now)
        return 200

    def _send_reliably(self, ev: Ring, now: float) -> None:
        self.rseq += 1
        self.unacked = self.rseq
        self._respond(self.invite, ev.code, now, body=ev.sdp, reliably=True,
                      extra=[("Require", REL100), ("RSeq", str(self.rseq))])

    def connect(self, ev: Connect, now: float) -> None:
        """200 OK with the rewritten answer (§13.3.1.4)."""
        self._go("connect")
        self.code = 200
        self.late_answer_pending = ev.offer
        self._respond(self.invite, 200, now, body=ev.sdp, extra=[("Allow", ALLOW)])

    def fail(self, ev: Fail, now: float) -> None:
        """A final error response with a Reason (RFC 3326). Retry-After only when the
        relay itself is short of resources: a callee's 503 must not make the trunk
        back off from the whole relay (RFC 3261 §21.5.4)."""
        self._go("fail")
        self.code = ev.code
        extra = [reason_header(ev.cause, ev.reason)]
        if ev.retry_after is not None:
            extra.append(("Retry-After", str(ev.retry_after)))
        self._respond(self.invite, ev.code, now, extra=extra)

    def disconnect(self, ev: Disconnect, now: float) -> None:
        """End the leg: BYE once connected, else a final 480 (or 487 when cancelled)."""
        if self.dead:
            return
        was = self.state
        self._go("disconnect")
        if was is LegState.CONNECTED:
            self.bye(now, ev.cause)
        else:
            self.code = 500 if self.sealed else 480  # sealed: the guard's 500 went out
            self._respond(self.invite, 480, now, extra=[reason_header(ev.cause)])

    def on_cancel(self, now: float) -> list[CCEvent]:
        """CANCEL before the final response: 487 to the INVITE (RFC 3261 §9.2)."""
        if not self.can("cancel"):
            return []
        was = self.state
        self._go("cancel")
        if was is LegState.CONNECTED:
            return []
        self.code = 487
        self._respond(self.invite, 487, now)
        return [Disconnect("caller", 16)]

    def on_ack(self, ack: SipRequest) -> bytes | None:
        """The ACK for our 2xx (RFC 3261 §13.3.1.4). Returns its SDP when it is the
        answer of a late-offer call (RFC 3264 §4: the offer was in our 2xx)."""
        if not self.can("ack"):
            return None
        self._go("ack")
        if self.late_answer_pending:
            self.late_answer_pending = False
            return ack.body
        return None

    def on_invite_timeout(self, now: float) -> list[CCEvent]:
        """Timer L: our 2xx was never ACKed, so the dialog is dead (§13.3.1.4)."""
        if not self.can("timeout"):
            return []
        self._go("timeout")
        self.bye(now)
        return [Disconnect("relay", 102)]


class CalleeLeg(_Leg):
    """The leg toward the real party: a new dialog we place as UAC (§13.2.1)."""

    kind = LegKind.UAC
    role = "callee"

    def __init__(self, wire: Wire, x: str, peer: Address) -> None:
        super().__init__(wire, x, peer)
        self.invite: SipRequest | None = None
        self.key: TransactionKey | None = None
        self.provisional = False  # §9.1: CANCEL only after a provisional response
        self.late = False  # INVITE without SDP: the 2xx offers, our ACK answers
        self.cancel_sent = False
        self.call_id = new_call_id(wire.host)
        self.retried_422 = False
        self.prack_rseq: int | None = None  # the last reliable provisional PRACKed
        self.trunk: str | None = None  # the outbound trunk's name (records, failover)
        self.target: Address | None = None  # the trunk's address it was sent to (failover)
        self.to_host = wire.outbound_host  # the host of the callee's Request-URI and To

    def place(self, ev: Try, now: float) -> None:
        """Send the INVITE: new Call-ID, tags and branch; From and PAI show X."""
        self._go("try")
        w = self.wire
        x_uri = f"sip:{ev.x}@{w.host}"
        to_uri = f"sip:{ev.to}@{self.to_host}"
        headers = [
            ("Via", f"SIP/2.0/{w.transport} {w.sent_by};branch={new_branch()};rport"),
            ("Max-Forwards", str(ev.max_forwards)),
            ("From", f"<{x_uri}>;tag={self.local_tag}"),
            ("To", f"<{to_uri}>"),
            ("Call-ID", self.call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", w.contact(ev.x)),
            ("P-Asserted-Identity", f"<{x_uri}>"),
            ("Allow", ALLOW),
        ]
        # 100rel only with an offer: a reliable 1xx would otherwise carry the callee's
        # offer, to be answered in the PRACK, which the caller cannot yet give.
        supported = [t for t, on in ((TIMER_TAG, w.session_expires), (REL100, ev.sdp)) if on]
        if supported:
            headers.append(("Supported", ", ".join(supported)))
        headers += uac_offer(w.session_expires, w.min_se)
        headers += _body_headers(ev.sdp)
        self.invite = SipRequest("INVITE", to_uri, headers, ev.sdp)
        self.late = not ev.sdp
        self.last_sdp_sent = ev.sdp
        self.key = w.request(self, "invite", self.invite, self.peer, now)

    def disconnect(self, ev: Disconnect, now: float) -> None:
        """CANCEL an unanswered INVITE (once a 1xx came, §9.1), BYE an answered one."""
        if self.dead:
            return
        was = self.state
        self._go("disconnect")
        if was is LegState.CONNECTED:
            self.bye(now, ev.cause)
        elif was in (LegState.TRYING, LegState.EARLY) and self.provisional:
            self._cancel(now)

    def _cancel(self, now: float) -> None:
        # One CANCEL per INVITE: later provisionals must not start a second one.
        if self.invite is not None and not self.cancel_sent:
            self.cancel_sent = True
            self.wire.request(self, "cancel", build_cancel(self.invite), self.peer, now)

    def on_invite_response(self, resp: SipResponse, now: float) -> list[CCEvent]:
        """A response to our INVITE (§13.2.2)."""
        status = resp.status
        if status < 200:
            self.provisional = True
            if self.state is LegState.CANCELLING:
                self._cancel(now)  # the CANCEL we held back (§9.1) can go now
                return []
            if status == 100:
                return []
            self._early_dialog(resp)
            if self._reliable(resp, now):
                return []  # a retransmission of a reliable provisional: PRACKed once
            if not self.can("provisional"):
                return []
            self._go("provisional")
            # With a late offer an SDP in a 1xx would be an offer needing PRACK
            # (RFC 3262), which we do not do: ring without it.
            return [Ring(status if status in (180, 183) else 180,
                         b"" if self.late else resp.body)]
        if status < 300:
            assert self.invite is not None
            if self.dialog is None or self.dialog.remote_tag != resp.to_tag:
                self.dialog = Dialog.from_uac(self.invite, resp, sent_by=self.wire.sent_by)
            else:
                self.dialog.receive_response(self.invite, resp)
            if self.session is None and self.state is not LegState.CONNECTED:
                self.session = uac_negotiate(resp, now)
            if not self.late or self.last_ack is not None:
                self._send_ack(self.invite.cseq.number, now)
            # else: late offer, the ACK must carry the caller's answer (ack_with)
            if not self.can("answered"):
                return []
            was = self.state
            self._go("answered")
            if was is LegState.CONNECTED:
                return []  # a retransmission or a second fork, ACKed above
            if was is LegState.CANCELLING:
                self.bye(now)  # §15: the 2xx crossed our CANCEL
                return []
            self.code = status
            return [Connect(resp.body)]
        if status in (401, 407) and self.state is not LegState.CANCELLING \
                and self._reinvite_with_credentials(resp, now):
            return []
        if status == 422 and self._retry_422(resp, now):
            return []
        self.code = status
        if not self.can("rejected"):
            return []
        self._go("rejected")
        code, cause = map_failure(status)
        return [Fail(code, cause)]

    def _reinvite_with_credentials(self, resp: SipResponse, now: float) -> bool:
        """The trunk challenged our INVITE (401/407): send it again with credentials,
        a new branch and CSeq + 1, same Call-ID and tags (RFC 3261 §22.2, §8.1.3.5)."""
        found = self._credentials("invite", resp)
        if found is None or self.invite is None:
            return False
        invite = self._next_invite({})
        self._answer(found[0], found[1], invite)
        self._send_invite(now)
        return True

    def _retry_422(self, resp: SipResponse, now: float) -> bool:
        """RFC 4028 §7.3: the callee wants a longer session: ask once more, for its Min-SE,
        in a new INVITE of the same dialog attempt (CSeq + 1, new branch)."""
        invite = self.invite
        if invite is None or self.retried_422 or self.cancel_sent:
            return False
        interval = retry_interval(resp, self.wire.session_expires)
        if interval is None:
            return False
        self.retried_422 = True
        self._next_invite({"Session-Expires": str(interval), "Min-SE": str(interval)})
        self._send_invite(now)
        return True

    def _next_invite(self, changes: dict[str, str]) -> SipRequest:
        """Our INVITE again (a challenge answered, a longer session asked for): the same
        Call-ID, tags and body, a new branch and CSeq + 1 (RFC 3261 §8.1.3.5), `changes`
        set; it becomes `self.invite`."""
        old = self.invite
        assert old is not None
        w = self.wire
        headers = old.headers.copy()
        headers.set("Via", f"SIP/2.0/{w.transport} {w.sent_by};branch={new_branch()};rport")
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        for name, value in changes.items():
            headers.set(name, value)
        self.invite = SipRequest("INVITE", old.uri, headers, old.body)
        return self.invite

    def _send_invite(self, now: float) -> None:
        assert self.invite is not None
        self.provisional = False  # §9.1: CANCEL waits for a 1xx to *this* INVITE
        self.key = self.wire.request(self, "invite", self.invite, self.peer, now)

    def ack_with(self, ev: Ack, now: float) -> None:
        """Late offer: the ACK for the 2xx carries the (rewritten) answer (RFC 3264)."""
        sdp = ev.sdp
        if self.dialog is None or self.invite is None or self.last_ack is not None:
            return
        cseq = self.invite.cseq.number
        self.last_ack = (cseq, self._credited(self.dialog.create_ack(
            cseq, body=sdp, content_type=SDP if sdp else None)))
        self.wire.stateless(self.last_ack[1], self.dialog_peer(), self, now)

    def _reliable(self, resp: SipResponse, now: float) -> bool:
        """RFC 3262 §4: PRACK a reliable provisional (Require: 100rel, RSeq) once; True
        for a retransmission or one out of order, which the caller must not hear."""
        if REL100 not in {t.strip().lower() for t in resp.headers.get_list("require")}:
            return False
        try:
            rseq = int((resp.headers.get("rseq") or "").strip())
        except ValueError:
            return True  # broken: neither acknowledged nor relayed
        if self.prack_rseq is not None and rseq != self.prack_rseq + 1:
            return True
        self.prack_rseq = rseq
        assert self.invite is not None
        self._send_in_dialog("PRACK", "prack", now,
                             extra=[("RAck", f"{rseq} {self.invite.cseq.number} INVITE")])
        return False

    def _early_dialog(self, resp: SipResponse) -> None:
        if resp.to_tag and self.invite is not None and self.dialog is None:
            self.dialog = Dialog.from_uac(self.invite, resp, sent_by=self.wire.sent_by)

    def on_invite_timeout(self, now: float, transport: bool = False) -> list[CCEvent]:
        """Timer B (no answer from the trunk, §17.1.1.2) or a transport error."""
        if not self.can("rejected"):
            return []
        self._go("rejected")
        self.code = 503 if transport else 408
        return [Fail(503 if transport else 408, 41 if transport else 102)]


_MID_CALL: dict[type, Callable[[Any, Any, float], None]] = {
    Offer: _Leg.offer, Answer: _Leg.answer, Info: _Leg.info, InfoReply: _Leg.info_reply,
}
CallerLeg.HANDLERS = {**_MID_CALL, Ring: CallerLeg.ring, Connect: CallerLeg.connect,
                      Fail: CallerLeg.fail, Disconnect: CallerLeg.disconnect}
CalleeLeg.HANDLERS = {**_MID_CALL, Try: CalleeLeg.place, Disconnect: CalleeLeg.disconnect,
                      Ack: CalleeLeg.ack_with}
