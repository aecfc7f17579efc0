"""Call and message records: the store behind `/v1/calls` and `/v1/messages`, and the
writer that keeps record keeping off the call path.

Records are JSON documents with an `id` and a `started_at` (UNIX seconds), indexed by
`x`, `binding` and `out_id`, listed newest first.  They live beside the bindings: in the
same SQLite file, or in the same Redis (so any node can show any node's calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .bindings.store import StoreUnavailable
from .sqlite_thread import SqliteThread

if TYPE_CHECKING:
    from .events.model import Event

__all__ = ["RecordStore", "RecordWriter", "open_record_store"]

log = logging.getLogger("relay.records")
# One encoder for every record: json.dumps(..., separators=...) builds a new one per call.
_to_json = json.JSONEncoder(separators=(",", ":")).encode
_JSON_SLICE = 50  # records encoded per hold of the GIL on the writer's thread (~0.3 ms)
_INDEXED = ("x", "binding", "out_id")


class RecordStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put(self, kind: str, record: dict[str, Any]) -> None: ...
    async def put_many(self, kind: str, records: list[dict[str, Any]]) -> None: ...
    async def put_batch(self, records: dict[str, list[dict[str, Any]]],
                        events: Sequence[Event] = ()) -> None: ...
    async def get(self, kind: str, record_id: str) -> dict[str, Any] | None: ...
    async def query(self, kind: str, *, x: str | None = None, binding: str | None = None,
                    out_id: str | None = None, since: float | None = None,
                    until: float | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[dict[str, Any]], str | None]: ...


def _check(record: dict[str, Any]) -> None:
    if not isinstance(record.get("id"), str) or not isinstance(record.get("started_at"),
                                                                  int | float):
        raise ValueError("a record needs a string id and a numeric started_at")


def _parse_cursor(cursor: str | None) -> tuple[float, int] | None:
    """Cursors are `started_at:tiebreak` of the last record of the previous page."""
    if cursor is None:
        return None
    ts, _sep, tie = cursor.partition(":")
    try:
        return float(ts), int(tie)
    except ValueError:
        raise ValueError("cursor is not one this API gave out") from None


class SqliteRecordStore(SqliteThread):
    """Records in the relay's SQLite file (its own connection and thread)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS records(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL, id TEXT NOT NULL, started_at REAL NOT NULL,
        x TEXT, binding TEXT, out_id TEXT, doc TEXT NOT NULL,
        UNIQUE(kind, id));
    CREATE INDEX IF NOT EXISTS records_t ON records(kind, started_at);
    CREATE INDEX IF NOT EXISTS records_x ON records(kind, x, started_at);
    CREATE INDEX IF NOT EXISTS records_b ON records(kind, binding, started_at);
    CREATE INDEX IF NOT EXISTS records_o ON records(kind, out_id, started_at);
    """

    _what = "record store"
    _thread = "records"

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Index pages of recent records stay cached between batches instead of
        # being read back from the WAL (the default cache is 2 MiB).
        db.execute("PRAGMA cache_size=-32768")
        from .events.outbox import OUTBOX_SCHEMA

        db.executescript(self._SCHEMA + OUTBOX_SCHEMA)

    async def put(self, kind: str, record: dict[str, Any]) -> None:
        await self.put_many(kind, [record])

    async def put_many(self, kind: str, records: list[dict[str, Any]]) -> None:
        await self.put_batch({kind: records})

    async def put_batch(self, records: dict[str, list[dict[str, Any]]],
                        events: Sequence[Event] = ()) -> None:
        """Records of any kinds and events for the outbox, in one transaction: an event
        is durable exactly when the record it describes is (DESIGN.md "Events")."""
        for recs in records.values():
            for r in recs:
                _check(r)

        def w() -> None:
            # Encoded here, not on the event loop: a batch of records is a few ms of JSON.
            # The GIL is handed back between slices, so the event loop waits for one
            # slice at most, not for the whole batch (or a 5 ms switch interval).
            rows: list[tuple[Any, ...]] = []
            for kind, recs in records.items():
                for i in range(0, len(recs), _JSON_SLICE):
                    if rows:
                        time.sleep(0)
                    rows += [(kind, r["id"], float(r["started_at"]), r.get("x"),
                              r.get("binding"), r.get("out_id"), _to_json(r))
                             for r in recs[i:i + _JSON_SLICE]]
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO records(kind, id, started_at, x, binding, out_id, doc)"
                    " VALUES(?,?,?,?,?,?,?) ON CONFLICT(kind, id) DO UPDATE SET"
                    " started_at=excluded.started_at, x=excluded.x, binding=excluded.binding,"
                    " out_id=excluded.out_id, doc=excluded.doc", rows)
                if events:
                    from .events.outbox import SQLITE_INSERT

                    # OR IGNORE: a batch retried after a failed commit adds nothing twice.
                    db.executemany(SQLITE_INSERT, [(e.id, e.key, e.type, e.body)
                                                   for e in events])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self._run(w)

    async def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        def q() -> dict[str, Any] | None:
            row = self._conn().execute("SELECT doc FROM records WHERE kind=? AND id=?",
                                       (kind, record_id)).fetchone()
            return json.loads(row[0]) if row else None
        result: dict[str, Any] | None = await self._run(q)
        return result

    async def query(self, kind: str, *, x: str | None = None, binding: str | None = None,
                    out_id: str | None = None, since: float | None = None,
                    until: float | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        where, args = ["kind = ?"], [kind]
        for col, val in (("x", x), ("binding", binding), ("out_id", out_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)  # type: ignore[arg-type]
        if until is not None:
            where.append("started_at < ?")
            args.append(until)  # type: ignore[arg-type]
        after = _parse_cursor(cursor)
        if after is not None:
            where.append("(started_at < ? OR (started_at = ? AND seq < ?))")
            args += [after[0], after[0], after[1]]  # type: ignore[list-item]
        sql = (f"SELECT seq, started_at, doc FROM records WHERE {' AND '.join(where)}"
               f" ORDER BY started_at DESC, seq DESC LIMIT {int(limit) + 1}")

        def q() -> tuple[list[dict[str, Any]], str | None]:
            rows = self._conn().execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = f"{rows[-1][1]!r}:{rows[-1][0]}" if more and rows else None
            return [json.loads(r[2]) for r in rows], nxt
        result: tuple[list[dict[str, Any]], str | None] = await self._run(q)
        return result


class RedisRecordStore:
    """Records in Redis: a hash of documents and sorted sets by time per index value."""

    def __init__(self, url: str, prefix: str = "{relay}") -> None:
        from relay.bindings.redis_url import redis_client

        self._r: Any = redis_client(url, socket_timeout=2.0,
                                         socket_connect_timeout=1.0)
        self.prefix = prefix
        #: The capped copy of every event (`{relay}:events`, read with consumer groups).
        self.events_maxlen = 100_000

    def _k(self, kind: str, *parts: str) -> str:
        return ":".join((self.prefix, "rec", kind, *parts))

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()

    async def put(self, kind: str, record: dict[str, Any]) -> None:
        await self.put_many(kind, [record])

    async def put_many(self, kind: str, records: list[dict[str, Any]]) -> None:
        await self.put_batch({kind: records})

    async def put_batch(self, records: dict[str, list[dict[str, Any]]],
                        events: Sequence[Event] = ()) -> None:
        """Records and events in one MULTI/EXEC: the outbox (a sorted set by sequence
        and a hash of events) and the capped stream are written with the records."""
        from redis.exceptions import RedisError

        from .events.outbox import redis_outbox_writes

        pipe = self._r.pipeline(transaction=True)
        for kind, recs in records.items():
            for r in recs:
                _check(r)
                rid, ts = r["id"], float(r["started_at"])
                pipe.hset(self._k(kind), rid, _to_json(r))
                pipe.zadd(self._k(kind, "t"), {rid: ts})
                for name in _INDEXED:
                    if r.get(name):
                        pipe.zadd(self._k(kind, name, str(r[name])), {rid: ts})
        if events:
            redis_outbox_writes(pipe, self.prefix, events, self.events_maxlen)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        from redis.exceptions import RedisError

        try:
            doc = await self._r.hget(self._k(kind), record_id)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return json.loads(doc) if doc else None

    async def query(self, kind: str, *, x: str | None = None, binding: str | None = None,
                    out_id: str | None = None, since: float | None = None,
                    until: float | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first from the narrowest index; other filters are applied to the page."""
        from redis.exceptions import RedisError

        key = self._k(kind, "t")
        for name, val in (("binding", binding), ("x", x), ("out_id", out_id)):
            if val is not None:
                key = self._k(kind, name, val)
                break
        # The cursor keeps the page's upper bound and how many index entries were read,
        # so records arriving meanwhile (above the bound) do not shift the pages.
        top = f"({until}" if until is not None else "+inf"
        offset = 0
        if cursor is not None:
            top, sep, off = cursor.rpartition(":")
            if not sep or not off.isdigit() or not top:
                raise ValueError("cursor is not one this API gave out")
            offset = int(off)
        lo: Any = since if since is not None else "-inf"
        want = {"x": x, "binding": binding, "out_id": out_id}
        found: list[dict[str, Any]] = []
        try:
            while len(found) <= limit:
                ids = await self._r.zrevrangebyscore(key, top, lo, start=offset,
                                                     num=limit + 1)
                if not ids:
                    break
                docs = await self._r.hmget(self._k(kind), ids)
                for i, doc in enumerate(docs):
                    rec = json.loads(doc) if doc is not None else None
                    if rec is not None and all(v is None or rec.get(k) == v
                                               for k, v in want.items()):
                        found.append(rec)
                        if len(found) > limit:
                            return found[:limit], f"{top}:{offset + i}"
                offset += len(ids)
                if len(ids) <= limit:
                    break
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return found, None


