"""Frequency counters (relay.counters) on SQLite and a real Redis: the sliding window,
atomic admission under concurrency, history that outlives a policy edit; and the
property that no sequence of policy edits and calls admits more than the count in any
window (dialplan decision + counter, in memory)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialplan.policy import Limit, Policy
from dialplan.route import Bridge, counted, decide
from relay.counters import MemoryCounters, open_counter_store

pytestmark = pytest.mark.integration
T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: Any, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/relay.db"
    return str(request.getfixturevalue("redis_server").url)


async def test_window_slides_and_refusals_are_not_logged(store_url: str) -> None:
    c = open_counter_store(store_url)
    await c.open()
    try:
        two = Limit(2, 3600)
        assert await c.take("call:b1:+1", T0, two)
        assert await c.take("call:b1:+1", T0 + 10, two)
        assert not await c.take("call:b1:+1", T0 + 20, two)
        assert await c.take("call:b1:+2", T0 + 20, two)  # another caller
        assert await c.used("call:b1:+1", T0 + 20, 3600) == 2
        assert await c.take("call:b1:+1", T0 + 3600, two)  # (now - per, now]: T0 is out
        assert not await c.take("call:b1:+1", T0 + 3605, two)
        assert await c.take("call:b1:+1", T0 + 3610.5, two)  # T0 + 10 left the window
        # A longer window counts attempts made under the shorter one.
        assert not await c.take("call:b1:+1", T0 + 3700, Limit(3, 7200))
    finally:
        await c.close()


async def test_concurrent_takes_admit_exactly_count(store_url: str) -> None:
    c = open_counter_store(store_url)
    await c.open()
    try:
        got = await asyncio.gather(*(c.take("sms:b2:+3", T0 + i / 1000, Limit(5, 60))
                                     for i in range(40)))
        assert sum(got) == 5
    finally:
        await c.close()


class _Entry:
    id, mode, state, a, b, voice, sms = "b1", "AXB", "active", "+1", "+2", True, True

    def effective_state(self, now: float) -> str:
        return "active"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5000), st.integers(1, 4), st.integers(60, 4000)),
                min_size=1, max_size=40))
def test_no_policy_edits_and_calls_admit_over_the_count(
        steps: list[tuple[float, int, int]]) -> None:
    counters = MemoryCounters()
    now = T0
    admitted: list[float] = []
    for gap, count, per in steps:
        now += gap
        policy = Policy("p", max_calls=Limit(count, per))  # edited before every call
        d = decide(_Entry(), True, "+1", now, policy=policy)
        assert isinstance(d, Bridge) and d.limit is not None
        d = counted(d, counters.take_now("call:b1:+1", now, d.limit))
        if isinstance(d, Bridge):
            admitted.append(now)
            assert sum(1 for t in admitted if now - per < t <= now) <= count


async def test_contacts_store_and_writer(store_url: str) -> None:
    from dialplan.score import DAY, Contact
    from relay.contacts import (
        ContactWriter,
        contact_from_call,
        contact_from_message,
        open_contact_store,
    )

    call = {"caller": "+1", "binding": "b1", "started_at": T0, "sip_code": 200,
            "unconnected_cause": "none", "duration_ms": 3000}
    assert contact_from_call(call) == ("+1", Contact(T0, "b1", "call", False, True))
    declined = {**call, "sip_code": 486, "unconnected_cause": "none", "duration_ms": 0}
    assert contact_from_call(declined) == ("+1", Contact(T0, "b1", "call", True, False))
    cancelled = {**call, "sip_code": 487, "duration_ms": 0}
    assert contact_from_call(cancelled)[1].refused is False  # type: ignore[index]
    assert contact_from_call({**call, "caller": "anonymous"}) is None
    text = {"sender": "+1", "binding": None, "x": "+86170", "started_at": T0 + 1,
            "status": "refused"}
    assert contact_from_message(text) == ("+1", Contact(T0 + 1, "+86170", "sms", True))

    store = open_contact_store(store_url)
    await store.open()
    writer = ContactWriter(store)
    try:
        for item in (contact_from_call(call), contact_from_message(text),
                     ("+1", Contact(T0 - 8 * DAY, "b9", "call")),
                     ("+2", Contact(T0, "b1", "call"))):
            writer.submit(item)
        writer.submit(None)
        await writer.flush()
        got = await store.recent("+1", T0 + 10)
        assert sorted(c.at for c in got) == [T0, T0 + 1]  # the 8-day-old one is not recent
        assert len(await store.recent("+2", T0 + 10)) == 1
    finally:
        await writer.stop()
        await store.close()


async def test_scores_are_cached_and_read_once_at_a_time() -> None:
    from dialplan.score import Contact
    from relay.contacts import Scores

    class SlowStore:
        reads = 0

        async def recent(self, caller: str, now: float) -> list[Contact]:
            SlowStore.reads += 1
            await asyncio.sleep(0.05)
            return [Contact(now - i, "b1", "call", refused=True) for i in range(4)]

    scores = Scores(SlowStore(), "UTC", ttl=10.0)  # type: ignore[arg-type]
    got = await asyncio.gather(*(scores.score("+1", T0) for _ in range(20)))
    assert got == [6] * 20 and SlowStore.reads == 1
    assert await scores.score("+1", T0 + 9) == 6 and SlowStore.reads == 1
    assert await scores.score("+1", T0 + 10) == 6 and SlowStore.reads == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scores.score("+2", T0), 0.01)
    assert await scores.score("+2", T0) == 6  # a cancelled read leaves nothing behind


async def _until(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def test_views_on_one_redis_share_admissions_and_a_new_view_loads_them(
        redis_server: Any) -> None:
    """The call path's FrequencyView decides at once from memory; another node's
    admissions reach it through the store, and a restarted node loads the history."""
    from relay.counters import FrequencyView

    url = str(redis_server.url)
    one, two = (FrequencyView(open_counter_store(url)) for _ in range(2))
    await one.open()
    await two.open()
    try:
        two_per_hour, now = Limit(2, 3600), T0
        assert one.take_now("call:b1:+1", now, two_per_hour)
        assert one.take_now("call:b1:+1", now + 1, two_per_hour)
        assert not one.take_now("call:b1:+1", now + 2, two_per_hour)  # exact on one node
        await _until(lambda: two.used_now("call:b1:+1", now + 2, 3600) == 2,
                     "node two never saw node one's admissions")
        assert not two.take_now("call:b1:+1", now + 3, two_per_hour)
        assert two.take_now("call:b1:+2", now + 3, two_per_hour)  # another caller
        await _until(lambda: one.used_now("call:b1:+2", now + 3, 3600) == 1,
                     "node one never saw node two's admission")
        assert one.errors == two.errors == 0
    finally:
        await one.close()
        await two.close()
    three = FrequencyView(open_counter_store(url))
    await three.open()  # a node started later: the store's history, not an empty view
    try:
        assert three.used_now("call:b1:+1", T0 + 10, 3600) == 2
        assert not three.take_now("call:b1:+1", T0 + 10, Limit(2, 3600))
        assert three.take_now("call:b1:+1", T0 + 3601, Limit(2, 3600))  # T0 left
    finally:
        await three.close()


async def test_a_view_on_sqlite_survives_a_restart(tmp_path: Path) -> None:
    from relay.counters import FrequencyView

    url = f"sqlite:///{tmp_path}/relay.db"
    view = FrequencyView(open_counter_store(url))
    await view.open()
    assert view.take_now("sms:b1:+1", T0, Limit(1, 60))
    await view.close()  # sends what is unsent
    again = FrequencyView(open_counter_store(url))
    await again.open()
    try:
        assert not again.take_now("sms:b1:+1", T0 + 30, Limit(1, 60))
        assert again.take_now("sms:b1:+1", T0 + 61, Limit(1, 60))
    finally:
        await again.close()


async def test_a_view_whose_redis_is_gone_fails_as_configured_and_catches_up(
        redis_server: Any) -> None:
    """With Redis down the view is stale: "closed" refuses, "open" decides from memory;
    both are counted, and admissions made meanwhile reach Redis when it returns."""
    from relay.counters import FrequencyView

    server = redis_server
    url = server.url
    closed = FrequencyView(open_counter_store(url), fail_open=False)
    opened = FrequencyView(open_counter_store(url), fail_open=True)
    await closed.open()
    await opened.open()
    try:
        assert closed.take_now("call:b1:+1", T0, Limit(5, 60)) and closed.errors == 0
        await asyncio.sleep(0.2)  # sent
        server.stop()
        await _until(lambda: not closed.healthy and not opened.healthy, "never went stale")
        assert not closed.take_now("call:b1:+1", T0 + 1, Limit(5, 60))
        assert opened.take_now("call:b1:+1", T0 + 1, Limit(5, 60))
        assert closed.errors == 1 and opened.errors == 1
        server.start()
        await _until(lambda: closed.healthy and opened.healthy, "never caught up", 30.0)
        check = open_counter_store(url)
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while await check.used("call:b1:+1", T0 + 2, 60) < 2:
                assert asyncio.get_running_loop().time() < deadline, "not sent after return"
                await asyncio.sleep(0.05)
        finally:
            await check.close()
    finally:
        await closed.close()
        await opened.close()
