"""The events subsystem of a node: `[events]` settings, the hub the call and SMS paths
report to, and the outbox sender, started and stopped with the node.

    [events]
    url = "https://platform.example.com/relay-events"  # off when absent
    secret = "shared-secret"      # X-Relay-Signature: sha256=HMAC(secret, body)
    real_numbers = false          # true: real caller/callee numbers in events
    link_ttl = 7200               # lifetime of recording.ready's signed links
    stream_maxlen = 100000        # Redis: the capped stream {relay}:events
    backoff = 1.0                 # first retry after this, doubling ...
    backoff_max = 300.0           # ... up to this (a Retry-After may ask for longer)
    timeout = 10.0                # one POST
    concurrency = 64              # POSTs in flight (each to a different call)
    stream = false                # Redis: true without url is stream-only (no webhook)
    journal = ""                  # the journal's folder (default: beside the SQLite
                                  # file, or var/events-journal on Redis)

The hub runs on the event loop and only builds bytes and queues them on the record
writer, which commits them to the outbox with the records (no IO on the call path),
and on the journal (relay.events.journal), which has them on disk within 10 ms so a
`kill -9` before the writer's commit loses none.

Stream-only (`stream = true`, no `url`, Redis store): events go to the capped stream
`{relay}:events` for consumers reading with their own consumer groups (XREADGROUP);
the outbox entries written beside them are settled at once, as if a webhook took them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.b2bua.events import CallEnded, CallEvent, CallRefused
from relay.io.webhook import Attempt, RetryPolicy, WebhookClient
from relay.records import RecordWriter
from relay.settings import EventsSection
from relay.subsystem import Stop, Subsystem

from .build import EventBuilder, LinkSpec
from .journal import EventJournal
from .outbox import open_outbox
from .sender import OutboxSender

if TYPE_CHECKING:
    from relay.app import Node

__all__ = ["EventHub", "EventsSettings", "EventsSubsystem"]

log = logging.getLogger("relay.events")


# `[events]` is declared and checked in relay.settings (EventsSection).
EventsSettings = EventsSection


class EventHub:
    """Where the call and SMS paths report; events go to the record writer's queue."""

    def __init__(self, writer: RecordWriter, builder: EventBuilder,
                 journal: EventJournal | None = None) -> None:
        self.writer = writer
        self.builder = builder
        self.journal = journal
        self.made = 0

    def on_call_event(self, ev: CallEvent) -> None:
        """The SIP adapter's `events` sink (its record was submitted just before)."""
        events = self.builder.call(ev)
        self.made += len(events)
        self.writer.submit_events(events)
        if self.journal is not None:
            # Only a finished call's record: earlier versions are superseded by it (and
            # a call cut short by a crash is relay.live_journal's to finish).
            self.journal.append(events, "call", ev.record
                                if isinstance(ev, CallEnded | CallRefused) else None)

    def on_message(self, rec: dict[str, Any], now: float) -> None:
        """A message record was saved (submitted just before)."""
        events = self.builder.message(rec, now)
        if events:
            self.made += len(events)
            self.writer.submit_events(events)
            if self.journal is not None:
                self.journal.append(events, "message", dict(rec))


def install_binding_events(node: Node) -> EventBuilder | None:
    """With `[events] url`, make the binding service commit binding.frozen with each
    freeze (also for the CLI's `relay freeze`, which runs no sender); the builder."""
    from relay.recordings_config import recordings_settings

    s = node.config.sections.events
    if not s.url and not s.stream:
        return None
    if not s.url and not node.config.store.startswith("redis"):
        from relay.config import ConfigError

        raise ConfigError("[events] stream without url needs a Redis store")
    rec = recordings_settings(node.config)
    host, port = node.config.http
    base = rec.link_base or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    builder = EventBuilder(real_numbers=s.real_numbers,
                           links=LinkSpec(rec.signer(), base, s.link_ttl))
    node.service.events_for = builder.binding
    for store in (node.records, node.store):  # Redis: the capped events stream
        if hasattr(store, "events_maxlen"):
            store.events_maxlen = s.stream_maxlen
    return builder


class EventsSubsystem(Subsystem):
    """Events: the hub the call and SMS paths report to, the journal, the outbox sender
    (off without `[events] url` or `stream`)."""

    name = "events"
    sections = ("events", "recordings")

    async def run(self, node: Node) -> Stop | None:
        return await _start(node)


async def _start(node: Node) -> Stop | None:
    """Start events on `node` when `[events] url` (or stream) is set; their stop."""
    builder = install_binding_events(node)
    if builder is None:
        return None
    s = node.config.sections.events
    journal = EventJournal(_journal_dir(node, s))
    await journal.replay(node.record_writer, node.records)
    node.record_writer.on_commit.append(journal.committed)
    journal.start()
    node.events = EventHub(node.record_writer, builder, journal)
    outbox = open_outbox(node.config.store)
    await outbox.open()
    client: WebhookClient | StreamOnly = (
        WebhookClient(s.url, s.secret, timeout=s.timeout, concurrency=s.concurrency)
        if s.url else StreamOnly())
    await client.start()
    sender = OutboxSender(outbox, client, RetryPolicy(backoff=s.backoff,
                                                      backoff_max=s.backoff_max,
                                                      final_4xx=False),
                          batch=max(s.concurrency, 64), lease_ttl=s.lease_ttl)
    node.record_writer.on_commit.append(sender.wake)
    sender.start()
    node.events_sender = sender
    _metrics(node, sender)

    async def stop() -> None:
        # Whatever is undelivered waits in the outbox for the next start (the record
        # writer's final flush, after the hooks, still commits what is queued).
        await sender.stop()
        await client.close()
        await outbox.close()
        await journal.stop()

    log.info("events to %s (numbers %s)", s.url or "the Redis stream only",
             "real" if s.real_numbers else "masked")
    return stop


class StreamOnly:
    """The sender's client in stream-only mode: the stream already has each event (the
    records' MULTI wrote it), so every outbox entry is settled as taken."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def post(self, key: str, body: bytes) -> Attempt:
        return Attempt(200)


def _journal_dir(node: Node, s: EventsSettings) -> Path:
    if s.journal:
        return Path(s.journal)
    # One folder per node (relay/events/journal.py): the workers of one `relay serve
    # --workers` share the store, so each gets its own by its RELAY_NODE_ID.
    worker = re.sub(r"[^A-Za-z0-9_.-]", "_", os.environ.get("RELAY_NODE_ID", ""))
    tail = f"-{worker}" if worker else ""
    if node.config.store.startswith("sqlite://"):
        from relay.bindings.sqlite_store import SqliteStore

        db = SqliteStore(node.config.store).path
        return db.with_name(db.name + "-events" + tail)
    return Path("var") / ("events-journal" + tail)


def _metrics(node: Node, sender: OutboxSender) -> None:
    m = node.metrics
    m.counter_from("relay_events_delivered_total", "events the webhook took",
                   lambda: float(sender.delivered))
    m.counter_from("relay_events_failed_attempts_total", "event POSTs not taken (retried)",
                   lambda: float(sender.failed_attempts))
    m.gauge("relay_events_backlog", "due events not taken in the last round",
            lambda: float(sender.backlog))
