"""The events' journal: what a `kill -9` would otherwise lose between a call's end and
the record writer's next commit.

The record writer commits records and their events together, but only every 50-200 ms
(relay.records: batches are what make 200 calls/s cheap). An event and the record it
describes are appended here as they are made, and the journal is written and fsync'd
on a worker thread at most `flush_every` (10 ms) later, in one write per batch. At
start, what the last run journaled and did not commit is handed back to the record
writer (events are idempotent in the outbox; a record is put back only when the store
lacks it, never over a newer version). So a `kill -9` loses at most the last ~10 ms.

The journal is a series of segment files `<dir>/events-<n>-<pid>.jnl`; an entry is a
JSON line `{"k": kind, "r": record, "e": [[id, type, key, at, size], ...]}`, then each
event's body as it will be posted (`size` bytes), then a newline. The writer
commits events in the order they were submitted, so the journal only counts them
(`committed`): a segment is deleted once every event in it has been committed. A
segment is closed after `segment_seconds`, so under steady load old ones go away.
One journal folder per node: relays sharing a store must not share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model import Event

if TYPE_CHECKING:
    from relay.records import RecordStore, RecordWriter

__all__ = ["EventJournal"]

log = logging.getLogger("relay.events")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class EventJournal:
    """Append-only, fsync'd per batch; see the module docstring."""

    def __init__(self, directory: Path, *, flush_every: float = 0.01,
                 segment_seconds: float = 1.0) -> None:
        self.dir = directory
        self.flush_every = flush_every
        self.segment_seconds = segment_seconds
        self._lines: list[bytes] = []  # encoded, waiting for the next write
        self._submitted = 0  # events handed to the record writer, in total (this run)
        self._committed = 0  # events the writer has committed, in total (this run)
        # Closed segments: (path, events submitted up to its last line).
        self._closed: list[tuple[Path, int]] = []
        self._current: Path | None = None
        self._current_events = 0  # the value of `_submitted` at its last line
        self._opened_at = 0.0
        self._seq = 0
        self._writing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0  # entries written and fsync'd
        self.replayed = 0  # events handed back at start
        self.errors = 0  # failed writes (the events still go to the writer)

    # ---- the call path: encode and queue (no IO) ----
    def append(self, events: list[Event], kind: str | None = None,
               record: dict[str, Any] | None = None) -> None:
        """Journal `events` (and the record they describe); call right after handing
        both to the record writer, in the same order."""
        if not events:
            return
        # The bodies follow their header raw: no second JSON encoding of each body.
        head = {"k": kind, "r": record,
                "e": [[e.id, e.type, e.key, e.at, len(e.body)] for e in events]}
        self._lines.append(b"".join([_encode(head).encode(), b"\n",
                                     *(e.body for e in events), b"\n"]))
        self._submitted += len(events)
        self._wake.set()

    def committed(self, count: int) -> None:
        """The record writer's on_commit hook: `count` more events are in the store."""
        self._committed += count
        while self._closed and self._closed[0][1] <= self._committed:
            path, _ = self._closed.pop(0)
            with contextlib.suppress(OSError):
                path.unlink()
        if self._current is not None and not self._writing and not self._lines \
                and self._committed >= self._submitted:
            # All caught up (idle, or a clean stop): nothing in it needs replaying, and
            # a replay would post its delivered events again.
            with contextlib.suppress(OSError):
                self._current.unlink()
            self._current = None

    # ---- start: replay ----
    async def replay(self, writer: RecordWriter, records: RecordStore) -> int:
        """Hand what earlier runs journaled to `writer` (events; records the store
        lacks), then keep those segments until it has committed them. Returns the
        number of events handed back."""
        self.dir.mkdir(parents=True, exist_ok=True)
        old = sorted(self.dir.glob("events-*.jnl"), key=_seq_of)
        self._seq = _seq_of(old[-1]) + 1 if old else 0
        for path in old:
            entries = await asyncio.to_thread(_read, path)
            for kind, record, events in entries:
                if record is not None and kind is not None \
                        and await _missing(records, kind, record):
                    writer.submit(kind, record)
                writer.submit_events(events)
                self._submitted += len(events)
                self.replayed += len(events)
            self._closed.append((path, self._submitted))
        if self.replayed:
            log.warning("events journal: %d events of an earlier run handed back",
                        self.replayed)
        return self.replayed

    # ---- the writer task ----
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="events-journal")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.flush_every)  # what comes meanwhile joins the write
            await self._write(loop.time())

    async def _write(self, now: float) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        if self._current is not None and now - self._opened_at >= self.segment_seconds:
            self._closed.append((self._current, self._current_events))
            self._current = None
            self.committed(0)  # it may be committed already
        if self._current is None:
            self._current = self.dir / f"events-{self._seq}-{os.getpid()}.jnl"
            self._seq += 1
            self._opened_at = now
        self._current_events = self._submitted
        self._writing = True
        try:
            await asyncio.to_thread(_append, self._current, b"".join(lines))
            self.written += len(lines)
        except OSError as exc:
            self.errors += 1
            log.error("events journal not written (%d entries): %s", len(lines), exc)
        finally:
            self._writing = False

    async def stop(self) -> None:
        """Write what waits (a clean stop: the writer's final flush commits it too)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._write(asyncio.get_running_loop().time())


def _seq_of(path: Path) -> int:
    """The sequence number in `events-<n>-<pid>.jnl` (-1 for a name not ours)."""
    try:
        return int(path.stem.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> list[tuple[str | None, dict[str, Any] | None, list[Event]]]:
    out: list[tuple[str | None, dict[str, Any] | None, list[Event]]] = []
    with path.open("rb") as f:
        while line := f.readline():
            try:
                d = json.loads(line)
                events = []
                for i, t, k, at, size in d["e"]:
                    body = f.read(size)
                    if len(body) != size:
                        raise ValueError("short body")
                    events.append(Event(i, t, k, float(at), body))
                if f.read(1) != b"\n":
                    raise ValueError("no end of entry")
            except (ValueError, KeyError, TypeError):
                break  # an entry cut short by the kill: nothing after it was written
            out.append((d.get("k"), d.get("r"), events))
    return out


async def _missing(records: RecordStore, kind: str, record: dict[str, Any]) -> bool:
    from relay.bindings.store import StoreUnavailable

    try:
        return await records.get(kind, str(record["id"])) is None
    except (StoreUnavailable, KeyError):
        return False
