"""The embedded default store: one SQLite file (WAL) for bindings, claims, pool and feed.

sqlite3 blocks, so every statement runs on one dedicated thread; that also serialises
writers inside the process, and SQLite's own locking serialises the CLI and other
processes on the same file.  With WAL and synchronous=NORMAL a committed change survives
the process being killed (only an OS crash can lose the last transactions); set
`?sync=full` in the URL to survive power loss at the cost of one fsync per commit.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from relay.events.model import Event
from relay.events.outbox import OUTBOX_SCHEMA, SQLITE_INSERT

from .claims import ClaimConflict, Op, apply_op
from .model import Binding, NumberRecord
from .store import Change, Snapshot, StoreUnavailable, VersionConflict
from .table import route_record

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bindings(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    x TEXT NOT NULL,
    out_id TEXT,
    state TEXT NOT NULL,
    expires_at REAL,
    frozen_at REAL,
    version INTEGER NOT NULL,
    blob BLOB NOT NULL,
    rec BLOB
);
CREATE INDEX IF NOT EXISTS bindings_x ON bindings(x);
CREATE INDEX IF NOT EXISTS bindings_out ON bindings(out_id);
CREATE INDEX IF NOT EXISTS bindings_due ON bindings(state, expires_at);
CREATE TABLE IF NOT EXISTS claims(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS numbers(number TEXT PRIMARY KEY, blob BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    blob BLOB NOT NULL,
    until REAL
);
"""

_FEED_KEEP = 200_000  # changes kept for followers; older ones are trimmed


