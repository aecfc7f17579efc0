"""Frequency counters shared by every node (DESIGN.md "Policies": `max_calls`, `max_sms`
per caller and binding; counters shared by all nodes and surviving restarts).

A counter is a sliding log: the times of the attempts it admitted. `take` admits an
attempt, atomically, only when fewer than `limit.count` lie in the last `limit.per`
seconds; a refused attempt is not logged (it did not reach B). History is kept for
`MAX_PER` seconds whatever the policy says today, so making a window longer still
counts the attempts already made.

Redis: one sorted set per (kind, binding, caller) under `{relay}:freq:`, changed by one
Lua script (atomic across nodes) and expiring `MAX_PER` after its last admission.
SQLite: a `counters` table in the relay's file, changed in one transaction (one node).
`MemoryCounters` is the same rule in memory: the reference for tests.

The call path never awaits these: the call controller asks through its job queue
(op "count"), the adapter runs the job with a deadline, and the answer (or the
configured fail-open/closed on error or timeout) continues the call (relay.io.sip).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from dialplan.policy import MAX_PER, Limit, counter_key

from .bindings.store import StoreUnavailable

__all__ = ["CounterStore", "MemoryCounters", "counter_key", "open_counter_store"]


class CounterStore(Protocol):
    """Shared sliding-window counters."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def take(self, key: str, now: float, limit: Limit) -> bool: ...
    async def used(self, key: str, now: float, per: int) -> int: ...


class MemoryCounters:
    """The counting rule in memory (tests, and the reference for the stores)."""

    def __init__(self) -> None:
        self._log: dict[str, list[float]] = {}

    def take_now(self, key: str, now: float, limit: Limit) -> bool:
        """Admit an attempt at `now` if the window has room."""
        log = [t for t in self._log.get(key, ()) if t > now - MAX_PER]
        self._log[key] = log
        if limit.over(sum(1 for t in log if t > now - limit.per)):
            return False
        log.append(now)
        return True

    def used_now(self, key: str, now: float, per: int) -> int:
        """Attempts admitted in the last `per` seconds."""
        return sum(1 for t in self._log.get(key, ()) if now - per < t <= now)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def take(self, key: str, now: float, limit: Limit) -> bool:
        return self.take_now(key, now, limit)

    async def used(self, key: str, now: float, per: int) -> int:
        return self.used_now(key, now, per)


# KEYS[1] the log; ARGV now, per, count, member, keep (seconds). The window is
# (now - per, now]: ZCOUNT's "(" makes the lower bound exclusive.
_TAKE_LUA = """
local now = tonumber(ARGV[1])
local keep = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep)
local n = redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf')
if n >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(keep * 1000))
return 1
"""


class RedisCounters:
    """Counters in Redis, shared by every node."""

    def __init__(self, url: str) -> None:
        import os

        from relay.bindings.redis_url import redis_client

        opts = parse_qs(urlsplit(url).query)
        self.prefix = "{" + opts.get("prefix", ["relay"])[0] + "}:freq:"
        # Short timeouts: the caller waits on the answer (the adapter's deadline cuts it).
        self._r: Any = redis_client(url, socket_timeout=1.0,
                                         socket_connect_timeout=0.5)
        self._take = self._r.register_script(_TAKE_LUA)
        self._node = os.urandom(4).hex()  # members must differ between nodes and calls
        self._seq = itertools.count()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()

    async def take(self, key: str, now: float, limit: Limit) -> bool:
        from redis.exceptions import RedisError

        member = f"{now:.6f}:{self._node}:{next(self._seq)}"
        try:
            ok = await self._take(keys=[self.prefix + key],
                                  args=[now, limit.per, limit.count, member, MAX_PER])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return bool(ok)

    async def used(self, key: str, now: float, per: int) -> int:
        from redis.exceptions import RedisError

        try:
            return int(await self._r.zcount(self.prefix + key, f"({now - per}", now))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc


class SqliteCounters:
    """Counters in the relay's SQLite file (one node)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS counters(key TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS counters_k ON counters(key, at);
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="counters")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("counter store is not open")
        return self._db

    async def open(self) -> None:
        def o() -> None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(self._SCHEMA)
            self._db = db
        await self._run(o)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=False)

    def _take(self, key: str, now: float, limit: Limit) -> bool:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM counters WHERE key = ? AND at <= ?", (key, now - MAX_PER))
            (n,) = db.execute("SELECT COUNT(*) FROM counters WHERE key = ? AND at > ?",
                              (key, now - limit.per)).fetchone()
            ok = not limit.over(n)
            if ok:
                db.execute("INSERT INTO counters(key, at) VALUES(?, ?)", (key, now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ok

    async def take(self, key: str, now: float, limit: Limit) -> bool:
        return bool(await self._run(self._take, key, now, limit))

    async def used(self, key: str, now: float, per: int) -> int:
        row = await self._run(lambda: self._conn().execute(
            "SELECT COUNT(*) FROM counters WHERE key = ? AND at > ? AND at <= ?",
            (key, now - per, now)).fetchone())
        return int(row[0])


def open_counter_store(url: str) -> CounterStore:
    """The counters beside the binding store of `url` (not yet opened)."""
    if url.startswith("sqlite://"):
        from .bindings.sqlite_store import SqliteStore

        return SqliteCounters(str(SqliteStore(url).path))
    return RedisCounters(url)
