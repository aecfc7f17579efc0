"""Overload control: which new INVITEs to shed (503 + Retry-After) before the relay
falls behind. Sans-IO: the asyncio adapter feeds it measurements, the switch asks it.

What "falling behind" looks like here: one event loop serves SIP and media, so when
new calls cost more CPU than there is, SIP datagrams wait longer and longer in the
socket's receive buffer, the peers retransmit (RFC 3261 §17.1.1.2: INVITE after
T1, 2*T1...), each retransmission costs more work, and goodput collapses (issue 10
measured 200 calls/s completed at 2,000/s offered, a fifth of the capacity). A switch
must instead keep completing its capacity and refuse the rest cheaply.

The guard watches three things, all cheap to measure:

* **delay**: how late the loop serves what waits for it. The adapter reports the
  age of the first SIP datagram of each read batch (the oldest one queued: the
  kernel's receive timestamp against the wall clock) and the drift of a repeating
  timer (event-loop lag, which also covers TCP and media work);
* **jobs**: media jobs queued (setups, releases waiting for their recordings);
* **live** calls (the switch's own `max_calls` limit stays a hard cap beside this).

It admits a fraction `p` of new INVITEs, steered once per `interval` like TCP's
congestion window (AIMD), from the *smallest* delay seen in the interval (the queue's
and the lag's each, then the larger of the two): as in
CoDel (RFC 8289 §3), a queue that never drained below the target is a standing
queue, the sign of work arriving faster than it is served, while a burst or one
scheduler stall on a shared machine raises only some samples. Two intervals in a row
above the target (one alone is a stall, such as a fresh relay's first calls) shrink
`p` by a quarter (by half above twice the target), and every further one again;
below half the target it grows back by a tenth.
Admission follows `p` deterministically (a credit counter, no randomness), so the
admitted calls are spread evenly over time rather than in bursts. Requests inside
a dialog (ACK, BYE, re-INVITE, INFO) never reach the guard: the switch asks it only
for INVITEs that start a call.

A shed INVITE costs a 503 and its transaction; the switch keeps a counter and a
record for one refusal in `sample_every` (so that overload is visible in the call
records without writing one per refusal when writing is the last thing the relay
can afford).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OverloadConfig", "OverloadGuard"]


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    """Knobs (`[sip]` in relay.toml, see relay/io/voice.py)."""

    delay_ms: float = 100.0  # target: shed when SIP waits longer than this (0: off)
    max_jobs: int = 2000  # queued media jobs beyond which new calls are shed (0: no cap)
    interval: float = 0.1  # seconds between adjustments of the admitted fraction
    retry_after: int = 5  # seconds, in the 503's Retry-After (RFC 3261 §21.5.4)
    sample_every: int = 100  # one refusal record per this many 503s (0: none)
    force_after: int = 0  # test knob: admit this many calls, then shed every new one


class OverloadGuard:
    """Admission of new calls from the adapter's measurements. See the module docstring."""

    __slots__ = ("_credit", "_delay", "_lag", "_over", "_refused", "_until", "admitted", "config",
                 "fraction", "jobs", "last_delay", "shed")

    def __init__(self, config: OverloadConfig | None = None) -> None:
        """A guard that admits everything until its measurements say otherwise."""
        self.config = config or OverloadConfig()
        self.fraction = 1.0  # of new calls admitted
        self.jobs = 0
        self.admitted = 0
        self.shed = 0
        self._delay: float | None = None  # smallest queueing delay (s) in this interval
        self._lag: float | None = None  # smallest loop lag (s) in this interval
        self.last_delay = 0.0  # that of the last interval decided on (metrics)
        self._until: float | None = None  # end of the current interval
        self._credit = 0.0
        self._refused = 0
        self._over = 0  # intervals in a row above the target

    # -- measurements (the adapter) ---------------------------------------------------
    def observe_delay(self, seconds: float) -> None:
        """A SIP datagram's time in the receive queue."""
        if self._delay is None or seconds < self._delay:
            self._delay = seconds

    def observe_lag(self, seconds: float) -> None:
        """The drift of the loop's repeating timer.

        Kept apart from the queue's delay: the smallest of both together was the lag,
        for a loop that serves its timers between read batches fires them on time while
        the socket holds a standing queue of half a second (seen at 800 calls/s: the
        guard read 4-45 ms, shed nothing, and the kernel dropped 14,000 datagrams)."""
        if self._lag is None or seconds < self._lag:
            self._lag = seconds

    def observe_jobs(self, queued: int) -> None:
        """Media jobs queued now."""
        self.jobs = queued

    # -- decisions (the switch) -------------------------------------------------------
    def admit(self, now: float) -> bool:
        """May a new call start now? (Asked once per INVITE that starts a call.)"""
        c = self.config
        if c.force_after and self.admitted >= c.force_after:
            return self._shed()
        self._adjust(now)
        if c.max_jobs and self.jobs >= c.max_jobs:
            return self._shed()
        fraction = self.fraction
        if fraction < 1.0:
            self._credit += fraction
            if self._credit < 1.0:
                return self._shed()
            self._credit -= 1.0
        self.admitted += 1
        return True

    @property
    def retry_after(self) -> str:
        """The Retry-After value of a 503 (seconds, as text)."""
        return str(self.config.retry_after)

    def sample(self) -> bool:
        """True for the one refusal in `sample_every` that gets a call record."""
        every = self.config.sample_every
        if not every:
            return False
        self._refused += 1
        return every == 1 or self._refused % every == 1  # the first, then one in `every`

    def _shed(self) -> bool:
        self.shed += 1
        return False

    def _adjust(self, now: float) -> None:
        """Once per interval: steer the admitted fraction from the smallest delay seen."""
        until = self._until
        if until is None:
            self._until = now + self.config.interval
            return
        if now < until:
            return
        interval = self.config.interval
        target = self.config.delay_ms / 1000.0
        delay = max(self._delay or 0.0, self._lag or 0.0)
        self._delay = self._lag = None
        self.last_delay = delay
        stale = now > until + interval  # no INVITE for a while: old news, no decision
        self._until = now + interval if stale else until + interval
        if target <= 0.0 or stale:
            self._over = 0
            return
        self._over = self._over + 1 if delay > target else 0
        if self._over == 1:
            return  # one interval could be a stall: act on the second in a row
        if delay > 2 * target:
            self.fraction *= 0.5
        elif delay > target:
            self.fraction *= 0.75
        elif delay < target / 2:
            self.fraction = min(1.0, self.fraction + 0.1)
