"""Named policies and the blocklist beside the bindings: the store, and the in-memory book
the call path reads.

Policies are few and small, so every node holds all of them in a `PolicyBook` (a dict
replaced whole, never mutated, so a reader sees one version) and re-reads the store
every `refresh` seconds beside the call path (STYLE point 9: the store is never on it).
A write through this node's API updates its own book at once; other nodes see it
within one refresh. While the store is down the book keeps its last view.

SQLite: `policies` and `blocklist` tables in the relay's file (its own connection and
thread). Redis: the hashes `{relay}:policies` (name -> JSON) and `{relay}:blocklist`
("number|x" -> JSON, x empty for a global entry).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from dialplan.blocklist import Block, Blocklist
from dialplan.policy import Limit, Policy, PolicyError, parse_policy

from .bindings.store import StoreUnavailable
from .sqlite_thread import SqliteThread

if TYPE_CHECKING:
    from .contacts import Scores
    from .counters import FrequencyView

__all__ = ["PolicyBook", "PolicyStore", "open_policy_store"]

log = logging.getLogger("relay.policies")


class PolicyStore(Protocol):
    """Policy documents by name (the output of `Policy.as_dict`)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def all(self) -> dict[str, dict[str, Any]]: ...
    async def put(self, policy: Policy) -> None: ...
    async def delete(self, name: str) -> bool: ...
    async def blocks(self) -> list[Block]: ...
    async def block(self, entry: Block) -> None: ...
    async def unblock(self, number: str, x: str | None) -> bool: ...


def _block(doc: dict[str, Any]) -> Block:
    return Block(doc["number"], doc["reason"], doc.get("x"), doc.get("until"),
                 float(doc.get("created_at") or 0.0))


class PolicyBook:
    """The policies this node routes with, and the default policy's name."""

    def __init__(self, default: str | None = None) -> None:
        self.default = default
        self._by_name: Mapping[str, Policy] = {}
        self.blocklist = Blocklist()
        self.refresh_errors = 0
        self.bad_documents = 0
        # The node's memory of the shared counters and scores (set by relay.app.Node);
        # None: every attempt is admitted, scores are asked for as jobs.
        self.frequency: FrequencyView | None = None
        self.scores: Scores | None = None

    def for_binding(self, name: str | None) -> Policy | None:
        """The policy a binding routes under: its own if it exists, else the default
        (a deleted policy must not leave its bindings without any rule)."""
        by = self._by_name
        if name:
            p = by.get(name)
            if p is not None:
                return p
        return by.get(self.default) if self.default else None

    def blocked(self, caller: str | None, x: str, now: float) -> bool:
        """The blocklist holds `caller` for `x` at `now`."""
        return self.blocklist.match(caller, x, now) is not None

    def admit(self, key: str, now: float, limit: Limit) -> bool:
        """Count one attempt under `limit` in the shared counter `key`, or refuse it:
        decided from this node's memory at once (relay.counters.FrequencyView)."""
        f = self.frequency
        return True if f is None else f.take_now(key, now, limit)

    def score_now(self, caller: str, now: float) -> int | None:
        """`caller`'s score if this node has one (a stale one is refreshed beside the
        call path); None when it must be read first."""
        s = self.scores
        return None if s is None else s.cached(caller, now)

    def get(self, name: str) -> Policy | None:
        """The policy called `name`, if there is one."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Every policy's name, sorted."""
        return sorted(self._by_name)

    def replace(self, docs: dict[str, dict[str, Any]]) -> None:
        """Load the store's documents; one that no longer parses is skipped and counted."""
        book: dict[str, Policy] = {}
        for name, doc in docs.items():
            try:
                book[name] = parse_policy(name, doc)
            except PolicyError as exc:
                self.bad_documents += 1
                log.warning("policy %r in the store is not valid, skipped: %s", name, exc)
        self._by_name = book

    def replace_blocks(self, blocks: list[Block]) -> None:
        """Load the store's blocklist."""
        self.blocklist = Blocklist(blocks)

    def block(self, entry: Block) -> None:
        """One entry written through this node (replaces the same number and X)."""
        self.blocklist = Blocklist([*(b for b in self.blocklist.entries()
                                      if (b.number, b.x) != (entry.number, entry.x)), entry])

    def unblock(self, number: str, x: str | None) -> None:
        """One entry deleted through this node."""
        self.blocklist = Blocklist(b for b in self.blocklist.entries()
                                   if (b.number, b.x) != (number, x))

    def put(self, policy: Policy) -> None:
        """One policy written through this node."""
        self._by_name = {**self._by_name, policy.name: policy}

    def delete(self, name: str) -> None:
        """One policy deleted through this node."""
        self._by_name = {k: v for k, v in self._by_name.items() if k != name}


