"""The asyncio side of RFC 3263 resolution: UDP (TCP on truncation) queries and a cache.

The walk and the codec are sans-IO in ``relay/sip/dns.py``; this only sends the queries
the walk asks for, feeds the answers back and caches record sets by their TTL. The call
path never waits on DNS: it reads :meth:`Resolver.cached_targets`, and a background task
calls :meth:`Resolver.resolve_sip` to refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.sip.dns import (
    AAAA,
    A,
    DnsError,
    DnsMessage,
    Rcode,
    RData,
    Target,
    decode_message,
    encode_query,
    negative_ttl,
    records_for,
    walk,
)

__all__ = ["DnsUnavailable", "Resolver", "Target", "servers_from_resolv_conf"]

log = logging.getLogger(__name__)


class DnsUnavailable(Exception):
    """No server answered (timeouts, SERVFAIL, garbage) and nothing is cached."""


def servers_from_resolv_conf(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The `nameserver` lines of resolv.conf(5) as (ip, 53); 127.0.0.1 when there are none."""
    servers = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append((fields[1].split("%")[0], 53))
    return servers or [("127.0.0.1", 53)]


@dataclass(slots=True)
class _Entry:
    data: list[RData]
    expires: float


class _CacheView(Mapping[tuple[str, int], Sequence[RData]]):
    """The cache as the walk reads it (stale entries included), without a copy."""

    __slots__ = ("_cache",)

    def __init__(self, cache: OrderedDict[tuple[str, int], _Entry]) -> None:
        self._cache = cache

    def __getitem__(self, key: tuple[str, int]) -> Sequence[RData]:
        return self._cache[key].data

    def __contains__(self, key: object) -> bool:
        return key in self._cache

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


class _Failed(Exception):
    """One query got no usable answer from any server."""


