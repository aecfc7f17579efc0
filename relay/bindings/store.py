"""What a binding store provides, whichever database is behind it.

Both stores keep the bindings, the claims (claims.py), the number pool and an ordered
change feed that every node follows to keep its in-memory table current.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .claims import Op
from .model import Binding, NumberRecord

if TYPE_CHECKING:
    from relay.events.model import Event

    from .table import RouteEntry

__all__ = [
    "Change",
    "FeedGap",
    "Snapshot",
    "Store",
    "StoreUnavailable",
    "VersionConflict",
    "open_store",
]


class StoreUnavailable(Exception):
    """The database cannot be reached right now (the node degrades, it does not stop)."""


class FeedGap(StoreUnavailable):
    """The feed no longer holds everything after our offset: reload from a snapshot."""


class VersionConflict(Exception):
    """Someone else changed the binding between our read and our write; read again."""


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed: a binding's new state, or a number added."""

    binding: Binding | None = None
    number: NumberRecord | None = None
    quarantine_until: float | None = None


@dataclass(slots=True)
class Snapshot:
    """Everything a node loads at start, and the feed offset to follow from."""

    records: list[bytes]  # route records (table.route_record) of the live bindings
    numbers: list[NumberRecord]
    offset: str
    epoch: str = ""

    def bindings(self) -> Iterator[RouteEntry]:
        """The live bindings as route entries (the follower loads the records directly)."""
        from .table import RouteEntry

        for rec in self.records:
            yield RouteEntry(rec)


class Store(Protocol):
    """The operations the service, the follower and the CLI need."""

    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def get(self, binding_id: str) -> Binding | None: ...
    async def claim(self, key: str) -> str | None: ...
    async def claims(self, prefix: str) -> dict[str, str]: ...
    async def query(self, *, x: str | None = None, state: str | None = None,
                    out_id: str | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[Binding], str | None]: ...
    async def commit(self, new: Binding, expected_version: int, ops: list[Op],
                     now: float, quarantine: float, events: Sequence[Event] = ()) -> None: ...
    async def add_numbers(self, numbers: list[NumberRecord]) -> int: ...
    async def numbers(self) -> list[NumberRecord]: ...
    async def due(self, now: float, frozen_hold: float, limit: int) -> list[Binding]: ...
    async def snapshot(self) -> Snapshot: ...
    async def changes(self, offset: str, block: float) -> tuple[list[Change], str]: ...
    async def epoch(self) -> str: ...


def open_store(url: str) -> Store:
    """A store for `sqlite:///path` or `redis://host:port/db` (not yet opened)."""
    if url.startswith("sqlite://"):
        from .sqlite_store import SqliteStore

        return SqliteStore(url)
    if url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://",
                        "redis+cluster://")):
        from .redis_store import RedisStore

        return RedisStore(url)
    raise ValueError(f"unknown store URL scheme: {url.split(':', 1)[0]!r} "
                     "(use sqlite:///path or redis://host:port/db)")
