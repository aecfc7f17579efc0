"""The durable outbox, as the sender sees it: what is due, done, or to try again later.

Events enter the outbox in the record writer's transaction (`relay.records`
`put_batch`); this module reads and settles them. Only the *head* of each key (the
oldest event of a call or message still waiting) is ever due, which is what keeps
delivery in order per call while other calls' events pass a failing one.

SQLite: the `outbox` table in the relay's file (its own connection and thread).
Redis: `{relay}:outbox` (a sorted set of ids by sequence) and `{relay}:outbox:ev` (a
hash of id -> JSON row), written in the records' MULTI; plus the capped stream
`{relay}:events` for consumers with their own consumer groups (`XREADGROUP`).

One sender at a time per store holds a lease (`acquire`), so nodes or workers sharing
a store do not post the same events in parallel (which would break the order per call).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from relay.bindings.store import StoreUnavailable
from relay.sqlite_thread import SqliteThread

from .model import Event

__all__ = [
    "OUTBOX_SCHEMA", "Outbox", "OutboxRow", "RedisOutbox", "SqliteOutbox", "open_outbox",
    "redis_outbox_args", "redis_outbox_writes",
]

#: The outbox table; both SQLite writers (records, bindings) create it if missing.
OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    last_status INTEGER);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox(key, seq);
"""
SQLITE_INSERT = "INSERT OR IGNORE INTO outbox(id, key, type, body) VALUES(?,?,?,?)"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event waiting in the outbox, with its delivery state."""

    id: str
    key: str
    type: str
    body: bytes
    attempts: int
    next_at: float


class Outbox(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def due(self, now: float, limit: int) -> list[OutboxRow]: ...
    async def done(self, ids: Sequence[str]) -> None: ...
    async def defer(self, row: OutboxRow, status: int | None, next_at: float) -> None: ...
    async def size(self) -> int: ...
    async def acquire(self, holder: str, now: float, ttl: float) -> bool: ...
    async def put(self, events: Sequence[Event]) -> None: ...


class SqliteOutbox(SqliteThread):
    """The outbox table of the relay's SQLite file."""

    _what = "outbox"
    _thread = "outbox"

    def __init__(self, path: str, table: str = "outbox") -> None:
        super().__init__(path)
        # `outbox` holds the events; another table (the SMS webhook's `sms_outbox`)
        # is another queue with its own sender and lease.
        self.t = table
        self._lease = "sender" if table == "outbox" else table

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The record store creates `outbox`; the lease is the sender's own.
        db.execute("CREATE TABLE IF NOT EXISTS outbox_lease("
                   "name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL)")
        if self.t != "outbox":
            db.executescript(OUTBOX_SCHEMA.replace("outbox", self.t))

    async def put(self, events: Sequence[Event]) -> None:
        """Events into this queue directly (not in a record's transaction)."""
        sql = SQLITE_INSERT.replace("outbox", self.t)

        def w() -> None:
            self._conn().executemany(sql, [(e.id, e.key, e.type, e.body) for e in events])
        await self._run(w)

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        """Heads of their keys whose time has come, oldest first."""
        sql = (f"SELECT id, key, type, body, attempts, next_at FROM {self.t} o"
               f" WHERE next_at <= ? AND NOT EXISTS (SELECT 1 FROM {self.t} p"
               " WHERE p.key = o.key AND p.seq < o.seq) ORDER BY seq LIMIT ?")

        def q() -> list[OutboxRow]:
            rows = self._conn().execute(sql, (now, limit)).fetchall()
            return [OutboxRow(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]
        result: list[OutboxRow] = await self._run(q)
        return result

    async def done(self, ids: Sequence[str]) -> None:
        def w() -> None:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")  # one commit for the round, not one per event
            try:
                db.executemany(f"DELETE FROM {self.t} WHERE id = ?", [(i,) for i in ids])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self._run(w)

    async def defer(self, row: OutboxRow, status: int | None, next_at: float) -> None:
        def w() -> None:
            self._conn().execute(
                f"UPDATE {self.t} SET attempts = attempts + 1, next_at = ?, last_status = ?"
                " WHERE id = ?", (next_at, status, row.id))
        await self._run(w)

    async def size(self) -> int:
        def q() -> int:
            return int(self._conn().execute(f"SELECT count(*) FROM {self.t}").fetchone()[0])
        result: int = await self._run(q)
        return result

    async def acquire(self, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the sender's lease; False while another holder's is live."""
        def w() -> bool:
            db = self._conn()
            db.execute(
                "INSERT INTO outbox_lease(name, holder, until) VALUES(?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,"
                " until = excluded.until WHERE outbox_lease.holder = excluded.holder"
                " OR outbox_lease.until < ?", (self._lease, holder, now + ttl, now))
            row = db.execute("SELECT holder FROM outbox_lease WHERE name = ?",
                             (self._lease,)).fetchone()
            return bool(row and row[0] == holder)
        result: bool = await self._run(w)
        return result


# -- Redis --------------------------------------------------------------------------
_last_seq = [0]


def _next_seq() -> float:
    """A sequence for the outbox's sorted set: ms * 1000, strictly rising per process
    (exact in a float's 53 bits until the year 2255).

    Only the order within a key matters, and a key (a call, a message) lives on one
    node, so a per-process sequence orders it; across nodes the clocks interleave."""
    seq = max(time.time_ns() // 1_000_000 * 1000, _last_seq[0] + 1)
    _last_seq[0] = seq
    return float(seq)


def _row(e: Event) -> str:
    return json.dumps({"key": e.key, "type": e.type, "body": e.body.decode(), "attempts": 0,
                       "next_at": 0.0})


def redis_outbox_args(events: Sequence[Event], maxlen: int) -> list[Any]:
    """ARGV tail for a Lua script that writes the outbox (relay.bindings.redis_store):
    count, stream maxlen, then id, row, sequence, type, key, body per event."""
    args: list[Any] = [len(events), maxlen]
    for e in events:
        args += [e.id, _row(e), _next_seq(), e.type, e.key, e.body]
    return args


def redis_outbox_writes(pipe: Any, prefix: str, events: Sequence[Event],
                        maxlen: int) -> None:
    """Queue the outbox and stream writes of `events` on a MULTI pipeline."""
    q, h, stream = f"{prefix}:outbox", f"{prefix}:outbox:ev", f"{prefix}:events"
    for e in events:
        pipe.hsetnx(h, e.id, _row(e))
        pipe.zadd(q, {e.id: _next_seq()}, nx=True)
        pipe.xadd(stream, {"id": e.id, "type": e.type, "key": e.key, "body": e.body},
                  maxlen=maxlen, approximate=True)


class RedisOutbox:
    """The outbox in Redis (see the module docstring for the keys)."""

    _RENEW = """
    local cur = redis.call('GET', KEYS[1])
    if cur == false or cur == ARGV[1] then
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1
    end
    return 0
    """

    def __init__(self, url: str, prefix: str = "{relay}", window: int = 2000) -> None:
        from relay.bindings.redis_url import redis_client

        self._r: Any = redis_client(url, socket_timeout=2.0,
                                         socket_connect_timeout=1.0)
        self.q, self.h = f"{prefix}:outbox", f"{prefix}:outbox:ev"
        self.lease = f"{prefix}:outbox:lease"
        self.window = window

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()

    async def _call(self, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def due(self, now: float, limit: int) -> list[OutboxRow]:
        """Heads of their keys among the oldest `window` events, due by `now`."""
        ids = await self._call(self._r.zrange(self.q, 0, self.window - 1))
        if not ids:
            return []
        docs = await self._call(self._r.hmget(self.h, ids))
        seen: set[str] = set()
        out: list[OutboxRow] = []
        for raw_id, doc in zip(ids, docs, strict=True):
            if doc is None:
                continue
            d = json.loads(doc)
            if d["key"] in seen:
                continue
            seen.add(d["key"])
            if d["next_at"] <= now:
                out.append(OutboxRow(raw_id.decode(), d["key"], d["type"],
                                     d["body"].encode(), d["attempts"], d["next_at"]))
                if len(out) >= limit:
                    break
        return out

    async def done(self, ids: Sequence[str]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(self.q, *ids)
        pipe.hdel(self.h, *ids)
        await self._call(pipe.execute())

    async def defer(self, row: OutboxRow, status: int | None, next_at: float) -> None:
        doc = {"key": row.key, "type": row.type, "body": row.body.decode(),
               "attempts": row.attempts + 1, "next_at": next_at, "last_status": status}
        await self._call(self._r.hset(self.h, row.id, json.dumps(doc)))

    async def put(self, events: Sequence[Event]) -> None:
        """Events into this queue directly (not in a record's MULTI, not on the stream)."""
        pipe = self._r.pipeline(transaction=True)
        for e in events:
            pipe.hsetnx(self.h, e.id, _row(e))
            pipe.zadd(self.q, {e.id: _next_seq()}, nx=True)
        await self._call(pipe.execute())

    async def size(self) -> int:
        return int(await self._call(self._r.zcard(self.q)))

    async def acquire(self, holder: str, now: float, ttl: float) -> bool:
        got = await self._call(self._r.eval(self._RENEW, 1, self.lease, holder,
                                            int(ttl * 1000)))
        return bool(got)


def open_outbox(url: str, name: str = "") -> Outbox:
    """The outbox beside the record store of `url`; `name` another queue (e.g. "sms":
    the SMS webhook's), apart from the events'."""
    if url.startswith("sqlite://"):
        from relay.bindings.sqlite_store import SqliteStore

        return SqliteOutbox(str(SqliteStore(url).path),
                            f"{name}_outbox" if name else "outbox")
    return RedisOutbox(url, prefix=f"{{relay}}:{name}" if name else "{relay}")
