"""The shared store for many nodes: Redis, every write one Lua script.

Keys share the hash tag `{relay}` so the scripts also run on Redis Cluster (all keys
in one slot).  Layout:

* `{relay}:b` hash id -> packed binding, `{relay}:v` hash id -> version,
  `{relay}:r` hash id -> route record of each live binding (what a node loads at start);
* `{relay}:c` hash claim -> value (claims.py), `{relay}:n` hash number -> packed record;
* `{relay}:exp` / `{relay}:frz` sorted sets for the sweeper (expiry, frozen time);
* `{relay}:feed` the change stream every node follows; `{relay}:epoch` changes when
  the data set is new (a Redis that came back empty), which makes followers reload.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.events.model import Event
from relay.events.outbox import redis_outbox_args

from .claims import ClaimConflict, Op
from .model import Binding, NumberRecord
from .redis_url import SENTINEL_SCHEME, redis_client
from .store import Change, FeedGap, Snapshot, StoreUnavailable, VersionConflict
from .table import route_record

__all__ = ["RedisStore"]

log = logging.getLogger("relay.store")

_FEED_MAXLEN = 1_000_000

# The same rules as claims.apply_op, in Lua, so the check and the write are one atomic
# step on the server. KEYS: b, v, c, feed, exp, frz.
# ARGV: id, expected, version, blob, now, quarantine, state, expires_at, frozen_at,
#       maxlen, nops, then (kind, key, arg) per op, then the route record.
# KEYS[7] is the hash of route records of live bindings (what a starting node loads).
# KEYS[8..10] and the ARGV after the route record: the events outbox (sorted set, hash,
# stream) and relay.events.outbox.redis_outbox_args (binding.frozen), written only when
# the change is.
_COMMIT_LUA = r"""
local id = ARGV[1]
local cur = tonumber(redis.call('HGET', KEYS[2], id) or '0')
if cur ~= tonumber(ARGV[2]) then return {'version', tostring(cur)} end
local now = tonumber(ARGV[5])
local quar = tonumber(ARGV[6])
local function fmt(x) return string.format('%.3f', x) end
local pending, order = {}, {}
local qu = ''
local n = tonumber(ARGV[11])
for i = 0, n - 1 do
  local kind, key, arg = ARGV[12 + i * 3], ARGV[13 + i * 3], ARGV[14 + i * 3]
  local v = pending[key]
  if v == nil then v = redis.call('HGET', KEYS[3], key) end
  if v == false then v = nil end
  local out
  if kind == 'take' then
    local free = v == nil or v == id
    if not free and string.sub(v, 1, 2) == 'q:' then free = tonumber(string.sub(v, 3)) <= now end
    if free then
      out = id
    else
      return {'claim', key, v}
    end
  elseif kind == 'drop' then
    if v == id then out = false else out = v or false end
  elseif kind == 'quar' then
    if v == id then out = 'q:' .. fmt(now + quar) else out = v or false end
  else
    local mode, count, untl = '', 0, 0
    if v ~= nil and v ~= '' then
      local a, b, c = string.match(v, '^([^,]*),([^,]*),([^,]*)$')
      mode, count, untl = a, tonumber(b), tonumber(c)
    end
    if kind == 'use' then
      if count > 0 and mode ~= arg then return {'claim', key, mode .. ' bindings'} end
      if count == 0 and mode ~= arg and untl > now then return {'claim', key, 'quarantine'} end
      out = arg .. ',' .. string.format('%d', count + 1) .. ',' .. fmt(untl)
    else
      count = math.max(0, count - 1)
      if count == 0 then untl = now + quar; qu = fmt(untl) end
      out = mode .. ',' .. string.format('%d', count) .. ',' .. fmt(untl)
    end
  end
  if pending[key] == nil then table.insert(order, key) end
  pending[key] = out
end
for _, key in ipairs(order) do
  local v = pending[key]
  if v == false then redis.call('HDEL', KEYS[3], key) else redis.call('HSET', KEYS[3], key, v) end
end
redis.call('HSET', KEYS[1], id, ARGV[4])
redis.call('HSET', KEYS[2], id, ARGV[3])
local state = ARGV[7]
if state == 'released' then
  redis.call('HDEL', KEYS[7], id)
else
  redis.call('HSET', KEYS[7], id, ARGV[12 + n * 3])
end
if state == 'active' and ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[8], id)
else
  redis.call('ZREM', KEYS[5], id)
end
if state == 'frozen' then
  redis.call('ZADD', KEYS[6], ARGV[9], id)
else
  redis.call('ZREM', KEYS[6], id)
