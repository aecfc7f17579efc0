"""The events sender: posts the outbox's due heads, settles each, and sleeps until woken.

Each round takes the due head of every key (oldest first), posts them concurrently
(one request per key at a time, so a call's events stay in order), deletes what the
receiver took (2xx) and defers the rest by the retry policy (Retry-After honoured).
Nothing is ever given up: an event waits in the outbox until the receiver takes it.
The record writer wakes the sender after each commit that carried events; a timer
covers retries and events written by another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from relay.bindings.store import StoreUnavailable
from relay.io.webhook import Attempt, RetryPolicy

from .outbox import Outbox, OutboxRow

__all__ = ["OutboxSender", "Poster", "Settled"]

log = logging.getLogger("relay.events")


Settled = Callable[[OutboxRow, Attempt], None]


class Poster(Protocol):
    """Where the sender posts: a WebhookClient, or stream-only's (events.service)."""

    async def post(self, key: str, body: bytes) -> Attempt: ...


class OutboxSender:
    """Delivers one store's outbox to one webhook."""

    def __init__(self, outbox: Outbox, client: Poster, policy: RetryPolicy, *,
                 batch: int = 256, poll: float = 1.0, lease_ttl: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 on_settled: Settled | None = None) -> None:
        self.outbox = outbox
        self.client = client
        self.policy = policy
        self.batch = batch
        self.poll = poll
        self.lease_ttl = lease_ttl
        self.clock = clock
        # Told of each row taken (ok) or given up (a final 4xx, when the policy has
        # final_4xx): the SMS webhook updates the message's record.
        self.on_settled = on_settled
        self.given_up = 0
        self.holder = secrets.token_hex(8)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._leased = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0
        self.backlog = 0

    def wake(self, _count: int = 0) -> None:
        """New events were committed: look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._keeper = asyncio.create_task(self._keep_lease(), name="events-lease")
        self._task = asyncio.create_task(self._run(), name="events-sender")

    async def stop(self) -> None:
        for task in (self._task, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._keeper = None

    async def _keep_lease(self) -> None:
        """Take and renew the lease every third of its life, apart from the rounds (a
        round may wait on a slow receiver longer than the lease lasts). A process killed
        while holding it blocks the others for at most `lease_ttl`."""
        while True:
            try:
                held = await self.outbox.acquire(self.holder, self.clock(), self.lease_ttl)
            except StoreUnavailable:
                held = False
            if held:
                self._leased.set()
            else:
                self._leased.clear()
            await asyncio.sleep(self.lease_ttl / 3)

    async def _run(self) -> None:
        while True:
            await self._leased.wait()
            try:
                sent = await self.round(self.clock())
            except StoreUnavailable as exc:
                log.warning("events outbox unavailable: %s", exc)
                await self._sleep(self.poll)
                continue
            except Exception:
                log.exception("events sender failed a round")
                await self._sleep(self.poll)
                continue
            if not sent:
                await self._sleep(self.poll)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def round(self, now: float) -> int:
        """Post every due head once; returns how many were delivered."""
        rows = await self.outbox.due(now, self.batch)
        if not rows:
            self.backlog = 0
            return 0
        attempts = await asyncio.gather(*(self.client.post(r.id, r.body) for r in rows))
        pairs = list(zip(rows, attempts, strict=True))
        taken = [(r, a) for r, a in pairs if a.ok]
        final = [(r, a) for r, a in pairs if not a.ok and not self.policy.retryable(a)]
        if taken or final:
            await self.outbox.done([r.id for r, _a in taken + final])
            self.delivered += len(taken)
            self.given_up += len(final)
            for row, attempt in final:
                log.warning("%s %s refused for good (HTTP %s): given up", row.type, row.id,
                            attempt.status)
            if self.on_settled is not None:
                for row, attempt in taken + final:
                    self.on_settled(row, attempt)
        for row, attempt in pairs:
            if not attempt.ok and self.policy.retryable(attempt):
                await self._defer(row, attempt)
        self.backlog = len(rows) - len(taken)
        return len(taken)

    async def _defer(self, row: OutboxRow, attempt: Attempt) -> None:
        self.failed_attempts += 1
        wait = self.policy.delay(row.attempts + 1, attempt)
        if row.attempts == 0 or row.attempts % 10 == 9:
            log.info("event %s (%s) not taken (%s), attempt %d; next in %.1fs",
                     row.id, row.type, attempt.status, row.attempts + 1, wait)
        await self.outbox.defer(row, attempt.status, self.clock() + wait)
