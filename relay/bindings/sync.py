"""Keeping a node's in-memory table in step with the store.

At start the follower loads a snapshot, then reads the change feed from the snapshot's
offset.  If the store goes away the node keeps routing from memory and reports degraded;
when the store returns the follower resumes from its offset (or reloads when the feed no
longer reaches back that far, or the store's epoch says it is a different data set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .pool import NumberPool
from .store import Change, FeedGap, Store, StoreUnavailable
from .table import BindingTable

__all__ = ["Follower"]

log = logging.getLogger("relay.sync")


class Follower:
    """Loads and follows one store into one table and pool."""

    def __init__(self, store: Store, table: BindingTable, pool: NumberPool,
                 block: float = 1.0) -> None:
        self.store = store
        self.table = table
        self.pool = pool
        self.block = block
        self.offset = "0"
        self.epoch = ""
        self.degraded = False
        self.last_error = ""
        self.degraded_since: float | None = None
        self.applied = 0
        self.reloads = 0
        self._task: asyncio.Task[None] | None = None
        #: Called after every load: the node re-applies freezes the store has not taken
        #: yet (relay.bindings.pending), so a reload never un-freezes a number.
        self.on_load: Callable[[], None] | None = None

    async def load(self) -> None:
        """Replace the table with a fresh snapshot (start, or the feed lost our place)."""
        snap = await self.store.snapshot()
        self.table.clear()
        load = self.table.load
        for rec in snap.records:
            load(rec)
        self.pool.replace(snap.numbers)
        self.offset, self.epoch = snap.offset, snap.epoch
        self.reloads += 1
        if self.on_load is not None:
            self.on_load()
        log.info("loaded %d bindings and %d numbers (offset %s)", len(self.table),
                 len(self.pool), self.offset)

    def apply(self, changes: list[Change]) -> None:
        for ch in changes:
            if ch.binding is not None:
                self.table.apply(ch.binding, ch.quarantine_until)
            elif ch.number is not None:
                self.pool.add(ch.number)
        self.applied += len(changes)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="binding-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Follow the feed for ever; never raises except on cancellation."""
        backoff = 0.05
        while True:
            try:
                if self.degraded:
                    await self._recover()
                changes, self.offset = await self.store.changes(self.offset, self.block)
                if changes:
                    self.apply(changes)
                backoff = 0.05
            except FeedGap:
                log.warning("change feed no longer reaches offset %s: reloading", self.offset)
                await self._reload_or_degrade()
            except StoreUnavailable as exc:
                self._degrade(str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop routing updates for good
                log.exception("binding follower failed; retrying")
                await asyncio.sleep(1.0)

    def _degrade(self, why: str) -> None:
        if not self.degraded:
            log.warning("store unavailable, serving from memory: %s", why)
            self.degraded_since = time.time()
        self.degraded = True
        self.last_error = why

    async def _recover(self) -> None:
        epoch = await self.store.epoch()
        if epoch != self.epoch:
            log.warning("store epoch changed (%s -> %s): reloading", self.epoch, epoch)
            await self.load()
        self.degraded = False
        self.degraded_since = None
        log.info("store is back; following from offset %s", self.offset)

    async def _reload_or_degrade(self) -> None:
        try:
            await self.load()
        except StoreUnavailable as exc:
            self._degrade(str(exc))
