"""Overload control without I/O: the admitted fraction follows the measured delay."""

from __future__ import annotations

from relay.b2bua.overload import OverloadConfig, OverloadGuard


def offer(guard: OverloadGuard, start: float, seconds: float, rate: int,
          delay: float = 0.0) -> int:
    """`rate` INVITEs a second for `seconds`, the delay observed before each; admitted."""
    admitted = 0
    n = int(seconds * rate)
    for i in range(n):
        guard.observe_delay(delay)
        admitted += guard.admit(start + i / rate)
    return admitted


def test_no_delay_admits_everything() -> None:
    g = OverloadGuard()
    assert offer(g, 0.0, 2.0, 1000, delay=0.01) == 2000
    assert g.fraction == 1.0 and g.shed == 0


def test_delay_over_target_sheds_a_growing_share_and_recovers() -> None:
    g = OverloadGuard(OverloadConfig(delay_ms=100))
    offer(g, 0.0, 0.2, 1000)
    admitted = offer(g, 0.2, 1.0, 1000, delay=0.15)  # over the target, under twice it
    assert 0.05 < g.fraction < 0.5 and admitted < 1000 and g.shed == 1000 - admitted
    before = g.fraction
    offer(g, 1.2, 0.15, 1000, delay=0.3)  # over twice the target: halved
    assert g.fraction <= before * 0.75 * 0.5 + 1e-9
    offer(g, 1.35, 1.0, 1000, delay=0.3)
    assert g.fraction < 0.001 and offer(g, 2.35, 0.1, 1000, delay=0.3) <= 1
    offer(g, 2.45, 1.5, 1000, delay=0.01)  # healthy again: back by a tenth per interval
    assert g.fraction == 1.0


def test_a_stall_is_not_a_standing_queue() -> None:
    g = OverloadGuard(OverloadConfig(delay_ms=100))
    g.admit(0.0)
    g.observe_delay(0.8)  # one scheduler stall...
    g.observe_delay(0.004)  # ...and the queue drained within the interval
    assert g.admit(0.1) and g.fraction == 1.0 and g.last_delay == 0.004
    g.observe_delay(0.5)  # a whole interval behind (a fresh relay's first call, say)
    assert g.admit(0.2) and g.fraction == 1.0
    g.observe_delay(0.5)  # and the next one too: now it is a standing queue
    g.admit(0.31)
    assert g.fraction == 0.5


def test_admissions_are_spread_evenly() -> None:
    g = OverloadGuard()
    g.fraction = 0.5
    g._until = 1e9  # no adjustment during the test
    assert [g.admit(0.0) for _ in range(6)] == [False, True, False, True, False, True]


def test_queued_jobs_cap_and_forced_overload() -> None:
    g = OverloadGuard(OverloadConfig(max_jobs=10))
    g.observe_jobs(10)
    assert not g.admit(0.0)
    g.observe_jobs(9)
    assert g.admit(0.0)
    forced = OverloadGuard(OverloadConfig(force_after=2))
    assert [forced.admit(0.0) for _ in range(4)] == [True, True, False, False]


def test_off_and_stale_measurements() -> None:
    off = OverloadGuard(OverloadConfig(delay_ms=0))
    assert offer(off, 0.0, 1.0, 100, delay=5.0) == 100
    g = OverloadGuard()
    g.admit(0.0)
    g.observe_delay(9.0)  # long ago, and no INVITE since: no decision from it
    assert g.admit(60.0) and g.fraction == 1.0


def test_sampled_refusal_records() -> None:
    g = OverloadGuard(OverloadConfig(sample_every=3, retry_after=7))
    assert [g.sample() for _ in range(7)] == [True, False, False, True, False, False, True]
    assert g.retry_after == "7"
    assert not OverloadGuard(OverloadConfig(sample_every=0)).sample()


def test_a_loop_on_time_does_not_hide_a_standing_queue() -> None:
    """The loop's timers fire on time between read batches while datagrams wait half a
    second in the socket: the queue's delay decides, not the smaller lag."""
    g = OverloadGuard(OverloadConfig(delay_ms=100))
    g.admit(0.0)
    for t in (0.1, 0.2, 0.3):
        g.observe_lag(0.003)
        g.observe_delay(0.5)
        g.admit(t)
    assert g.fraction < 1.0 and g.last_delay == 0.5
    g2 = OverloadGuard(OverloadConfig(delay_ms=100))  # and a late loop with no SIP at all
    g2.admit(0.0)
    for t in (0.1, 0.2, 0.3):
        g2.observe_lag(0.4)
        g2.admit(t)
    assert g2.fraction < 1.0
