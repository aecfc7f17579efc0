"""Call control: one :class:`CallController` per call, between two legs, never SIP.

The SIP call map (:mod:`.callmap`) turns the caller's INVITE into a leg-neutral
:class:`~.events.Incoming`, hands it to a new controller, and from then on feeds it
the events its legs report (ring, connect, fail, disconnect, offer/answer, info), the
results of the media jobs it asked for, the media backend's own events (digits,
prompt ends) and its named timers. The controller asks the dialplan for a decision,
moves through the phases of :mod:`._phases`, tells the legs what to do with
call-control events (``leg.deliver``), and reports call events (ringing, answered,
ended, refused) that the adapter drains. It knows legs only by that interface, and
SIP not at all: statuses and Q.850 causes are numbers in events.

Every step that needs the media backend goes through the call's queue, in order, so a
media job in flight (say, rewriting a 183's SDP) is never overtaken by a later event
(the 486 that followed it).

AXE calls that came without an extension, and refusals announced in early media, are
the relay's own voice; :mod:`.ivr` holds the digit collection, and this module plays
its prompts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from dialplan.policy import Policy
from dialplan.refusals import REFUSALS
from dialplan.route import Bridge, Collect, Refuse, decide
from relay.media.backend import DigitReceived, PlaybackEnded
from relay.rtp.session import Side

from ._phases import TABLE, Phase, PhaseError, Timer
from .cdr import CallTimes, call_record
from .events import (
    Ack,
    Answer,
    CallAnswered,
    CallEnded,
    CallRefused,
    CallRinging,
    CCEvent,
    Connect,
    Disconnect,
    Fail,
    Incoming,
    Info,
    InfoReply,
    MediaJob,
    Offer,
    Ring,
    Try,
)
from .gate import admit
from .ivr import Collector, ExtensionPrompt
from .ports import ControlSettings, Host, LegPort, Table
from .trunks import FAILOVER_CODES

__all__ = ["CallController", "ControlSettings", "Host", "LegPort"]


Continuation = Callable[[Any, BaseException | None, float], None]


class CallController:
    """One call's control: phases, named timers, the media queue and the record."""

    def __init__(self, host: Host, settings: ControlSettings, table: Table, call_id: str,
                 a: LegPort, incoming: Incoming, now: float) -> None:
        self.host = host
        self.settings = settings
        self.table = table
        self.id = call_id
        self.a = a
        self.b: LegPort | None = None
        self.incoming = incoming
        self.x = incoming.x
        self.caller = incoming.caller
        self.ext = incoming.ext
        self.phase = Phase.ROUTING
        self.ended = False  # both legs told; the media is being released or is gone
        self.callee: str | None = None
        self.binding: str | None = None
        self.direction: str | None = None
        self.out_id: str | None = None
        self.record_media = False
        self.max_seconds: float | None = None
        self.ring_timeout = settings.ring_timeout  # the binding's policy may shorten it
        self.started_at = now
        self.media: object = None
        self.queue: deque[tuple[Callable[[], MediaJob | None], Continuation]] = deque()
        self.busy: MediaJob | None = None
        self.times = CallTimes()
        self.timers: dict[Timer, float] = {}
        self.released_by: str | None = None
        self.end_reason: str | None = None  # why the relay ended it (record's end_reason)
        self.cause: int | None = None
        self.recording: object = None
        self.refusal: Refuse | None = None
        self.unconnected: str | None = None  # set when the relay gave up before routing
        self.ivr: ExtensionPrompt | None = None  # AXE by digits: the IVR layer
        self.ivr_start_at: float | None = None
        self.ivr_end_at: float | None = None
        self.prompts: list[str] = []  # names of the prompts played, in order
        self.failovers = 0  # outbound trunks given up on before the one that carried it
        self._callee_offer = b""  # the INVITE's (rewritten) offer, for the next trunk
        self.play_id: int | None = None  # the prompt playing now (None: none)
        self.after_play: Callable[[float], None] | None = None
        self.times.stamp("caller", "invite_at", now)

    def _go(self, event: str) -> None:
        try:
            self.phase = TABLE[(self.phase, event)]
        except KeyError:
            raise PhaseError(self.phase, event) from None

    # -- routing ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Ask the dialplan, then bridge, collect an extension, or refuse."""
        entry = self.table.lookup(self.x, self.caller, self.ext)
        decision = decide(entry, self.table.in_use(self.x), self.caller, now, "voice",
                          shared=self.table.shared(self.x), ext=self.ext,
                          policy=self._policy(entry),
                          blocked=self.host.policies.blocked(self.caller, self.x, now))
        out_id = self.out_id = getattr(entry, "out_id", None)
        if isinstance(decision, Bridge):  # the score, hook and counter checks first
            admit(self, decision, lambda d, now: self._bridge(d, entry, now),
                  lambda d, now: self._refuse(d, out_id, now), now)
        elif isinstance(decision, Collect):
            self._collect(now)
        else:
            self._refuse(decision, out_id, now)
        self._pump(now)

    def _policy(self, entry: Any) -> Policy | None:
        if entry is None:
            return None
        return self.host.policies.for_binding(getattr(entry, "policy", None))

    def _adopt(self, decision: Bridge, entry: Any) -> None:
        self.host.counts["bridged"] += 1
        self.callee = decision.to
        self.binding = decision.binding
        self.direction = decision.direction
        self.out_id = getattr(entry, "out_id", None)
        self.record_media = self.record_media or bool(getattr(entry, "record", False))
        # The binding's own limit and its policy's are both caps: the smaller holds.
        caps = [c for c in (getattr(entry, "max_call_seconds", None),
                            decision.max_call_seconds) if c]
        self.max_seconds = float(min(caps)) if caps else None
        if decision.ring_timeout:
            self.ring_timeout = min(self.ring_timeout, float(decision.ring_timeout))

    def _bridge(self, decision: Bridge, entry: Any, now: float) -> None:
        self._adopt(decision, entry)

        def placed(result: bytes, error: BaseException | None, now: float) -> None:
            if error is not None:
                self._media_or_fail(result, error, now)
            elif not self.ended:
                self._place(result, now)

        self._enqueue(self._setup_job(self.incoming.sdp), placed)
        self._pump(now)

    def _place(self, sdp: bytes, now: float) -> None:
        """Send the callee's INVITE (phase placing) and start the ring timer."""
        self._go("bridge" if self.phase is Phase.ROUTING else "extension")
        self._callee_offer = sdp
        b = self.host.place(self)
        self.times.stamp("callee", "invite_at", now)
        if b is None:  # no outbound trunk has an address (names not resolved yet)
            self._on_fail(None, Fail(503, 34, "no_trunk"), now)
            return
        self.b = b
        self._try(b, now)
        self._arm(Timer.RING, now + self.ring_timeout)

    def _try(self, b: LegPort, now: float) -> None:
        assert self.callee is not None
        b.deliver(Try(self.x, self.callee, self._callee_offer,
                      min(69, self.incoming.max_forwards - 1)), now)

    def _refuse(self, decision: Refuse, out_id: str | None, now: float) -> None:
        self.refusal = decision
        self.binding = decision.binding
        self.out_id = out_id
        prompt = REFUSALS[decision.reason].prompt  # never a policy refusal's reason
        if (prompt is None or not self.settings.announce_refusals or not self.incoming.sdp
                or not self.incoming.early_media):
            self._refuse_now(now)
            return
        # The caller hears why in early media (183), then gets the refusal itself.
        self._enqueue(self._setup_job(self.incoming.sdp, record=False), self._media_or_refuse)
        self._enqueue(self._job("answer_local", Side.CALLER), self._early_then(prompt))
        self._pump(now)

    def _media_or_refuse(self, result: Any, error: BaseException | None, now: float) -> None:
        if error is not None and not self.ended:
            self._refuse_now(now)  # no announcement without media: refuse plainly

    def _early_then(self, prompt: str) -> Continuation:
        def early(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            if self.ended:
                return
            if error is not None or not sdp or not self.a.can("ring"):
                self._refuse_now(now)
                return
            self.a.deliver(Ring(183, sdp), now)
            self.play(prompt, now, then=self._refuse_now,
                       limit=self.settings.announce_limit)

        return early

    def _refuse_now(self, now: float) -> None:
        """The final refusal to the caller (after its announcement, if any)."""
        d = self.refusal
        if d is None or self.ended:
            return
        host = self.host
        host.counts["refused"] += 1
        host.refusals[d.code] = host.refusals.get(d.code, 0) + 1
        if self.a.can("fail"):
            self.a.deliver(Fail(d.code, d.cause, d.reason, d.retry_after), now)
        self.unconnected = REFUSALS[d.reason].unconnected
        self._end("relay", d.cause, now, "refuse")

    # -- collecting an extension (AXE without one) ---------------------------------------
    def _collect(self, now: float) -> None:
        if not self.incoming.sdp:
            # RFC 3261 §21.4.5 484 Address Incomplete: with no offer the relay cannot
            # answer and prompt (a late-offer trunk), so ask for X;ext=E instead.
            self.refusal = Refuse(484, "no_extension", 28)
            self._refuse_now(now)
            return
        self.record_media = self.settings.ivr_record
        st = self.settings
        self.ivr = ExtensionPrompt(self, Collector(st.ivr_tries, st.ivr_max_digits),
                                   first_digit=st.ivr_first_digit, pause=st.ivr_pause)
        self._enqueue(self._setup_job(self.incoming.sdp), self._media_or_fail)
        self._enqueue(self._job("answer_local", Side.CALLER), self._answered_locally)
        self._pump(now)

    def _media_or_fail(self, result: Any, error: BaseException | None, now: float) -> None:
        """A media step failed before the caller was answered: 488 for SDP we cannot
        take, else 503 with Retry-After (the relay is short of ports or the backend)."""
        if error is not None and not self.ended:
            status = int(getattr(error, "status", 503))  # SdpError knows its status
            self.a.deliver(Fail(status, 65 if status == 488 else 47, "media",
                                5 if status == 503 else None), now)
            self._end("relay", 47, now, "fail")

    def _answered_locally(self, sdp: bytes | None, error: BaseException | None,
                          now: float) -> None:
        if self.ended:
            return
        if error is not None or not sdp:
            self._media_or_fail(None, error or RuntimeError("no local answer"), now)
            return
        self.a.deliver(Connect(sdp), now)
        self.times.stamp("caller", "answer_at", now)
        self._go("collect")
        self.ivr_start_at = now
        self._enqueue(self._job("detect", Side.CALLER, flag=True), _ignore)
        assert self.ivr is not None
        self.ivr.start(now)

    # -- what the IVR layer (.ivr.ExtensionPrompt) asks of the call -------------------
    @property
    def playing(self) -> bool:
        """A prompt plays into the caller now."""
        return self.play_id is not None

    def arm_digits(self, deadline: float) -> None:
        """(Re)start the wait for the next digit."""
        self._arm(Timer.DIGITS, deadline)

    def disarm_digits(self) -> None:
        """No digit is awaited (a try ended)."""
        self.timers.pop(Timer.DIGITS, None)

    def route_extension(self, ext: str | None, now: float) -> bool:
        """Route a keyed extension: ringback to the caller and the callee's INVITE, and
        True; False when no live binding has it (the caller hears "not found")."""
        entry = self.table.lookup(self.x, self.caller, ext) if ext else None
        decision = (decide(entry, True, self.caller, now, "voice", shared=True, ext=ext,
                           policy=self._policy(entry),
                           blocked=self.host.policies.blocked(self.caller, self.x, now))
                    if ext else None)
        if isinstance(decision, Refuse) and REFUSALS[decision.reason].policy:
            self._policy_hangup(decision, ext, now)
            return True
        if not isinstance(decision, Bridge):
            if isinstance(decision, Refuse):
                self.refusal = decision
            return False
        self.ext = ext
        self.ivr_end_at = now
        self.out_id = getattr(entry, "out_id", None)

        def go(d: Bridge, now: float) -> None:
            self._adopt(d, entry)
            self.play("ringback", now, repeat=True)
            self._enqueue(self._job("local_offer", Side.CALLEE), self._offer_to_callee)

        admit(self, decision, go, lambda d, now: self._policy_hangup(d, ext, now), now)
        self._pump(now)
        return True

    def _policy_hangup(self, decision: Refuse, ext: str | None, now: float) -> None:
        """The keyed extension is right but the policy refuses (quiet hours, direction,
        frequency): no "try again"; the relay, which answered, hangs up silently."""
        self.refusal = decision
        self.ext = ext
        self.ivr_end_at = self.ivr_end_at or now
        self.unconnected = "policy"
        self.hangup(now, cause=decision.cause, reason=decision.reason)

    def give_up(self, keyed: bool, now: float) -> None:
        """Every try failed: the relay hangs up (Q.850 28 invalid number format, or 102
        recovery on timer expiry when nothing was keyed)."""
        self.ivr_end_at = self.ivr_end_at or now
        self.unconnected = "no_extension"
        self.hangup(now, cause=28 if keyed else 102, reason="no_extension")

    def _digit(self, digit: str, now: float) -> None:
        if self.phase is Phase.COLLECTING and self.ivr is not None:
            self.ivr.digit(digit, now)

    def _digits_timeout(self, now: float) -> None:
        if self.phase is Phase.COLLECTING and self.ivr is not None:
            self.ivr.timeout(now)

    def _offer_to_callee(self, sdp: bytes | None, error: BaseException | None,
                         now: float) -> None:
        if self.ended:
            return
        if error is not None or not sdp:
            self.hangup(now, cause=47, reason="media")
            return
        self._place(sdp, now)

    # -- the relay's voice -----------------------------------------------------------------
    def play(self, prompt: str, now: float, *, repeat: bool = False,
             then: Callable[[float], None] | None = None, limit: float | None = None) -> None:
        """Play `prompt` into the caller; `then` runs when it ends (or its guard fires).

        Public: the IVR layer plays through it (ivr.VoicePort)."""
        self.prompts.append(prompt)
        self.after_play = then
        self.play_id = None  # what played is replaced: its end, if reported, is stale
        self.timers.pop(Timer.PROMPT, None)

        def started(play_id: Any, error: BaseException | None, now: float) -> None:
            if self.ended:
                return
            if error is not None:
                self.play_id = None
                self._played(now)  # go on without the prompt
                return
            self.play_id = int(play_id)
            if then is not None:
                self._arm(Timer.PROMPT, now + (limit or self.settings.prompt_guard))

        self._enqueue(self._job("play", Side.CALLER, prompt=prompt, flag=repeat), started)
        self._pump(now)

    def stop_play(self, now: float) -> None:
        """Stop the prompt playing into the caller (barge-in)."""
        self.play_id = None
        self.after_play = None
        self.timers.pop(Timer.PROMPT, None)
        self._enqueue(self._job("stop_play", Side.CALLER), _ignore)
        self._pump(now)

    def _played(self, now: float) -> None:
        self.play_id = None
        self.timers.pop(Timer.PROMPT, None)
        then, self.after_play = self.after_play, None
        if then is not None and not self.ended:
            then(now)

    # -- events from the media backend -----------------------------------------------------
    def media_event(self, ev: DigitReceived | PlaybackEnded, now: float) -> None:
        """A digit from the caller's RTP, or the end of a prompt."""
        if self.ended:
            return
        _FROM_MEDIA[type(ev)](self, ev, now)
        self._pump(now)

    def _on_digit(self, ev: DigitReceived, now: float) -> None:
        if ev.side is Side.CALLER:
            self._digit(ev.digit, now)

    def _on_played(self, ev: PlaybackEnded, now: float) -> None:
        if ev.play_id == self.play_id:  # an older prompt's end (stopped, replaced): stale
            self._played(now)

    # -- events from the legs -----------------------------------------------------------
    def leg_events(self, leg: LegPort, events: list[CCEvent], now: float) -> None:
        """Call-control events a leg reported (dispatched by event type)."""
        for ev in events:
            _FROM_LEG[type(ev)](self, leg, ev, now)
        self._pump(now)

    def _side(self, leg: LegPort) -> Side:
        return Side.CALLER if leg is self.a else Side.CALLEE

    def _other(self, leg: LegPort) -> LegPort | None:
        return self.b if leg is self.a else self.a

    def _on_ring(self, leg: LegPort, ev: Ring, now: float) -> None:
        self.times.stamp("callee", "ring_at", now)
        if self.ivr is not None:
            # The caller was answered long ago and hears ringback: nothing to relay.
            if (self.phase, "ring") in TABLE:
                self._go("ring")
                self.host.emit(CallRinging(self.id, now, *self._parties(),
                                           invite_at=self._invites()))
            return

        def ring(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            if self.a.can("ring") and not self.ended:
                self.a.deliver(Ring(ev.code, sdp or b""), now)
                self.times.stamp("caller", "ring_at", now)
                if (self.phase, "ring") in TABLE:
                    first = self.phase is Phase.PLACING
                    self._go("ring")
                    if first:
                        self.host.emit(CallRinging(self.id, now, *self._parties(),
                                                   invite_at=self._invites()))

        self._enqueue(self._job("answer", self._side(leg), ev.sdp), ring)

    def _on_connect(self, leg: LegPort, ev: Connect, now: float) -> None:
        self.times.stamp("callee", "answer_at", now)
        self.timers.pop(Timer.RING, None)
        if self.ivr is not None:
            self._enqueue(self._job("answer", Side.CALLEE, ev.sdp), self._bridged_after_ivr)
            return
        a = self.a

        def connect(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            if self.ended or not a.can("connect"):
                return
            if error is not None or sdp is None:
                a.deliver(Fail(488, 65, "media"), now)
                self.hangup(now, cause=65, reason="media")
                return
            # Late offer: our 2xx offers, and the caller's ACK will answer.
            a.deliver(Connect(sdp, offer=op == "offer"), now)
            self._connected(now)
            self.times.stamp("caller", "answer_at", now)

        # Late offer: the callee's 2xx carries the offer, not an answer.
        b = self.b
        op = "offer" if b is not None and b.late else "answer"
        self._enqueue(self._job(op, self._side(leg), ev.sdp), connect)

    def _bridged_after_ivr(self, sdp: bytes | None, error: BaseException | None,
                           now: float) -> None:
        if self.ended:
            return
        if error is not None or sdp is None:
            self.hangup(now, cause=65, reason="media")
            return
        # The caller already has its answer: stop the ringback and let the media through.
        self.stop_play(now)
        self._enqueue(self._job("detect", Side.CALLER, flag=False), _ignore)
        self._connected(now)

    def _connected(self, now: float) -> None:
        self._go("connect")
        self.host.counts["answered"] += 1
        limit = self.max_seconds or self.settings.max_call_seconds
        self._arm(Timer.DURATION, now + limit)
        self._arm_session()
        self.host.emit(CallAnswered(self.id, now, *self._parties(),
                                    invite_at=self._invites()))

    def _on_fail(self, leg: LegPort | None, ev: Fail, now: float) -> None:
        if (leg is not None and leg is self.b and self.phase is Phase.PLACING
                and leg.code in FAILOVER_CODES):
            # Nothing rang: the trunk, not the callee, failed (RFC 3263 §4.3). The
            # next trunk of the call's plan gets the same offer; the ring timer runs on.
            b = self.host.failover(self, leg)
            if b is not None:
                self.failovers += 1
                self.b = b
                self._try(b, now)
                return

        def fail(_r: Any, _e: BaseException | None, now: float) -> None:
            if self.ended:
                return
            if self.ivr is not None:
                # The caller is answered: end its dialog with the callee's cause.
                self.a.deliver(Disconnect("callee", ev.cause), now)
            elif self.a.can("fail"):
                self.a.deliver(ev, now)
            self._end("callee", ev.cause, now, "fail")

        self._enqueue(_nojob, fail)

    def _on_disconnect(self, leg: LegPort, ev: Disconnect, now: float) -> None:
        def disconnect(_r: Any, _e: BaseException | None, now: float) -> None:
            if self.ended:
                return
            other = self._other(leg)
            if other is not None:
                other.deliver(ev, now)
            self._end(ev.by, ev.cause, now, "disconnect")

        self._enqueue(_nojob, disconnect)

    def _on_offer(self, leg: LegPort, ev: Offer, now: float) -> None:
        def sent(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            other = self._other(leg)
            if self.ended or not leg.can("answer"):
                return
            if error is not None or sdp is None:
                leg.deliver(Answer(int(getattr(error, "status", 488))), now)
            elif other is None or not other.can("offer") or other.negotiating:
                leg.deliver(Answer(491), now)  # RFC 3261 §14.2 (also: nobody to ask yet)
            else:
                other.deliver(Offer(ev.method, sdp), now)

        self._enqueue(self._job("offer", self._side(leg), ev.sdp), sent)

    def _on_answer(self, leg: LegPort, ev: Answer, now: float) -> None:
        def answered(sdp: bytes | None, error: BaseException | None, now: float) -> None:
            other = self._other(leg)
            if self.ended or other is None or not other.can("answer"):
                return
            if ev.code >= 300 or not ev.sdp:
                other.deliver(Answer(ev.code), now)
            elif error is not None or sdp is None:
                other.deliver(Answer(488), now)
            else:
                other.deliver(Answer(ev.code, sdp), now)

        sdp = ev.sdp if ev.code < 300 else b""
        self._enqueue(self._job("answer", self._side(leg), sdp), answered)

    def _on_info(self, leg: LegPort, ev: Info, now: float) -> None:
        if leg is self.a and self.phase is not Phase.CONNECTED:
            # Before the bridge an INFO digit is for the relay (AXE), never for the callee.
            leg.deliver(InfoReply(200 if ev.digit else 415), now)
            if ev.digit:
                self._digit(ev.digit, now)
            return
        other = self._other(leg)
        if other is not None and other.can("info"):
            other.deliver(ev, now)
        else:
            leg.deliver(InfoReply(481), now)

    def _on_info_reply(self, leg: LegPort, ev: InfoReply, now: float) -> None:
        other = self._other(leg)
        if other is not None and other.can("info_reply"):
            other.deliver(ev, now)

    def late_answer(self, sdp: bytes, now: float) -> None:
        """The caller's ACK answered the callee's offer: ACK the callee with it."""
        def acked(out: bytes | None, error: BaseException | None, now: float) -> None:
            b = self.b
            if self.ended or b is None:
                return
            if error is not None or out is None:
                b.deliver(Ack(b""), now)  # complete the callee's transaction, then end
                self.hangup(now, cause=65 if error is not None else 31, reason="media")
                return
            b.deliver(Ack(out), now)

        self._enqueue(self._job("answer", Side.CALLER, sdp), acked)
        self._pump(now)

    # -- timers ---------------------------------------------------------------------------
    def _arm(self, timer: Timer, deadline: float) -> None:
        self.timers[timer] = deadline
        self.host.arm(self, timer, deadline)

    def on_timer(self, timer: Timer, now: float) -> None:
        """A named timer fired (the host checked it is still armed at this deadline)."""
        del self.timers[timer]
        _TIMERS[timer](self, now)
        self._pump(now)

    def _ring_timeout(self, now: float) -> None:
        """No answer within ring_timeout: CANCEL the callee, 480 (or BYE) to the caller."""
        if (self.phase, Timer.RING) not in TABLE:
            return
        if self.b is not None:
            self.b.deliver(Disconnect("relay", 19), now)
        if self.ivr is not None:
            self.a.deliver(Disconnect("relay", 19), now)
        elif self.a.can("fail"):
            self.a.deliver(Fail(480, 19, "no_answer"), now)
        self.end_reason = "no_answer" if self.ivr is not None else None
        self._end("relay", 19, now, Timer.RING)

    def _duration(self, now: float) -> None:
        self.hangup(now, cause=16, reason="max_duration")

    def _arm_session(self) -> None:
        """One timer for both legs' sessions, at the earlier leg's next need. A refresh
        only postpones a leg's need, so a timer that fires early just re-arms."""
        dues = [leg.session.due() for leg in (self.a, self.b)
                if leg is not None and leg.session is not None]
        if dues:
            self._arm(Timer.SESSION, min(dues))

    def _session(self, now: float) -> None:
        """RFC 4028 §10: a leg not refreshed in time ends the call (BYE both, cause 102);
        a leg the relay refreshes gets its UPDATE or re-INVITE."""
        if self.phase is not Phase.CONNECTED:
            return
        for leg in (self.a, self.b):
            session = leg.session if leg is not None else None
            if leg is None or session is None:
                continue
            if now >= session.expires_at():
                self.hangup(now, cause=102, reason="session_expired")
                return
            if session.we_refresh and now >= session.refresh_at():
                leg.refresh(now)
        self._arm_session()

    def _prompt_guard(self, now: float) -> None:
        self._played(now)

    # -- the relay ends calls -------------------------------------------------------------
    def hangup(self, now: float, *, cause: int = 16, reason: str = "") -> None:
        """The relay ends the call (max duration, freeze, drain, operator): BYE, CANCEL
        or a final response to each leg, whatever its state asks for."""
        if self.ended:
            return
        if reason:
            self.end_reason = reason
        ev = Disconnect("relay", cause)
        self.a.deliver(ev, now)
        if self.b is not None:
            self.b.deliver(ev, now)
        self._end("relay", cause, now, "disconnect")
        self._pump(now)

    @property
    def answered(self) -> bool:
        """The callee answered (the media is bridged)."""
        return self.phase is Phase.CONNECTED or (
            self.times.legs["callee"]["answer_at"] is not None and self.b is not None
            and self.b.code == 200)

    # -- the queue and the end ------------------------------------------------------------
    def _setup_job(self, sdp: bytes, *, record: bool | None = None
                   ) -> Callable[[], MediaJob | None]:
        rec = self.record_media if record is None else record
        return lambda: MediaJob(self.host.job_seq(), self.id, "setup", Side.CALLER, sdp, rec)

    def _job(self, op: str, side: Side, sdp: bytes = b"", *, prompt: str = "",
             flag: bool = False) -> Callable[[], MediaJob | None]:
        if op in ("offer", "answer") and not sdp:
            return _nojob
        return lambda: (MediaJob(self.host.job_seq(), self.id, op, side, sdp,
                                 handle=self.media, prompt=prompt, flag=flag)
                        if self.media is not None and not self.ended else None)

    def _enqueue(self, make: Callable[[], MediaJob | None], cont: Continuation) -> None:
        self.queue.append((make, cont))

    def media_done(self, job: MediaJob, result: Any, error: BaseException | None,
                   now: float) -> None:
        """The adapter finished `job`: run its continuation, then the next queued step."""
        if self.busy is not job:
            return
        self.busy = None
        if job.op == "setup" and error is None:
            self.media, result = result
        _make, cont = self.queue.popleft()
        if error is not None:
            self.host.counts["media_errors"] += 1
        cont(result, error, now)
        self._pump(now)

    def _pump(self, now: float) -> None:
        """Run queued continuations until one needs the media backend."""
        q = self.queue
        while q and self.busy is None:
            make, cont = q[0]
            job = make()
            if job is not None:
                self.busy = job
                self.host.job(job)
                return
            q.popleft()
            cont(None, None, now)

    def _end(self, by: str, cause: int, now: float, event: str) -> None:
        """The call is over: stamp it, release its media, then write its record."""
        if self.ended:
            return
        self._go(event)
        self.ended = True
        self.host.ending(self)
        self.released_by = by
        self.cause = cause
        self.timers.clear()
        self.play_id = None
        self.after_play = None
        if self.ivr is not None and self.ivr_end_at is None:
            self.ivr_end_at = now
        self.times.stamp("caller", "end_at", now)
        if self.b is not None:
            self.times.stamp("callee", "end_at", now)

        def make() -> MediaJob | None:
            if self.media is None:
                return None
            return MediaJob(self.host.job_seq(), self.id, "release", handle=self.media)

        def released(result: object, error: BaseException | None, now: float) -> None:
            self.recording = result
            self._go("released")
            self._finish(now)

        self.queue.append((make, released))

    def _parties(self) -> tuple[str | None, str | None, str | None, str | None,
                                str | None, str | None]:
        """x, binding, out_id, direction, caller, callee: the fields call events carry."""
        return (self.x, self.binding, self.out_id, self.direction, self.caller,
                self.callee)

    def _invites(self) -> tuple[int | None, int | None]:
        """When the caller's INVITE came and the callee's went (UTC ms): call events carry
        them for the live-call journal."""
        legs = self.times.legs
        return (legs["caller"]["invite_at"], legs["callee"]["invite_at"])

    def _finish(self, now: float) -> None:
        refused, record = call_record(self)
        self.host.emit(CallRefused(self.id, now, record) if refused
                       else CallEnded(self.id, now, record))
        self.host.finished(self)


def _nojob() -> MediaJob | None:
    return None


def _ignore(_r: Any, _e: BaseException | None, _now: float) -> None:
    return None


# Leg event -> handler, and timer -> handler (dispatch by table, STYLE.md).
_FROM_LEG: dict[type, Callable[[CallController, LegPort, Any, float], None]] = {
    Ring: CallController._on_ring,
    Connect: CallController._on_connect,
    Fail: CallController._on_fail,
    Disconnect: CallController._on_disconnect,
    Offer: CallController._on_offer,
    Answer: CallController._on_answer,
    Info: CallController._on_info,
    InfoReply: CallController._on_info_reply,
}
_FROM_MEDIA: dict[type, Callable[[CallController, Any, float], None]] = {
    DigitReceived: CallController._on_digit,
    PlaybackEnded: CallController._on_played,
}
_TIMERS: dict[Timer, Callable[[CallController, float], None]] = {
    Timer.RING: CallController._ring_timeout,
    Timer.DURATION: CallController._duration,
    Timer.DIGITS: CallController._digits_timeout,
    Timer.PROMPT: CallController._prompt_guard,
    Timer.SESSION: CallController._session,
}
