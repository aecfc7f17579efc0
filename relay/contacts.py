"""Each caller's recent calls and texts: the inputs of the harassment score
(dialplan.score), shared by every node and kept for a week.

Contacts are taken from the call and message records as they are written, through a
bounded queue drained by one background task (the call path only appends to a deque;
a full queue drops and counts). Reading is `recent(caller, now)`.

Redis: one sorted set per caller, `{relay}:contacts:<number>`, scored by time,
trimmed to a week and to the newest `MAX_PER_CALLER` on every write, expiring a week
after the caller's last contact. SQLite: a `contacts` table (one node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import OrderedDict, deque
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from dialplan.score import SHORT_MS, WEEK, Contact, score_card

from .bindings.store import StoreUnavailable
from .sqlite_thread import SqliteThread

__all__ = ["ContactStore", "ContactWriter", "Scores", "contact_from_call",
           "contact_from_message", "open_contact_store"]

log = logging.getLogger("relay.contacts")
MAX_PER_CALLER = 5000  # a week of contacts beyond this is abuse enough: keep the newest


def contact_from_call(rec: dict[str, Any]) -> tuple[str, Contact] | None:
    """(caller, contact) from a call record; None without a caller or a target."""
    caller, target = rec.get("caller"), rec.get("binding") or rec.get("x")
    if not caller or not target or not str(caller).startswith("+"):
        return None
    code = rec.get("sip_code") or 0
    answered = rec.get("unconnected_cause") == "none" and code == 200
    return caller, Contact(
        at=float(rec["started_at"]), target=str(target), kind="call",
        # Refused by the relay, or declined by B; a caller's own CANCEL (487) is not.
        refused=not answered and code >= 400 and code != 487,
        short=answered and (rec.get("duration_ms") or 0) < SHORT_MS)


def contact_from_message(rec: dict[str, Any]) -> tuple[str, Contact] | None:
    """(sender, contact) from a message record."""
    sender, target = rec.get("sender"), rec.get("binding") or rec.get("x")
    if not sender or not target:
        return None
    return sender, Contact(at=float(rec["started_at"]), target=str(target), kind="sms",
                           refused=rec.get("status") == "refused")


# A contact as stored: "at|kind|flags|target" (flags: r refused, s short). Split, not
# JSON: a busy caller's week is thousands of them, read whenever his score is due.
def _doc(c: Contact) -> str:
    flags = ("r" if c.refused else "") + ("s" if c.short else "")
    return f"{c.at!r}|{c.kind}|{flags}|{c.target}"


def _contact(doc: str | bytes) -> Contact:
    text = doc.decode() if isinstance(doc, bytes) else doc
    at, kind, flags, target = text.split("|", 3)
    return Contact(float(at), target, kind, "r" in flags, "s" in flags)


class ContactStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def add(self, items: list[tuple[str, Contact]]) -> None: ...
    async def recent(self, caller: str, now: float) -> list[Contact]: ...


class RedisContacts:
    """Contacts in Redis, shared by every node."""

    def __init__(self, url: str) -> None:
        from relay.bindings.redis_url import redis_client

        opts = parse_qs(urlsplit(url).query)
        self.prefix = "{" + opts.get("prefix", ["relay"])[0] + "}:contacts:"
        self._r: Any = redis_client(url, socket_timeout=1.0,
                                         socket_connect_timeout=0.5)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()

    async def add(self, items: list[tuple[str, Contact]]) -> None:
        from redis.exceptions import RedisError

        pipe = self._r.pipeline(transaction=False)
        for caller, c in items:
            key = self.prefix + caller
            pipe.zadd(key, {_doc(c): c.at})
            pipe.zremrangebyscore(key, "-inf", c.at - WEEK)
            pipe.zremrangebyrank(key, 0, -MAX_PER_CALLER - 1)
            pipe.expire(key, int(WEEK))
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def recent(self, caller: str, now: float) -> list[Contact]:
        from redis.exceptions import RedisError

        try:
            docs = await self._r.zrangebyscore(self.prefix + caller, f"({now - WEEK}", now)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        # Thousands of them for a busy caller: parsed on a worker thread, not the loop.
        return await asyncio.to_thread(lambda: [_contact(d) for d in docs])


class SqliteContacts(SqliteThread):
    """Contacts in the relay's SQLite file (one node)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS contacts(caller TEXT NOT NULL, at REAL NOT NULL,
                                        doc TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS contacts_c ON contacts(caller, at);
    """

    _what = "contact store"
    _thread = "contacts"

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(self._SCHEMA)

    def _add(self, items: list[tuple[str, Contact]]) -> None:
        db = self._conn()
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO contacts(caller, at, doc) VALUES(?, ?, ?)",
                           [(caller, c.at, _doc(c)) for caller, c in items])
            newest = max(c.at for _caller, c in items)
            db.execute("DELETE FROM contacts WHERE at <= ?", (newest - WEEK,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def add(self, items: list[tuple[str, Contact]]) -> None:
        if items:
            await self._run(self._add, items)

    async def recent(self, caller: str, now: float) -> list[Contact]:
        def q() -> list[Contact]:
            rows = self._conn().execute(
                "SELECT doc FROM contacts WHERE caller = ? AND at > ? AND at <= ?"
                " ORDER BY at", (caller, now - WEEK, now)).fetchall()
            return [_contact(doc) for (doc,) in rows]  # on the store's thread
        result: list[Contact] = await self._run(q)
        return result


def open_contact_store(url: str) -> ContactStore:
    """The contacts beside the binding store of `url` (not yet opened)."""
    if url.startswith("sqlite://"):
        from .bindings.sqlite_store import SqliteStore

        return SqliteContacts(str(SqliteStore(url).path))
    return RedisContacts(url)


class Scores:
    """Callers' scores for the call path, from this node's memory (LRU of `max_entries`).

    A score is a statistic over a day and a week, so a few seconds' staleness changes
    nothing: `cached` answers at once with what this node last computed and, when that
    is older than `ttl`, starts one re-read beside the call path (stale while it is
    re-read). The re-read's parsing and scoring run on a worker thread, not on the event
    loop: a caller with thousands of recent contacts (the very callers the score is for)
    paused the loop for each re-read (setup p99 103-233 ms at 200 calls/s in `python -m
    loadtest policy`, one caller making every call). Only a caller this node has never
    scored is waited for (`score`, with the adapter's deadline).
    """

    def __init__(self, store: ContactStore, tz: str, ttl: float = 10.0,
                 max_entries: int = 100_000) -> None:
        self.store = store
        self.tz = tz
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # One read per caller at a time: calls that need the caller's score while it is
        # read wait for that read instead of each starting one.
        self._reading: dict[str, asyncio.Future[int]] = {}
        self.refresh_errors = 0

    def cached(self, caller: str, now: float) -> int | None:
        """The caller's last computed score, at once (None if there is none yet); an
        entry older than `ttl` is re-read in the background."""
        hit = self._cache.get(caller)
        if hit is None:
            return None
        if now - hit[0] >= self.ttl and caller not in self._reading:
            task = asyncio.get_running_loop().create_task(self._refresh(caller, now))
            task.add_done_callback(_retrieved)
        return hit[1]

    async def _refresh(self, caller: str, now: float) -> None:
        try:
            await self._read(caller, now)
        except StoreUnavailable as exc:
            self.refresh_errors += 1  # the old value stays; the next call retries
            log.debug("score of a caller not re-read: %s", exc)

    async def score(self, caller: str, now: float) -> int:
        """The caller's score (raises StoreUnavailable when it must be read and cannot)."""
        hit = self._cache.get(caller)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        reading = self._reading.get(caller)
        if reading is not None:
            return await asyncio.shield(reading)
        return await self._read(caller, now)

    async def _read(self, caller: str, now: float) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reading[caller] = fut
        try:
            contacts = await self.store.recent(caller, now)
            # Scoring thousands of contacts is milliseconds of CPU: off the loop.
            value = await asyncio.to_thread(
                lambda: score_card(contacts, now, self.tz).score)
        except BaseException as exc:
            # Waiters get a store error, never the reader's own cancellation (a deadline).
            fut.set_exception(exc if isinstance(exc, Exception)
                              else StoreUnavailable("the score read was cancelled"))
            fut.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._reading[caller]
        fut.set_result(value)
        self._cache[caller] = (now, value)
        self._cache.move_to_end(caller)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return value


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


#: Seconds a ContactWriter waits after the first queued contact before writing.
COALESCE = 0.02


class ContactWriter:
    """Takes contacts without waiting and writes them in batches, beside the call path.
    While the store is down contacts wait (up to `max_pending`, oldest dropped)."""

    def __init__(self, store: ContactStore, max_pending: int = 100_000) -> None:
        self.store = store
        self.max_pending = max_pending
        self._queue: deque[tuple[str, Contact]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def submit(self, item: tuple[str, Contact] | None) -> None:
        """Queue one contact (None is ignored: a record without a caller)."""
        if item is None:
            return
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="contacts")

    async def flush(self) -> None:
        """Write everything queued now (raises StoreUnavailable, keeping the batch)."""
        batch = list(self._queue)
        if not batch:
            return
        await self.store.add(batch)
        for _ in batch:
            self._queue.popleft()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # Gather what ends meanwhile: one write (one hand-off to the store's thread)
            # per COALESCE instead of one per call (2% of the loop at 500 calls/s).
            await asyncio.sleep(COALESCE)
            self._wake.clear()
            try:
                await self.flush()
            except StoreUnavailable as exc:
                log.debug("contacts wait for the store: %s", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.flush()
