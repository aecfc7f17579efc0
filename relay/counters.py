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

The call path never waits on these: it decides from `FrequencyView`, every node's
admissions held in this node's memory (a sorted list of times per key), synchronously.
The view sends its own admissions to the store in batches (at most `push_every` after
they are made) and, on Redis, follows the other nodes' from the feed `{relay}:freqlog`
(a capped stream of (key, at, member)), so the store is only ever written and read
beside the call path. At start it loads the store's recent history.

How exact across nodes: an admission on one node reaches the others after its batch
(`push_every`, 20 ms) plus the feed's delivery (one Redis round trip): typically well
under 50 ms. Two nodes can both admit the last allowed attempt of one caller to one
binding only when both attempts fall inside that interval, so the count can be exceeded
by at most the attempts of that caller to that binding made on *other* nodes in the
last ~50 ms (on one node it is exact). While the store cannot be reached the view is
*stale*: with `counter_fail = "open"` it still decides from what it knows (its own
admissions and the others' up to the failure), with "closed" it refuses; each such
decision is counted (`relay_policy_counter_errors_total`). Admissions made meanwhile
wait in memory and are sent when the store returns.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from dialplan.policy import MAX_PER, Limit, counter_key

from .bindings.store import StoreUnavailable
from .sqlite_thread import SqliteThread

__all__ = ["CounterStore", "FrequencyView", "MemoryCounters", "counter_key",
           "open_counter_store"]

log = logging.getLogger("relay.counters")

#: One admission as the stores sync it: (key, at, member); a member is unique per
#: admission and names the node that made it ("<at>:<node>:<seq>").
Admission = tuple[str, float, str]


class CounterStore(Protocol):
    """Shared sliding-window counters."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def take(self, key: str, now: float, limit: Limit) -> bool: ...
    async def used(self, key: str, now: float, per: int) -> int: ...


class SyncedStore(CounterStore, Protocol):
    """A store the view syncs with; `node` tags this process's members."""

    @property
    def node(self) -> str: ...
    async def add_many(self, items: Sequence[Admission]) -> None: ...
    async def snapshot(self, now: float) -> tuple[list[Admission], str]: ...
    async def changes(self, cursor: str, wait: float) -> tuple[list[Admission], str]: ...


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

    node = "mem"

    async def add_many(self, items: Sequence[Admission]) -> None:
        for key, at, _member in items:
            self._log.setdefault(key, []).append(at)

    async def snapshot(self, now: float) -> tuple[list[Admission], str]:
        return [(k, t, f"{t!r}:log:{i}") for k, log in self._log.items()
                for i, t in enumerate(log) if t > now - MAX_PER], ""

    async def changes(self, cursor: str, wait: float) -> tuple[list[Admission], str]:
        await asyncio.sleep(wait)
        return [], cursor


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
        self.node = os.urandom(4).hex()  # members must differ between nodes and calls
        self._seq = itertools.count()
        self.feed = self.prefix[:-len("freq:")] + "freqlog"  # outside the keys' pattern
        self.feed_maxlen = 100_000
        # The feed is read with a blocking XREAD: its own connection and a longer timeout.
        self._follow: Any = redis_client(url, socket_timeout=5.0,
                                         socket_connect_timeout=0.5)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()
        await self._follow.aclose()

    async def take(self, key: str, now: float, limit: Limit) -> bool:
        from redis.exceptions import RedisError

        member = f"{now:.6f}:{self.node}:{next(self._seq)}"
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

    async def _call(self, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def add_many(self, items: Sequence[Admission]) -> None:
        """Admissions made by the view: into their logs and onto the feed, one pipeline."""
        pipe = self._r.pipeline(transaction=False)
        for key, at, member in items:
            pipe.zadd(self.prefix + key, {member: at})
            pipe.zremrangebyscore(self.prefix + key, "-inf", at - MAX_PER)
            pipe.pexpire(self.prefix + key, MAX_PER * 1000)
            pipe.xadd(self.feed, {"k": key, "at": repr(at), "m": member},
                      maxlen=self.feed_maxlen, approximate=True)
        await self._call(pipe.execute())

    async def snapshot(self, now: float) -> tuple[list[Admission], str]:
        """Every log's admissions of the last MAX_PER seconds, and the feed position to
        follow from (taken first: what arrives meanwhile comes twice, never not at all)."""
        from redis.exceptions import RedisError

        last = await self._call(self._follow.xrevrange(self.feed, count=1))
        cursor = last[0][0].decode() if last else "0-0"
        out: list[Admission] = []
        n = len(self.prefix)
        try:
            async for raw in self._r.scan_iter(match=self.prefix + "*", count=1000):
                pairs = await self._r.zrangebyscore(raw, now - MAX_PER, "+inf",
                                                    withscores=True)
                key = raw.decode()[n:]
                out += [(key, float(at), m.decode()) for m, at in pairs]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return out, cursor

    async def changes(self, cursor: str, wait: float) -> tuple[list[Admission], str]:
        """Admissions on the feed after `cursor` (waits up to `wait` for the first)."""
        got = await self._call(self._follow.xread({self.feed: cursor}, count=10_000,
                                                  block=max(1, int(wait * 1000))))
        out: list[Admission] = []
        for _stream, entries in got or ():
            for entry_id, f in entries:
                cursor = entry_id.decode()
                out.append((f[b"k"].decode(), float(f[b"at"]), f[b"m"].decode()))
        return out, cursor


class SqliteCounters(SqliteThread):
    """Counters in the relay's SQLite file (one node)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS counters(key TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS counters_k ON counters(key, at);
    """

    _what = "counter store"
    _thread = "counters"

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(self._SCHEMA)

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

    node = "db"  # one node: no feed to tell its own admissions from others'

    def _add_many(self, items: Sequence[Admission]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO counters(key, at) VALUES(?, ?)",
                           [(key, at) for key, at, _m in items])
            db.execute("DELETE FROM counters WHERE at <= ?", (items[-1][1] - MAX_PER,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def add_many(self, items: Sequence[Admission]) -> None:
        if items:
            await self._run(self._add_many, items)

    async def snapshot(self, now: float) -> tuple[list[Admission], str]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT rowid, key, at FROM counters WHERE at > ?", (now - MAX_PER,)).fetchall())
        return [(key, float(at), f"{at!r}:db:{rowid}") for rowid, key, at in rows], ""

    async def changes(self, cursor: str, wait: float) -> tuple[list[Admission], str]:
        await asyncio.sleep(wait)  # one node: nobody else admits
        return [], cursor


class FrequencyView:
    """The counters the call path decides from: in this node's memory, synchronous,
    synced with the shared store beside the call path (module docstring: how exact).

    Also a CounterStore (`take`, `used` answer from memory at once) for the callers
    that await one (the SMS service, `/v1/route`).
    """

    def __init__(self, store: SyncedStore, *, fail_open: bool = True,
                 push_every: float = 0.02, max_unsent: int = 100_000) -> None:
        self.store = store
        self.fail_open = fail_open
        self.push_every = push_every
        self.max_unsent = max_unsent
        self._times: dict[str, list[float]] = {}  # key -> admission times, sorted
        self._members: dict[str, set[str]] = {}  # key -> members seen (feed echoes)
        self._unsent: list[Admission] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._followed = False  # loaded, and the last read of the feed answered
        self._sent = True  # the last batch sent was taken
        self.errors = 0  # decisions made while the view was stale (counter_fail applied)
        self.dropped = 0  # admissions never sent (the store was down too long)

    @property
    def node(self) -> str:
        return self.store.node

    @property
    def healthy(self) -> bool:
        """The store answered the view's last read and last write."""
        return self._followed and self._sent

    # ---- the call path (synchronous) ----
    def take_now(self, key: str, now: float, limit: Limit) -> bool:
        """Admit an attempt at `now` if the window has room (what every node admitted
        that this node knows of); a stale view applies `fail_open`, counted."""
        if not self.healthy:
            self.errors += 1
            if not self.fail_open:
                return False
        times = self._times.get(key)
        if times is not None and limit.over(len(times) - bisect.bisect_right(
                times, now - limit.per)):
            return False
        member = f"{now:.6f}:{self.node}:{next(self._seq)}"
        self._add(key, now, member)
        if len(self._unsent) >= self.max_unsent:
            del self._unsent[0]
            self.dropped += 1
        self._unsent.append((key, now, member))
        self._wake.set()
        return True

    def used_now(self, key: str, now: float, per: int) -> int:
        """Admissions known in (now - per, now]."""
        times = self._times.get(key, ())
        return bisect.bisect_right(times, now) - bisect.bisect_right(times, now - per)

    def _add(self, key: str, at: float, member: str) -> None:
        members = self._members.setdefault(key, set())
        if member in members:
            return
        members.add(member)
        times = self._times.setdefault(key, [])
        if not times or at >= times[-1]:
            times.append(at)
        else:
            bisect.insort(times, at)

    def _prune(self, now: float) -> None:
        """Forget admissions older than MAX_PER (and keys left empty)."""
        cutoff = now - MAX_PER
        for key in list(self._times):
            times = self._times[key]
            drop = bisect.bisect_right(times, cutoff)
            if drop == 0:
                continue
            del times[:drop]
            if not times:
                del self._times[key], self._members[key]
            else:
                self._members[key] = {m for m in self._members[key]
                                      if float(m.split(":", 1)[0]) > cutoff}

    # ---- CounterStore, answered from memory ----
    async def take(self, key: str, now: float, limit: Limit) -> bool:
        return self.take_now(key, now, limit)

    async def used(self, key: str, now: float, per: int) -> int:
        return self.used_now(key, now, per)

    # ---- sync, beside the call path ----
    async def open(self) -> None:
        """Open the store and follow it; a store that cannot be read now is loaded
        when it can (the view is stale until then)."""
        import time

        await self.store.open()
        cursor: str | None = None
        try:
            cursor = await self._load(time.time())
        except StoreUnavailable as exc:
            log.warning("counters not loaded (stale until the store answers): %s", exc)
        self._tasks = [asyncio.create_task(self._push(), name="counters-push"),
                       asyncio.create_task(self._follow(cursor), name="counters-follow")]

    async def _load(self, now: float) -> str:
        items, cursor = await self.store.snapshot(now)
        for key, at, member in items:
            self._add(key, at, member)
        self._followed = True
        return cursor

    async def _push(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.push_every)  # a batch: what came in meanwhile
            while self._unsent:
                batch = self._unsent[:5000]
                try:
                    await self.store.add_many(batch)
                except StoreUnavailable as exc:
                    self._sent = False
                    log.warning("counters not sent (%d waiting): %s", len(self._unsent), exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                self._sent = True
                del self._unsent[:len(batch)]

    async def _follow(self, cursor: str | None) -> None:
        import time

        backoff = 0.1
        pruned = time.monotonic()
        while True:
            try:
                if cursor is None:  # first load failed, or the feed was lost: reload
                    cursor = await self._load(time.time())
                items, cursor = await self.store.changes(cursor, wait=1.0)
                self._followed = True
                backoff = 0.1
            except StoreUnavailable as exc:
                self._followed = False
                cursor = None
                log.debug("counters feed unavailable: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            own = f":{self.node}:"
            for key, at, member in items:
                if own not in member:
                    self._add(key, at, member)
            if time.monotonic() - pruned > 60:
                pruned = time.monotonic()
                self._prune(time.time())

    async def close(self) -> None:
        """Stop syncing; send what is unsent (briefly), close the store."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._unsent:
            try:
                await asyncio.wait_for(self.store.add_many(self._unsent), 2.0)
                self._unsent = []
            except (StoreUnavailable, TimeoutError) as exc:
                log.error("%d admissions not sent at close: %s", len(self._unsent), exc)
        await self.store.close()


def open_counter_store(url: str) -> SyncedStore:
    """The counters beside the binding store of `url` (not yet opened)."""
    if url.startswith("sqlite://"):
        from .bindings.sqlite_store import SqliteStore

        return SqliteCounters(str(SqliteStore(url).path))
    return RedisCounters(url)
