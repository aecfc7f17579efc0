"""SMS traffic over SMPP beside the calls of a profile run.

One gateway account binds twice, as smpplib and SMSCs do: a transmitter that submits
messages from each binding's A to its X at the profile's rate, and a receiver that takes
the relay's deliver_sm (to B, sender X) and answers at once. Both run on the project's
sans-IO SMPP session (relay.sms.session) in a thread with its own event loop, so either
call engine can run beside it. A deliver_sm that shows A's real number is a leak.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from relay.sms._state import Role
from relay.sms.events import Bound, MessageReceived, ResponseReceived
from relay.sms.session import SessionConfig, SmppSession

from .common import percentile
from .plan import BindingSpec, SmsAttempt

__all__ = ["SmsRun"]

SUBMIT_SM = 0x00000004


@dataclass(slots=True)
class _Stats:
    submitted: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    delivered: int = 0
    sent_at: dict[bytes, float] = field(default_factory=dict)
    delivery_ms: list[float] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    wrong: int = 0  # delivered to someone else than B, or not from X
    mismatches: list[dict[str, Any]] = field(default_factory=list)  # replay: other status


class _Link(asyncio.Protocol):
    def __init__(self, run: SmsRun, mode: str) -> None:
        self.run = run
        self.mode = mode
        self.loop = asyncio.get_running_loop()
        self.session = SmppSession(Role.CLIENT, self.loop.time(),
                                   SessionConfig(window=10, enquire_link_interval=3600.0,
                                                 response_timeout=3600.0))
        self.transport: asyncio.Transport | None = None
        self.bound = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session.bind(self.loop.time(), self.run.system_id, self.run.password, self.mode)
        self.flush()

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for ev in self.session.receive_data(data, self.loop.time()):
            if isinstance(ev, MessageReceived):
                self.session.respond(ev, 0)
                self.run.delivered(ev, now)
            elif isinstance(ev, ResponseReceived) and ev.request.command_id == SUBMIT_SM:
                st = ev.response.command_status
                s = self.run.stats
                s.statuses[st] = s.statuses.get(st, 0) + 1
                self.run.answered(getattr(ev.request, "sequence", None), st)
            elif isinstance(ev, Bound):
                self.bound.set()
        self.flush()


class SmsRun:
    """`rate` messages/s for `seconds` over SMPP at `addr`, from the live bindings' A."""

    def __init__(self, addr: tuple[str, int], account: str, bindings: list[BindingSpec],
                 rate: float, seconds: float, schedule: list[SmsAttempt] | None = None
                 ) -> None:
        """`schedule` (replay): submit each of these at its offset instead of `rate`
        messages/s, and compare each answer's status with the one it expects."""
        self.addr = addr
        self.system_id, _, self.password = account.partition(":")
        self.pairs = [(b.a, b.x, b.b) for b in bindings if not b.frozen and b.a]
        self.rate = rate
        self.seconds = seconds
        self.schedule = schedule
        self.stats = _Stats()
        self.stop = threading.Event()
        self.error = ""
        self._thread = threading.Thread(target=self._main, name="sms", daemon=True)
        # Who may receive a text from X (never from a real number: that is a leak).
        self._to: dict[str, set[str]] = {}
        self._real: set[str] = set()
        for b in bindings:
            self._to.setdefault(b.x.lstrip("+"), set()).update(
                n.lstrip("+") for n in (b.a, b.b) if n)
            self._real |= {n.lstrip("+") for n in (b.a, b.b) if n}
        for m in schedule or []:
            if m.recipient:
                self._to.setdefault(m.x.lstrip("+"), set()).add(m.recipient.lstrip("+"))
            self._real |= {n.lstrip("+") for n in (m.sender, m.recipient) if n}
        self._sent: dict[int, SmsAttempt] = {}  # submit_sm sequence -> what it replays

    def span(self) -> float:
        """How long the submitting lasts (s from its start)."""
        if self.schedule is not None:
            return self.schedule[-1].offset if self.schedule else 0.0
        return self.seconds

    def answered(self, seq: int | None, status: int) -> None:
        m = self._sent.pop(seq, None) if seq is not None else None
        if m is not None and status != m.expect_status:
            self.stats.mismatches.append({
                "record": m.source_id, "x": m.x, "expected": f"0x{m.expect_status:02X}",
                "got": f"0x{status:02X}"})

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)

    def delivered(self, ev: MessageReceived, now: float) -> None:
        s = self.stats
        s.delivered += 1
        sent = s.sent_at.pop(bytes(ev.short_message), None)
        if sent is not None:
            s.delivery_ms.append((now - sent) * 1000.0)
        src = ev.source_addr.lstrip("+")
        if src in self._real:
            s.leaks.append(f"SMS to the recipient with sender +{src[:5]}… (a real number)")
        if ev.destination_addr.lstrip("+") not in self._to.get(src, set()):
            s.wrong += 1

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # the SMS side reports, never kills the run
            self.error = repr(exc)

    async def _run(self) -> None:
        if self.schedule is None and (not self.pairs or self.rate <= 0):
            return
        if self.schedule is not None and not self.schedule:
            return
        loop = asyncio.get_running_loop()
        host, port = self.addr
        _, rx = await loop.create_connection(lambda: _Link(self, "rx"), host, port)
        _, tx = await loop.create_connection(lambda: _Link(self, "tx"), host, port)
        await asyncio.wait_for(asyncio.gather(rx.bound.wait(), tx.bound.wait()), 15)
        sched = self.schedule
        total = len(sched) if sched is not None else int(self.rate * self.seconds)
        t0 = time.monotonic()
        for i in range(total):
            if self.stop.is_set():
                break
            at = sched[i].offset if sched is not None else i / self.rate
            while (delay := t0 + at - time.monotonic()) > 0 and not self.stop.is_set():
                await asyncio.sleep(min(delay, 0.2))  # a stop is heard within 0.2 s
            while tx.session.window_free == 0 and not self.stop.is_set():
                await asyncio.sleep(0.005)
            if self.stop.is_set():
                break
            if sched is not None:
                a, x = sched[i].sender, sched[i].x
            else:
                a, x, _b = self.pairs[i % len(self.pairs)]
            body = b"loadtest %d" % i
            self.stats.sent_at[body] = time.monotonic()
            pdu = tx.session.submit(loop.time(), source_addr=a, source_addr_ton=1,
                                    source_addr_npi=1, destination_addr=x, dest_addr_ton=1,
                                    dest_addr_npi=1, short_message=body)
            if sched is not None:
                self._sent[pdu.sequence] = sched[i]
            self.stats.submitted += 1
            tx.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.stop.is_set():
            answered = sum(self.stats.statuses.values())
            if answered >= self.stats.submitted and self.stats.delivered >= \
                    self.stats.statuses.get(0, 0):
                break
            await asyncio.sleep(0.05)
        for link in (tx, rx):
            if link.transport is not None:
                link.transport.close()

    def report(self) -> dict[str, Any]:
        s = self.stats
        return {"submitted": s.submitted, "accepted": s.statuses.get(0, 0),
                "refused": {f"0x{k:02X}": v for k, v in s.statuses.items() if k},
                "delivered": s.delivered, "wrong_recipient_or_sender": s.wrong,
                "delivery_ms": {f"p{p}": (round(percentile(s.delivery_ms, p), 3)
                                          if s.delivery_ms else None) for p in (50, 95, 99)},
                "leaks": s.leaks[:20], "error": self.error or None,
                **({"expected_mismatches": len(s.mismatches) + len(self._sent),
                    "mismatches": s.mismatches[:50]
                    + [{"record": m.source_id, "x": m.x, "got": "no answer"}
                       for m in list(self._sent.values())[:10]]}
                   if self.schedule is not None else {})}
