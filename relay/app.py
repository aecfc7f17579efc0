"""One relay node: the store, the in-memory table and its follower, the sweeper, and the
listeners, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .events.sender import OutboxSender
    from .events.service import EventHub
    from .guard import LeakGuard
    from .io.sip import SipServer
    from .io.sms_service import SmsService

from .bindings.pending import PendingJournal
from .bindings.pool import NumberPool
from .bindings.service import BindingService, Lifecycle
from .bindings.store import StoreUnavailable, open_store
from .bindings.sync import Follower
from .bindings.table import BindingTable
from .config import Config
from .contacts import ContactWriter, Scores, open_contact_store
from .counters import FrequencyView, open_counter_store
from .live_journal import LiveJournal
from .metrics import Metrics
from .policies import PolicyBook, open_policy_store
from .records import RecordWriter, open_record_store
from .subsystem import Subsystem

__all__ = ["Node", "serve"]

log = logging.getLogger("relay")


def default_subsystems() -> list[Subsystem]:
    """A node's parts, in start order (events first: the others report to its hub)."""
    from .events.service import EventsSubsystem
    from .io.sms_service import SmsSubsystem
    from .io.voice import VoiceSubsystem
    from .recordings_config import RecordingsSubsystem

    return [EventsSubsystem(), SmsSubsystem(), VoiceSubsystem(), RecordingsSubsystem()]