class _UdpAnswer(asyncio.DatagramProtocol):
    def __init__(self, accept: Callable[[bytes], bool]) -> None:
        self.accept = accept
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # A connected socket already filters the source; a wrong id or question is a
        # stray or forged answer: ignore it and keep waiting (RFC 5452 §9.1).
        if not self.done.done() and self.accept(data):
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class Resolver:
    """RFC 3263 resolution with a bounded TTL cache.

    `servers`: (ip, port) pairs, tried in turn `tries` times, each waiting `timeout` s.
    Negative answers are cached per RFC 2308 for at least `negative_floor` seconds (and
    at most `negative_cap`); positive ones for their TTL, capped at `max_ttl`.
    """

    def __init__(self, servers: Sequence[tuple[str, int]] | None = None, *,
                 timeout: float = 2.0, tries: int = 2, max_entries: int = 1024,
                 negative_floor: float = 5.0, negative_cap: float = 300.0,
                 max_ttl: float = 86400.0,
                 clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] | None = None) -> None:
        self.servers = list(servers) if servers is not None else servers_from_resolv_conf()
        self.timeout = timeout
        self.tries = tries
        self.max_entries = max_entries
        self.negative_floor = negative_floor
        self.negative_cap = negative_cap
        self.max_ttl = max_ttl
        self.clock = clock
        self.random = random  # for the RFC 2782 draw; None: the system CSPRNG
        self.queries_sent = 0  # datagrams and TCP queries sent, for tests and metrics
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, int], asyncio.Future[list[RData]]] = {}

    async def resolve_sip(self, host: str, port: int | None = None,
                          transport: str | None = None, *, secure: bool = False,
                          transports: Sequence[str] = ("UDP", "TCP", "TLS"),
                          families: Sequence[int] = (A, AAAA)) -> list[Target]:
        """The ordered targets for a SIP URI's host/port/transport (RFC 3263 §4).

        Fresh cache entries answer without a query. A query that fails falls back to the
        stale entry when there is one; DnsUnavailable when the result would be empty
        because of a failure (rather than because the name has no records).
        """
        found: dict[tuple[str, int], Sequence[RData]] = {}
        failed = False
        for _ in range(16):  # NAPTR, SRV, A/AAAA: a few rounds; the cap is a backstop
            step = walk(host, port, transport, found, secure=secure, transports=transports,
                        families=families, random=self.random)
            if not step.needed:
                if not step.targets and failed:
                    raise DnsUnavailable(f"no DNS answer for {host}")
                return step.targets
            answers = await asyncio.gather(*(self._lookup(key) for key in step.needed),
                                           return_exceptions=True)
            for key, answer in zip(step.needed, answers, strict=True):
                if isinstance(answer, BaseException):
                    failed = True
                    found[key] = []
                else:
                    found[key] = answer
        raise DnsUnavailable(f"DNS walk for {host} did not finish")

    def cached_targets(self, host: str, port: int | None = None,
                       transport: str | None = None, *, secure: bool = False,
                       transports: Sequence[str] = ("UDP", "TCP", "TLS"),
                       families: Sequence[int] = (A, AAAA)) -> list[Target] | None:
        """The targets from the cache, stale or not, without waiting; None when some
        record set was never fetched (the caller then falls back or waits for a refresh).
        SRV order is drawn afresh on each call, so weights still spread the load."""
        step = walk(host, port, transport, _CacheView(self._cache), secure=secure,
                    transports=transports, families=families, random=self.random)
        return None if step.needed else step.targets

    async def _lookup(self, key: tuple[str, int]) -> list[RData]:
        entry = self._cache.get(key)
        if entry is not None and entry.expires > self.clock():
            self._cache.move_to_end(key)
            return entry.data
        pending = self._inflight.get(key)
        if pending is None:  # one query per record set, however many callers wait
            pending = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        try:
            return await asyncio.shield(pending)
        except _Failed:
            if entry is not None:  # serve stale rather than nothing (RFC 8767 §4)
                return entry.data
            raise

    async def _fetch(self, key: tuple[str, int]) -> list[RData]:
        name, rtype = key
        for _ in range(self.tries):
            for server in self.servers:
                try:
                    message = await self._query(server, name, rtype)
                except (OSError, TimeoutError, DnsError) as exc:
                    log.debug("dns %s/%d via %s: %s", name, rtype, server, exc)
                    continue
                if message.rcode == Rcode.NXDOMAIN or (
                        message.rcode == Rcode.NOERROR and not records_for(message, name,
                                                                          rtype)):
                    ttl = negative_ttl(message)
                    hold = min(max(ttl or 0, self.negative_floor), self.negative_cap)
                    self._store(key, [], hold)
                    return []
                if message.rcode != Rcode.NOERROR:  # SERVFAIL, REFUSED: ask the next one
                    continue
                records = records_for(message, name, rtype)
                ttl = min(rr.ttl for rr in records)
                data = [rr.data for rr in records]
                self._store(key, data, min(ttl, self.max_ttl))
                return data
        raise _Failed(f"{name}/{rtype}")

    def _store(self, key: tuple[str, int], data: list[RData], ttl: float) -> None:
        self._cache[key] = _Entry(data, self.clock() + ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _query(self, server: tuple[str, int], name: str, rtype: int) -> DnsMessage:
        query_id, wire = encode_query(name, rtype)

        def accept(data: bytes) -> bool:
            try:
                reply = decode_message(data)
            except DnsError:
                return False
            return (reply.is_response and reply.id == query_id and len(reply.questions) == 1
                    and reply.questions[0].name == name.rstrip(".").lower()
                    and reply.questions[0].rtype == rtype)

        loop = asyncio.get_running_loop()
        # A fresh socket per query: a random source port (RFC 5452 §9.2).
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpAnswer(accept), remote_addr=server)
        try:
            self.queries_sent += 1
            transport.sendto(wire)
            data = await asyncio.wait_for(protocol.done, self.timeout)
        finally:
            transport.close()
        message = decode_message(data)
        if message.truncated:  # RFC 1035 §4.2.2 / RFC 7766: ask again over TCP
            data = await asyncio.wait_for(self._query_tcp(server, wire), self.timeout)
            if not accept(data):
                raise DnsError("TCP answer does not match the query")
            message = decode_message(data)
        return message

    async def _query_tcp(self, server: tuple[str, int], wire: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*server)
        try:
            self.queries_sent += 1
            writer.write(len(wire).to_bytes(2, "big") + wire)  # RFC 1035 §4.2.2 framing
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise DnsError("TCP answer cut short") from exc
        finally:
            writer.close()
