"""Freezes that could not wait for the store (issue 13, "freezes never wait").

A freeze or release asked for while the store is down takes effect on this node at once
(the in-memory table), and is kept here, in a small SQLite file beside the node's data,
until the store takes it: `BindingService.replay_pending` writes each one through the
normal path (which also propagates it to every other node through the change feed) and
only then forgets it. The file survives a crash and a restart.

A journal write is one tiny local transaction; freezes are rare (an order ends), so it is
done inline rather than batched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

__all__ = ["PendingChange", "PendingJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL, binding TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
"""


class PendingChange(NamedTuple):
    seq: int
    op: str  # "freeze" or "release"
    binding: str
    reason: str
    at: float  # when it was asked for: the binding's frozen_at / released_at


class PendingJournal:
    """An append-only list of changes waiting for the store, in a local SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT count(*) FROM pending_changes").fetchone()[0]

    def __len__(self) -> int:
        return int(self._count)

    def add(self, op: str, binding: str, reason: str, at: float) -> None:
        """Keep a change (committed before this returns: a crash does not lose it)."""
        self._db.execute("INSERT INTO pending_changes(op, binding, reason, at) VALUES(?,?,?,?)",
                         (op, binding, reason, at))
        self._count += 1

    def entries(self) -> list[PendingChange]:
        """What waits, oldest first."""
        rows = self._db.execute(
            "SELECT seq, op, binding, reason, at FROM pending_changes ORDER BY seq").fetchall()
        return [PendingChange(*r) for r in rows]

    def done(self, seq: int) -> None:
        """The store has the change: forget it."""
        if self._db.execute("DELETE FROM pending_changes WHERE seq = ?", (seq,)).rowcount:
            self._count -= 1

    def close(self) -> None:
        self._db.close()