class SqliteStore:
    """Store on one SQLite file. See the module docstring for durability."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        # SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute.db
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc and parts.netloc != "localhost":
            path = parts.netloc + "/" + path
        self.url = url
        self.path = Path(path)
        opts = parse_qs(parts.query)
        self._sync = opts.get("sync", ["normal"])[0].upper()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    # -- plumbing ------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    def _open(self) -> None:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=10, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(_SCHEMA + OUTBOX_SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('epoch', ?)",
                   (secrets.token_hex(8),))
        self._db = db

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=False)

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._conn().execute("SELECT 1").fetchone())
            return True
        except StoreUnavailable:
            return False

    async def epoch(self) -> str:
        def q() -> str:
            row = self._conn().execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            return str(row[0])
        return await self._run(q)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, binding_id: str) -> Binding | None:
        def q() -> Binding | None:
            row = self._conn().execute("SELECT blob FROM bindings WHERE id=?",
                                       (binding_id,)).fetchone()
            return Binding.unpack(row[0]) if row else None
        return await self._run(q)

    async def claim(self, key: str) -> str | None:
        def q() -> str | None:
            row = self._conn().execute("SELECT value FROM claims WHERE key=?", (key,)).fetchone()
            return str(row[0]) if row else None
        return await self._run(q)

    async def claims(self, prefix: str) -> dict[str, str]:
        def q() -> dict[str, str]:
            rows = self._conn().execute(
                "SELECT key, value FROM claims WHERE key >= ? AND key < ?",
                (prefix, prefix + "\uffff")).fetchall()
            return {k: v for k, v in rows}
        return await self._run(q)

    async def query(self, *, x: str | None = None, state: str | None = None,
                    out_id: str | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[Binding], str | None]:
        where: list[str] = ["seq > ?"]
        args: list[Any] = [int(cursor) if cursor else 0]
        for col, val in (("x", x), ("state", state), ("out_id", out_id)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = (f"SELECT seq, blob FROM bindings WHERE {' AND '.join(where)} "
               f"ORDER BY seq LIMIT {int(limit) + 1}")

        def q() -> tuple[list[Binding], str | None]:
            rows = self._conn().execute(sql, args).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = str(rows[-1][0]) if more and rows else None
            return [Binding.unpack(r[1]) for r in rows], nxt
        return await self._run(q)

    async def numbers(self) -> list[NumberRecord]:
        def q() -> list[NumberRecord]:
            rows = self._conn().execute("SELECT blob FROM numbers ORDER BY number").fetchall()
            return [NumberRecord.unpack(r[0]) for r in rows]
        return await self._run(q)

    async def due(self, now: float, frozen_hold: float, limit: int) -> list[Binding]:
        def q() -> list[Binding]:
            rows = self._conn().execute(
                "SELECT blob FROM bindings WHERE (state='active' AND expires_at IS NOT NULL"
                " AND expires_at <= ?) OR (state='frozen' AND frozen_at <= ?) LIMIT ?",
                (now, now - frozen_hold, limit)).fetchall()
            return [Binding.unpack(r[0]) for r in rows]
        return await self._run(q)

    # -- writes --------------------------------------------------------------------------

    async def commit(self, new: Binding, expected_version: int, ops: list[Op],
                     now: float, quarantine: float, events: Sequence[Event] = ()) -> None:
        """Apply one change atomically; `events` (binding.frozen) join the outbox in the
        same transaction."""
        await self._run(self._commit, new, expected_version, ops, now, quarantine, events)

    def _commit(self, new: Binding, expected: int, ops: list[Op], now: float,
                quarantine: float, events: Sequence[Event] = ()) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT version FROM bindings WHERE id=?", (new.id,)).fetchone()
            current = int(row[0]) if row else 0
            if current != expected:
                raise VersionConflict(new.id)
            q_until = None
            for op in ops:
                got = db.execute("SELECT value FROM claims WHERE key=?", (op.key,)).fetchone()
                value = apply_op(got[0] if got else None, op, new.id, now, quarantine)
                if value is None:
                    db.execute("DELETE FROM claims WHERE key=?", (op.key,))
                else:
                    db.execute("INSERT OR REPLACE INTO claims(key, value) VALUES(?, ?)",
                               (op.key, value))
                if op.kind == "unuse" and value and value.split(",")[1] == "0":
                    q_until = now + quarantine
            blob = new.pack()
            if row:
                db.execute(
                    "UPDATE bindings SET x=?, out_id=?, state=?, expires_at=?, frozen_at=?,"
                    " version=?, blob=?, rec=? WHERE id=?",
                    (new.x, new.out_id, new.state.value, new.expires_at, new.frozen_at,
                     new.version, blob, route_record(new), new.id))
            else:
                db.execute(
                    "INSERT INTO bindings(id, x, out_id, state, expires_at, frozen_at, version,"
                    " blob, rec) VALUES(?,?,?,?,?,?,?,?,?)",
                    (new.id, new.x, new.out_id, new.state.value, new.expires_at, new.frozen_at,
                     new.version, blob, route_record(new)))
            db.execute("INSERT INTO changes(kind, blob, until) VALUES('b', ?, ?)", (blob, q_until))
            if events:
                db.executemany(SQLITE_INSERT, [(e.id, e.key, e.type, e.body) for e in events])
            db.execute("COMMIT")
        except (ClaimConflict, VersionConflict):
            db.execute("ROLLBACK")
            raise
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._writes += 1
        if self._writes % 10_000 == 0:
            self._trim()

    def _trim(self) -> None:
        db = self._conn()
        db.execute("DELETE FROM changes WHERE seq < (SELECT MAX(seq) FROM changes) - ?",
                   (_FEED_KEEP,))

    async def add_numbers(self, numbers: list[NumberRecord]) -> int:
        def w() -> int:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            added = 0
            try:
                for n in numbers:
                    blob = n.pack()
                    cur = db.execute("INSERT OR IGNORE INTO numbers(number, blob) VALUES(?, ?)",
                                     (n.number, blob))
                    if cur.rowcount:
                        added += 1
                        db.execute("INSERT INTO changes(kind, blob) VALUES('n', ?)", (blob,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return added
        return await self._run(w)

    # -- the feed ------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        def q() -> Snapshot:
            db = self._conn()
            db.execute("BEGIN")  # one read transaction: the offset matches the rows
            try:
                off = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
                rows = db.execute("SELECT rec FROM bindings WHERE state != 'released'"
                                  ).fetchall()
                nums = db.execute("SELECT blob FROM numbers").fetchall()
                epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
            finally:
                db.execute("COMMIT")
            return Snapshot(records=[r[0] for r in rows],
                            numbers=[NumberRecord.unpack(r[0]) for r in nums],
                            offset=str(off), epoch=str(epoch))
        return await self._run(q)

    async def changes(self, offset: str, block: float) -> tuple[list[Change], str]:
        """Changes after `offset`. SQLite has no push, so an empty answer waits `block`."""
        def q() -> tuple[list[Change], str]:
            rows = self._conn().execute(
                "SELECT seq, kind, blob, until FROM changes WHERE seq > ? ORDER BY seq LIMIT 5000",
                (int(offset),)).fetchall()
            out: list[Change] = []
            for _seq, kind, blob, until in rows:
                if kind == "b":
                    out.append(Change(binding=Binding.unpack(blob), quarantine_until=until))
                else:
                    out.append(Change(number=NumberRecord.unpack(blob)))
            return out, (str(rows[-1][0]) if rows else offset)
        got, nxt = await self._run(q)
        if not got and block > 0:
            await asyncio.sleep(min(block, 0.05))
        return got, nxt

    def __repr__(self) -> str:
        return f"SqliteStore({os.fspath(self.path)!r})"

