"""One SQLite connection on one thread of its own, for the stores beside the bindings.

Records, the event outbox, policies, counters and contacts each keep their tables in the
relay's SQLite file.  Each gets its own connection on a one-thread pool so a slow write
(fsync, a lock held by another process) never blocks the event loop, and so the
connection is only ever used from the thread that opened it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from .bindings.store import StoreUnavailable

__all__ = ["SqliteThread"]


class SqliteThread:
    """Base of the SQLite stores: `open`, `close`, `_run` (on the thread) and `_conn`.

    A subclass names itself (`_what`, in errors; `_thread`, the thread's name) and sets
    up its connection in `_setup` (pragmas, schema).
    """

    _what: ClassVar[str] = "store"
    _thread: ClassVar[str] = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread)
        self._db: sqlite3.Connection | None = None

    def _setup(self, db: sqlite3.Connection) -> None:
        """Pragmas and schema of a new connection (on the store's thread)."""
        db.execute("PRAGMA busy_timeout=10000")

    async def _run(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` on the store's thread; SQLite's operational errors as
        StoreUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"{self._what} is not open")
        return self._db

    async def open(self) -> None:
        def o() -> None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            self._setup(db)
            self._db = db
        await self._run(o)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=False)