class Node:
    """Everything one `relay serve` process runs: the binding core here, the rest as the
    declared `subsystems` (relay.subsystem); `on_start`/`on_stop` for embedders."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store = open_store(config.store)
        self.store_kind = config.store.split(":", 1)[0]
        self.table = BindingTable()
        self.pool = NumberPool()
        self.metrics = Metrics()
        self.follower = Follower(self.store, self.table, self.pool)
        self.service = BindingService(
            self.store, self.table, self.pool,
            Lifecycle(default_cc=config.default_cc, quarantine=config.quarantine,
                      frozen_hold=config.frozen_hold), clock)
        # Issue 13: freezes never wait for the store (relay.bindings.pending).
        self.service.pending = PendingJournal(config.journal_path())
        self.service.store_down = lambda: self.follower.degraded
        self.follower.on_load = self.service.overlay_pending
        self.records = open_record_store(config.store)
        self.live_calls = LiveJournal(config.journal_path())  # issue 13: crash-safe records
        self.policies = PolicyBook(config.default_policy)
        self.policy_store = open_policy_store(config.store)
        # The call path's counters: in memory, synced with the store beside it.
        self.counters = FrequencyView(open_counter_store(config.store),
                                      fail_open=config.counter_fail == "open")
        self.counter_errors = 0  # counts that failed or timed out (fail open/closed applied)
        self.contacts = open_contact_store(config.store)  # harassment score inputs
        self.contact_writer = ContactWriter(self.contacts)
        self.scores = Scores(self.contacts, config.score_tz)  # cached for the call path
        self.policies.frequency, self.policies.scores = self.counters, self.scores
        self.record_writer = RecordWriter(self.records)
        self.events: EventHub | None = None  # set by relay.events.service when [events] url
        # Set by the subsystems that own them when they start (None until then).
        self.voice: SipServer | None = None
        self.sms: SmsService | None = None
        self.events_sender: OutboxSender | None = None
        self.leak_guard: LeakGuard | None = None
        self.subsystems: list[Subsystem] = default_subsystems()
        self._started: list[Subsystem] = []
        self.draining = False
        self.http_port: int | None = None
        self.on_start: list[Callable[[Node], Awaitable[None]]] = []
        self.on_stop: list[Callable[[Node], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._metrics()

    def _metrics(self) -> None:
        m, f = self.metrics, self.follower
        import platform

        from . import __version__
        m.info("relay_build_info", "the relay's version and Python (always 1)",
               {"version": __version__, "python": platform.python_version()})
        m.gauge("relay_bindings", "live bindings in this node's table", lambda: len(self.table))
        m.gauge("relay_numbers", "numbers in the pool", lambda: len(self.pool))
        m.gauge("relay_store_degraded", "1 while the store is unreachable",
                lambda: 1.0 if f.degraded else 0.0)
        m.counter_from("relay_feed_changes_applied_total", "changes applied from the feed",
                lambda: float(f.applied))
        m.counter_from("relay_feed_reloads_total", "full reloads of the table",
                       lambda: float(f.reloads))
        m.counter_from("relay_store_unreplicated_total",
                       "changes no Redis replica confirmed in time (Sentinel: WAIT)",
                       lambda: float(getattr(self.store, "unreplicated", 0)))
        w = self.record_writer
        m.gauge("relay_records_pending", "call/message records waiting to be written",
                lambda: float(w.pending))
        m.gauge("relay_events_pending", "events waiting for the record writer's next commit",
                lambda: float(w.pending_events))
        m.counter_from("relay_events_dropped_total",
                       "events dropped before reaching the outbox (store down too long)",
                       lambda: float(w.events_dropped))
        m.counter_from("relay_records_dropped_total", "records dropped (store down too long)",
                lambda: float(w.dropped))
        p = self.policies
        m.counter_from("relay_policy_refresh_errors_total",
                       "re-reads of the policies that failed (the last view stays)",
                       lambda: float(p.refresh_errors))
        m.counter_from("relay_policy_counter_errors_total",
                       "frequency counts that failed or timed out (counter_fail applied)",
                       lambda: float(self.counter_errors + self.counters.errors))
        m.counter_from("relay_contacts_dropped_total",
                       "score inputs dropped (the store was down too long)",
                       lambda: float(self.contact_writer.dropped))

    async def start(self) -> None:
        """Open the store and load the table (or start degraded), then listen."""
        from .api.app import build_api

        try:
            await self.store.open()
            await self.records.open()
            await self.policy_store.open()
            await self.counters.open()
            await self.contacts.open()
            await self.follower.load()
            self.policies.replace(await self.policy_store.all())
            self.policies.replace_blocks(await self.policy_store.blocks())
        except StoreUnavailable as exc:
            log.error("store unavailable at start, serving an empty table until it returns: %s",
                      exc)
            self.follower.degraded = True
            self.follower.last_error = str(exc)
        self.follower.start()
        self.record_writer.start()
        self.contact_writer.start()
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sweeper"))
        self._tasks.append(asyncio.create_task(self._replayer(), name="pending-changes"))
        self._tasks.append(asyncio.create_task(self._policy_refresher(), name="policies"))
        app = build_api(self)
        self.api = app
        # The declared subsystems (relay.subsystem): routes first, then each starts in
        # order (events first: the others report to its hub); stopped in reverse.
        for part in self.subsystems:
            part.add_routes(self, app)
        for part in self.subsystems:
            await part.start(self)
            self._started.append(part)
        try:  # after the media backend finished the spools a crash left (voice)
            await self.live_calls.close_crashed(
                self.records, self.config.recordings,
                self.events.on_call_event if self.events is not None else None)
        except StoreUnavailable as exc:
            log.error("calls left live by a crash stay journaled until the store is back "
                      "at the next start: %s", exc)
        self.live_calls.start()
        for hook in self.on_start:
            await hook(self)
        from .api.access import AccessLogger
        self._runner = web.AppRunner(app, access_log=logging.getLogger("relay.access"),
                                     access_log_class=AccessLogger, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http[0], self.config.http[1],
                           reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.http_port = server.sockets[0].getsockname()[1]
        log.info("HTTP API on %s:%s, store %s", self.config.http[0], self.http_port,
                 self.store_kind)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            if self.follower.degraded:
                continue
            try:
                await self.service.sweep()
            except StoreUnavailable as exc:
                log.debug("sweep skipped: %s", exc)
            except Exception:
                log.exception("sweep failed")

    async def _replayer(self) -> None:
        """Write freezes made while the store was down once it is back (issue 13)."""
        while True:
            await asyncio.sleep(0.2)
            if self.follower.degraded or not self.service.pending:
                continue
            try:
                if done := await self.service.replay_pending():
                    log.info("store is back: %d pending freezes/releases written", done)
            except StoreUnavailable as exc:
                log.debug("pending changes wait: %s", exc)
            except Exception:
                log.exception("writing pending changes failed")
                await asyncio.sleep(1.0)

    async def _policy_refresher(self) -> None:
        """Re-read the policies and the blocklist beside the call path, so other nodes'
        edits arrive."""
        while True:
            await asyncio.sleep(self.config.policy_refresh)
            try:
                self.policies.replace(await self.policy_store.all())
                self.policies.replace_blocks(await self.policy_store.blocks())
            except StoreUnavailable as exc:
                self.policies.refresh_errors += 1
                log.debug("policy refresh skipped: %s", exc)

    async def stop(self) -> None:
        self.draining = True
        for hook in reversed(self.on_stop):
            with contextlib.suppress(Exception):
                await hook(self)
        while self._started:
            part = self._started.pop()
            try:
                await part.stop(self)
            except Exception:
                log.exception("stopping %s failed", part.name)
        await self.live_calls.stop()
        await self.record_writer.stop()
        await self.contact_writer.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.follower.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.records.close()
        await self.policy_store.close()
        await self.counters.close()
        await self.contacts.close()
        await self.store.close()
        if self.service.pending is not None:
            self.service.pending.close()


async def serve(config: Config, ready: Callable[[Node], None] | None = None) -> None:
    """Run a node until SIGINT or SIGTERM."""
    node = Node(config)
    await node.start()
    if ready is not None:
        ready(node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await node.stop()