def open_record_store(url: str) -> RecordStore:
    """The record store beside the binding store of `url`."""
    if url.startswith("sqlite://"):
        from .bindings.sqlite_store import SqliteStore

        return SqliteRecordStore(str(SqliteStore(url).path))
    return RedisRecordStore(url)


class RecordWriter:
    """Takes records from the call path without waiting, and writes them in batches.

    Updates of one record (a call ringing, answered, ended; a message forwarded, then
    delivered) that are still waiting are merged into one write of the newest version,
    and a short linger lets them meet.  Under sustained load commits come `pace` apart
    (sooner once a full `batch` waits), so each one carries many records.  While the
    store is down records wait in memory (up to `max_pending`, oldest dropped and
    counted beyond that) and are written when it returns; `stop()` flushes.

    Events (`submit_events`) are never merged: every batch carries all that wait, in
    order, in the transaction of its records, so an event is never committed after the
    record it describes; `on_commit` hooks hear how many events each commit carried.
    """

    def __init__(self, store: RecordStore, max_pending: int = 200_000,
                 batch: int = 1000, linger: float = 0.05, pace: float = 0.2) -> None:
        self.store = store
        self.batch = batch
        self.linger = linger
        self.pace = pace
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: list[Event] = []
        self.on_commit: list[Callable[[int], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.events_dropped = 0
        self.failures = 0

    def submit(self, kind: str, record: dict[str, Any]) -> None:
        """Queue a record; a newer version of a record still waiting replaces it.

        The writer owns `record` from now on (it is encoded on the store's thread):
        submit a copy if the caller keeps changing its own.
        """
        key = (kind, record["id"])
        if key not in self._pending and len(self._pending) >= self.max_pending:
            del self._pending[next(iter(self._pending))]
            self.dropped += 1
        self._pending[key] = record
        self._wake.set()

    def submit_events(self, events: Sequence[Event]) -> None:
        """Queue events for the outbox (in order), to commit with the next batch."""
        self._events.extend(events)
        over = len(self._events) - self.max_pending
        if over > 0:
            del self._events[:over]
            self.events_dropped += over
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="record-writer")

    async def _run(self) -> None:
        backoff = 0.1
        delay = self.linger
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(delay)
            delay = self.linger
            while self._pending or self._events:
                try:
                    await self._flush_batch()
                    backoff = 0.1
                    if self._pending and len(self._pending) < self.batch:
                        # Records keep coming: what arrived during this write waits `pace`,
                        # so under load a commit carries that much, not the few records
                        # that came during the last one (a commit's cost is mostly the
                        # index pages it rewrites, shared by all its records).
                        self._wake.set()
                        delay = self.pace
                        break
                except StoreUnavailable as exc:
                    self.failures += 1
                    log.warning("record store unavailable (%d records, %d events waiting): %s",
                                len(self._pending), len(self._events), exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    async def _flush_batch(self) -> None:
        items = list(itertools.islice(self._pending.items(), self.batch))
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for (kind, _id), rec in items:
            by_kind.setdefault(kind, []).append(rec)
        events = self._events[:self.batch * 4]
        await self.store.put_batch(by_kind, events)
        if events:
            del self._events[:len(events)]  # only now: new ones were appended meanwhile
            for hook in self.on_commit:
                hook(len(events))
        for key, rec in items:  # only now: a failed write keeps them queued
            if self._pending.get(key) is rec:  # not replaced by a newer version meanwhile
                del self._pending[key]
        self.written += len(items)

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to `timeout`), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._pending or self._events) \
                and asyncio.get_running_loop().time() < deadline:
            try:
                await self._flush_batch()
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        if self._pending or self._events:
            log.error("%d records and %d events could not be written before stopping",
                      len(self._pending), len(self._events))
