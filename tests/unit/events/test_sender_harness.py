"""The sender against an in-memory outbox and a receiver that fails at random (503, 429
with Retry-After, no answer): everything arrives, each key in order, Retry-After kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.events.model import make_event
from relay.events.outbox import OutboxRow
from relay.events.sender import OutboxSender
from relay.io.webhook import Attempt, RetryPolicy


class MemoryOutbox:
    """The SQLite outbox's rules in memory: only each key's oldest event is due."""

    def __init__(self, rows: list[OutboxRow]) -> None:
        self.rows = rows

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        seen: set[str] = set()
        out = []
        for r in self.rows:
            if r.key in seen:
                continue
            seen.add(r.key)
            if r.next_at <= now:
                out.append(r)
        return out[:limit]

    async def done(self, ids: Sequence[str]) -> None:
        self.rows = [r for r in self.rows if r.id not in set(ids)]

    async def defer(self, row: OutboxRow, status: int | None, next_at: float) -> None:
        self.rows = [OutboxRow(r.id, r.key, r.type, r.body, r.attempts + 1, next_at)
                     if r.id == row.id else r for r in self.rows]

    async def size(self) -> int:
        return len(self.rows)


class FlakyReceiver:
    """Answers from a script of outcomes, then 200; records what it took and when."""

    def __init__(self, script: list[Attempt], clock: list[float]) -> None:
        self.script = script
        self.clock = clock
        self.taken: list[str] = []
        self.tried: dict[str, list[float]] = {}
        self.asked: dict[str, float] = {}

    async def post(self, key: str, body: bytes) -> Attempt:
        now = self.clock[0]
        self.tried.setdefault(key, []).append(now)
        if key in self.asked:
            assert now >= self.asked.pop(key), "Retry-After was not honoured"
        result = self.script.pop(0) if self.script else Attempt(200)
        if result.ok:
            self.taken.append(key)
        elif result.retry_after is not None:
            self.asked[key] = now + result.retry_after
        return result


OUTCOMES = st.sampled_from([Attempt(200), Attempt(503), Attempt(None), Attempt(500),
                            Attempt(429, retry_after=7.0), Attempt(400)])


@settings(max_examples=60, deadline=None)
@given(script=st.lists(OUTCOMES, max_size=80),
       keys=st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_all_delivered_in_order_per_key(script: list[Attempt], keys: list[int]) -> None:
    events = [make_event("call.ringing", f"k{k}", 0.0, {"n": i}) for i, k in enumerate(keys)]
    rows = [OutboxRow(e.id, e.key, e.type, e.body, 0, 0.0) for e in events]
    clock = [0.0]
    outbox = MemoryOutbox(rows)
    receiver = FlakyReceiver(list(script), clock)
    policy = RetryPolicy(backoff=1.0, backoff_max=8.0, final_4xx=False)
    sender = OutboxSender(outbox, receiver, policy,  # type: ignore[arg-type]
                          clock=lambda: clock[0])

    async def drive() -> None:
        for _ in range(2000):
            await sender.round(clock[0])
            if not outbox.rows:
                return
            clock[0] += 0.5
        raise AssertionError("the outbox never drained")

    asyncio.run(drive())
    assert sorted(receiver.taken) == sorted(e.id for e in events)  # all, each once taken
    order = {e.id: i for i, e in enumerate(events)}
    for k in set(keys):
        mine = [order[i] for i in receiver.taken if i in {e.id for e in events
                                                        if e.key == f"k{k}"}]
        assert mine == sorted(mine), f"key k{k} out of order"