end
local eb = 13 + n * 3
local m = tonumber(ARGV[eb] or '0')
for j = 0, m - 1 do
  local o = eb + 2 + j * 6
  if redis.call('HSETNX', KEYS[9], ARGV[o], ARGV[o + 1]) == 1 then
    redis.call('ZADD', KEYS[8], ARGV[o + 2], ARGV[o])
    redis.call('XADD', KEYS[10], 'MAXLEN', '~', ARGV[eb + 1], '*', 'id', ARGV[o],
               'type', ARGV[o + 3], 'key', ARGV[o + 4], 'body', ARGV[o + 5])
  end
end
local sid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*',
                       'k', 'b', 'd', ARGV[4], 'q', qu)
return {'ok', sid}
"""

# KEYS: n, feed. ARGV: maxlen, then (number, blob) pairs.
_ADD_NUMBERS_LUA = r"""
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    added = added + 1
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'k', 'n', 'd', ARGV[i + 1])
  end
end
return added
"""

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


class RedisStore:
    """Store on a Redis server (or Sentinel/Cluster endpoint with the same keys)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        opts = parse_qs(parts.query)
        self.url = url
        self.prefix = "{" + opts.get("prefix", ["relay"])[0] + "}"
        base = url.split("?", 1)[0]
        common: dict[str, Any] = {"socket_connect_timeout": 1.0, "health_check_interval": 5}
        self._r: Any = redis_client(base, socket_timeout=2.0, **common)
        # XREAD BLOCK needs a socket timeout longer than its block time: its own client.
        self._feed_r: Any = redis_client(base, socket_timeout=5.0, **common)
        # Replication is asynchronous: a change the master acknowledged can be lost in a
        # failover. Behind Sentinel a change counts as made only once `replicas`
        # replicas hold it (WAIT); `?replicas=0` turns that off.
        default = "1" if url.startswith(SENTINEL_SCHEME) else "0"
        self.replicas = int(opts.get("replicas", [default])[0])
        self.replica_wait_ms = int(opts.get("replica_wait_ms", ["1000"])[0])
        self.unreplicated = 0  # changes no replica confirmed in time
        self._commit = self._r.register_script(_COMMIT_LUA)
        self._add_numbers = self._r.register_script(_ADD_NUMBERS_LUA)
        self._feed_checked = False
        self.events_maxlen = 100_000  # the events stream's cap (relay.events.service)

    def _k(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def open(self) -> None:
        try:
            await self._r.set(self._k("epoch"), secrets.token_hex(8), nx=True)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._r.aclose()
        await self._feed_r.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    async def epoch(self) -> str:
        try:
            v = await self._r.get(self._k("epoch"))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return v.decode() if v else ""

    # -- reads ---------------------------------------------------------------------------

    async def get(self, binding_id: str) -> Binding | None:
        try:
            blob = await self._r.hget(self._k("b"), binding_id)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return Binding.unpack(blob) if blob else None

    async def claim(self, key: str) -> str | None:
        try:
            v = await self._r.hget(self._k("c"), key)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return v.decode() if v else None

    async def claims(self, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            async for k, v in self._r.hscan_iter(self._k("c"), match=prefix + "*", count=5000):
                out[k.decode()] = v.decode()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return out

    async def query(self, *, x: str | None = None, state: str | None = None,
                    out_id: str | None = None, cursor: str | None = None,
                    limit: int = 100) -> tuple[list[Binding], str | None]:
        """Filtered listing by scanning the binding hash (O(n): look bindings up by id
        where it matters); `next` is Redis's own scan cursor."""
        pos = int(cursor) if cursor else 0
        found: list[Binding] = []
        scanned = 0
        try:
            while True:
                pos, page = await self._r.hscan(self._k("b"), pos, count=max(limit, 500))
                for blob in page.values():
                    b = Binding.unpack(blob)
                    if ((x is None or b.x == x) and (state is None or b.state.value == state)
                            and (out_id is None or b.out_id == out_id)):
                        found.append(b)
                scanned += len(page)
                if pos == 0 or len(found) >= limit or scanned >= 50_000:
                    break
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return found, (str(pos) if pos else None)

    async def numbers(self) -> list[NumberRecord]:
        try:
            raw = await self._r.hgetall(self._k("n"))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return sorted((NumberRecord.unpack(v) for v in raw.values()), key=lambda n: n.number)

    async def due(self, now: float, frozen_hold: float, limit: int) -> list[Binding]:
        try:
            ids = await self._r.zrangebyscore(self._k("exp"), "-inf", now, start=0, num=limit)
            ids += await self._r.zrangebyscore(self._k("frz"), "-inf", now - frozen_hold,
                                               start=0, num=limit)
            if not ids:
                return []
            blobs = await self._r.hmget(self._k("b"), ids)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [Binding.unpack(b) for b in blobs if b]

    # -- writes --------------------------------------------------------------------------

    async def commit(self, new: Binding, expected_version: int, ops: list[Op],
                     now: float, quarantine: float, events: Sequence[Event] = ()) -> None:
        """Apply one change in the Lua script; `events` join the outbox in it."""
        args: list[Any] = [
            new.id, expected_version, new.version, new.pack(), f"{now:.3f}", f"{quarantine:.3f}",
            new.state.value, _fmt(new.expires_at), _fmt(new.frozen_at), _FEED_MAXLEN, len(ops),
        ]
        for op in ops:
            args += [op.kind, op.key, op.arg]
        args.append(route_record(new))
        if events:
            args += redis_outbox_args(events, self.events_maxlen)
        keys = [self._k(n) for n in ("b", "v", "c", "feed", "exp", "frz", "r", "outbox",
                                     "outbox:ev", "events")]
        try:
            res = await self._commit(keys=keys, args=args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        tag = res[0].decode()
        if tag == "version":
            raise VersionConflict(new.id)
        if tag == "claim":
            raise ClaimConflict(res[1].decode(), res[2].decode())
        await self._replicated()

    async def _replicated(self) -> None:
        """Wait until `replicas` replicas hold the writes made so far (see __init__)."""
        if self.replicas <= 0:
            return
        try:
            acked = int(await self._r.execute_command("WAIT", self.replicas,
                                                      self.replica_wait_ms))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        if acked < self.replicas:
            # No replica to confirm (the set lost it, or it lags): the change stands on
            # the master alone, as it would without WAIT; refusing it now would only
            # turn an applied change into an error. Counted, and logged.
            self.unreplicated += 1
            log.warning("a change reached %d of %d replicas within %d ms (%d so far)",
                        acked, self.replicas, self.replica_wait_ms, self.unreplicated)

    async def add_numbers(self, numbers: list[NumberRecord]) -> int:
        args: list[Any] = [_FEED_MAXLEN]
        for n in numbers:
            args += [n.number, n.pack()]
        try:
            added = int(await self._add_numbers(keys=[self._k("n"), self._k("feed")],
                                                args=args))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        await self._replicated()
        return added

    # -- the feed ------------------------------------------------------------------------

    async def _last_id(self) -> str:
        last = await self._r.xrevrange(self._k("feed"), count=1)
        return last[0][0].decode() if last else "0-0"

    async def snapshot(self) -> Snapshot:
        """All live bindings and the pool; the offset is read first, so a change made
        during the scan is replayed afterwards (replays are idempotent by version)."""
        try:
            epoch = await self.epoch()
            offset = await self._last_id()
            records: list[bytes] = []
            pos = 0
            while True:
                pos, page = await self._r.hscan(self._k("r"), pos, count=10_000)
                records.extend(page.values())
                if pos == 0:
                    break
            numbers = await self.numbers()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._feed_checked = True
        return Snapshot(records=records, numbers=numbers, offset=offset, epoch=epoch)

    async def changes(self, offset: str, block: float) -> tuple[list[Change], str]:
        """Changes after `offset`, waiting up to `block` seconds for the first one."""
        feed = self._k("feed")
        try:
            if not self._feed_checked:
                await self._check_gap(offset)
            res = await self._feed_r.xread({feed: offset}, count=5000,
                                           block=max(1, int(block * 1000)))
        except _UNAVAILABLE as exc:
            self._feed_checked = False
            raise StoreUnavailable(str(exc)) from exc
        except ResponseError as exc:
            raise StoreUnavailable(str(exc)) from exc
        out: list[Change] = []
        last = offset
        for _stream, entries in res or []:
            for sid, fields in entries:
                last = sid.decode()
                kind = fields.get(b"k")
                if kind == b"b":
                    q = fields.get(b"q") or b""
                    out.append(Change(binding=Binding.unpack(fields[b"d"]),
                                      quarantine_until=float(q) if q else None))
                elif kind == b"n":
                    out.append(Change(number=NumberRecord.unpack(fields[b"d"])))
        return out, last

    async def _check_gap(self, offset: str) -> None:
        """After a reconnect: the feed must still hold everything after `offset`.

        After a Sentinel failover the new master's stream is the old one's, as far as
        it was replicated: the same ids, so reading resumes at `offset`. Unless this node
        had read an entry that never reached the replica: then `offset` is not in the
        new stream, and entries the new master adds could sort below it; reload."""
        feed = self._k("feed")
        first = await self._r.xrange(feed, count=1)
        if first and offset not in ("0", "0-0"):
            head = _sid(first[0][0].decode())
            if head > _next_sid(offset):
                raise FeedGap(offset)
            if head <= _sid(offset) and not await self._r.xrange(feed, offset, offset):
                raise FeedGap(offset)
        self._feed_checked = True


def _sid(s: str) -> tuple[int, int]:
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def _next_sid(s: str) -> tuple[int, int]:
    ms, seq = _sid(s)
    return ms, seq + 1
