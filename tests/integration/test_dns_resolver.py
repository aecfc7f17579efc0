"""relay.io.dns against a real DNS server: Debian's dnsmasq on 127.0.0.1 and a free port.

It serves a NAPTR -> SRV -> A chain for trunk.test (two SRV targets at priority 10, one at
20), and answers NXDOMAIN for other names under test. The resolver's clock is injected,
so TTL expiry needs no sleeping; queries are counted in dnsmasq's own log.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from dns_server import Dnsmasq, dnsmasq_exe

from relay.io.dns import DnsUnavailable, Resolver
from relay.sip.dns import A, Target

pytestmark = pytest.mark.integration

TTL = 60
BIG = 40  # A records for big.trunk.test: more than fit a 512-octet UDP answer


RECORDS = [
    "--naptr-record=trunk.test,10,10,S,SIP+D2U,,_sip._udp.trunk.test",
    "--naptr-record=trunk.test,20,10,S,SIP+D2T,,_sip._tcp.trunk.test",
    "--srv-host=_sip._udp.trunk.test,a.trunk.test,5070,10,60",
    "--srv-host=_sip._udp.trunk.test,b.trunk.test,5071,10,40",
    "--srv-host=_sip._udp.trunk.test,c.trunk.test,5072,20,0",
    "--srv-host=_sip._tcp.trunk.test,a.trunk.test,5080,10,0",
    f"--host-record=a.trunk.test,127.0.0.2,{TTL}",
    f"--host-record=b.trunk.test,127.0.0.3,{TTL}",
    f"--host-record=c.trunk.test,127.0.0.4,{TTL}",
    f"--host-record=plain.test,127.0.0.5,{TTL}",
    *(f"--host-record=big.trunk.test,10.0.0.{i}" for i in range(1, BIG + 1)),
]


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    exe = dnsmasq_exe()
    server = Dnsmasq(tmp_path, RECORDS, TTL)
    server.start(exe)
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver_for(server: Dnsmasq, clock: Clock) -> Resolver:
    return Resolver([("127.0.0.1", server.port)], timeout=5.0, tries=2, clock=clock)


def wait_queries(server: Dnsmasq, count: int) -> int:
    """dnsmasq logs after answering: poll until the log catches up with what we sent."""
    deadline = time.monotonic() + 10
    while server.queries() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.queries()


async def test_naptr_srv_a_order_cache_and_expiry(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    resolver = resolver_for(dnsmasq, clock)
    assert resolver.cached_targets("trunk.test") is None  # nothing fetched yet

    targets = await resolver.resolve_sip("trunk.test", families=(A,))
    # NAPTR order 10 (UDP) first, then order 20 (TCP); within UDP, priority 10 (a and b,
    # weighted at random) before priority 20 (c): the failover order.
    assert set(targets[:2]) == {Target("127.0.0.2", 5070, "UDP"),
                                Target("127.0.0.3", 5071, "UDP")}
    assert targets[2:] == [Target("127.0.0.4", 5072, "UDP"), Target("127.0.0.2", 5080, "TCP")]
    # NAPTR, 2 SRV, then A for a, b and c
    sent = resolver.queries_sent
    assert sent == 6
    assert wait_queries(dnsmasq, sent) == sent

    # within the TTL: the same answer, no query on the wire
    clock.now += TTL - 1
    again = await resolver.resolve_sip("trunk.test", families=(A,))
    assert sorted(again) == sorted(targets)
    assert resolver.queries_sent == sent and dnsmasq.queries() == sent
    assert sorted(resolver.cached_targets("trunk.test", families=(A,)) or []) == sorted(targets)

    # past the TTL: every record set is asked again
    clock.now += 2
    await resolver.resolve_sip("trunk.test", families=(A,))
    assert resolver.queries_sent == 2 * sent
    assert wait_queries(dnsmasq, 2 * sent) == 2 * sent


async def test_server_gone_serves_the_last_good_answer(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    resolver = Resolver([("127.0.0.1", dnsmasq.port)], timeout=0.5, tries=1, clock=clock)
    targets = await resolver.resolve_sip("trunk.test", None, "udp", families=(A,))
    assert {t.port for t in targets[:2]} == {5070, 5071}  # priority 10, weighted at random
    assert targets[-1] == Target("127.0.0.4", 5072, "UDP")
    dnsmasq.stop()

    # the call path reads the cache: no waiting, same targets
    assert sorted(resolver.cached_targets("trunk.test", None, "UDP", families=(A,))
                  or []) == sorted(targets)
    # a refresh after expiry with the server gone keeps the stale answer (RFC 8767)
    clock.now += TTL + 1
    refreshed = await resolver.resolve_sip("trunk.test", None, "udp", families=(A,))
    assert sorted(refreshed) == sorted(targets)
    # a name never seen cannot be answered
    with pytest.raises(DnsUnavailable):
        await resolver.resolve_sip("plain.test", 5060, families=(A,))


async def test_port_given_nxdomain_and_negative_cache(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    resolver = resolver_for(dnsmasq, clock)
    assert await resolver.resolve_sip("plain.test", 5099) == [Target("127.0.0.5", 5099, "UDP")]
    assert resolver.queries_sent == 2  # A and AAAA only: a port given skips NAPTR and SRV

    assert await resolver.resolve_sip("nope.test", families=(A,)) == []
    sent = resolver.queries_sent  # NAPTR, 3 SRV, A: all NXDOMAIN
    assert sent == 2 + 5
    # negatively cached for at least the floor
    assert await resolver.resolve_sip("nope.test", families=(A,)) == []
    assert resolver.queries_sent == sent
    assert resolver.cached_targets("nope.test", families=(A,)) == []
    clock.now += resolver.negative_floor + 1
    await resolver.resolve_sip("nope.test", families=(A,))
    assert resolver.queries_sent == 2 * sent - 2


async def test_truncated_answer_is_asked_again_over_tcp(dnsmasq: Dnsmasq) -> None:
    resolver = resolver_for(dnsmasq, Clock())
    targets = await resolver.resolve_sip("big.trunk.test", 5060, families=(A,))
    assert sorted(t.ip for t in targets) == sorted(f"10.0.0.{i}" for i in range(1, BIG + 1))
    assert resolver.queries_sent == 2  # UDP came back with TC set, then TCP


# --- failure paths dnsmasq cannot be made to show: a scripted server on loopback --------

class Scripted(asyncio.DatagramProtocol):
    """Answers each query per `mode`: "forge" (a wrong id first, then the answer),
    "servfail", or "silent"."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.transport: asyncio.DatagramTransport | None = None
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.seen += 1
        qid = struct.unpack("!H", data[:2])[0]
        question = data[12:]
        if self.mode == "silent":
            return
        if self.mode == "servfail":
            self.transport.sendto(struct.pack("!HHHHHH", qid, 0x8182, 1, 0, 0, 0) + question,
                                  addr)
            return
        answer = b"\xc0\x0c" + struct.pack("!HHIH", A, 1, 30, 4)
        forged = struct.pack("!HHHHHH", qid ^ 1, 0x8180, 1, 1, 0, 0) + question + answer
        self.transport.sendto(forged + b"\x06\x06\x06\x06", addr)  # 6.6.6.6: the forger
        real = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer
        self.transport.sendto(real + b"\x7f\x00\x00\x09", addr)


async def scripted(mode: str) -> tuple[Scripted, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Scripted(mode), local_addr=("127.0.0.1", 0))
    return protocol, transport.get_extra_info("sockname")[:2]


async def test_forged_answer_ignored_and_servfail_tries_next_server() -> None:
    bad, bad_addr = await scripted("servfail")
    good, good_addr = await scripted("forge")
    try:
        resolver = Resolver([bad_addr, good_addr], timeout=5.0, tries=1)
        assert await resolver.resolve_sip("h.test", 5060, families=(A,)) == [
            Target("127.0.0.9", 5060, "UDP")]
        assert (bad.seen, good.seen) == (1, 1)
    finally:
        for proto in (bad, good):
            assert proto.transport is not None
            proto.transport.close()


async def test_silent_server_times_out_without_hanging() -> None:
    silent, addr = await scripted("silent")
    try:
        resolver = Resolver([addr], timeout=0.3, tries=2)
        with pytest.raises(DnsUnavailable):
            await resolver.resolve_sip("h.test", 5060, families=(A,))
        assert silent.seen == 2
        assert resolver.cached_targets("h.test", 5060, families=(A,)) is None
    finally:
        assert silent.transport is not None
        silent.transport.close()