class SqlitePolicyStore(SqliteThread):
    """Policies in the relay's SQLite file."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS policies(name TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS blocklist(number TEXT NOT NULL, x TEXT NOT NULL,
                                         doc TEXT NOT NULL, PRIMARY KEY(number, x));
    """

    _what = "policy store"
    _thread = "policies"

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(self._SCHEMA)

    async def all(self) -> dict[str, dict[str, Any]]:
        rows = await self._run(
            lambda: self._conn().execute("SELECT name, doc FROM policies").fetchall())
        return {name: json.loads(doc) for name, doc in rows}

    async def put(self, policy: Policy) -> None:
        doc = json.dumps(policy.as_dict())
        await self._run(lambda: self._conn().execute(
            "INSERT INTO policies(name, doc) VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc", (policy.name, doc)))

    async def delete(self, name: str) -> bool:
        cur = await self._run(lambda: self._conn().execute(
            "DELETE FROM policies WHERE name = ?", (name,)))
        return bool(cur.rowcount)

    async def blocks(self) -> list[Block]:
        rows = await self._run(
            lambda: self._conn().execute("SELECT doc FROM blocklist").fetchall())
        return [_block(json.loads(doc)) for (doc,) in rows]

    async def block(self, entry: Block) -> None:
        doc = json.dumps(entry.as_dict())
        await self._run(lambda: self._conn().execute(
            "INSERT INTO blocklist(number, x, doc) VALUES(?, ?, ?) "
            "ON CONFLICT(number, x) DO UPDATE SET doc = excluded.doc",
            (entry.number, entry.x or "", doc)))

    async def unblock(self, number: str, x: str | None) -> bool:
        cur = await self._run(lambda: self._conn().execute(
            "DELETE FROM blocklist WHERE number = ? AND x = ?", (number, x or "")))
        return bool(cur.rowcount)


class RedisPolicyStore:
    """Policies in the Redis hash `{prefix}:policies`."""

    def __init__(self, url: str) -> None:
        from relay.bindings.redis_url import redis_client

        opts = parse_qs(urlsplit(url).query)
        prefix = "{" + opts.get("prefix", ["relay"])[0] + "}"
        self.key = prefix + ":policies"
        self.block_key = prefix + ":blocklist"
        self._r: Any = redis_client(url, socket_timeout=2.0,
                                         socket_connect_timeout=1.0)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        await self._r.aclose()

    async def _do(self, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def all(self) -> dict[str, dict[str, Any]]:
        raw = await self._do(self._r.hgetall(self.key))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def put(self, policy: Policy) -> None:
        await self._do(self._r.hset(self.key, policy.name, json.dumps(policy.as_dict())))

    async def delete(self, name: str) -> bool:
        return bool(await self._do(self._r.hdel(self.key, name)))

    async def blocks(self) -> list[Block]:
        raw = await self._do(self._r.hgetall(self.block_key))
        return [_block(json.loads(v)) for v in raw.values()]

    async def block(self, entry: Block) -> None:
        await self._do(self._r.hset(self.block_key, f"{entry.number}|{entry.x or ''}",
                                    json.dumps(entry.as_dict())))

    async def unblock(self, number: str, x: str | None) -> bool:
        return bool(await self._do(self._r.hdel(self.block_key, f"{number}|{x or ''}")))


def open_policy_store(url: str) -> PolicyStore:
    """The policy store beside the binding store of `url` (not yet opened)."""
    if url.startswith("sqlite://"):
        from .bindings.sqlite_store import SqliteStore

        return SqlitePolicyStore(str(SqliteStore(url).path))
    return RedisPolicyStore(url)
