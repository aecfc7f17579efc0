"""Binding-table benchmark (issue: foundation).

Prints lookup time with 1,000,000 bindings in memory, memory per binding (RSS), the time
to load 1,000,000 bindings from Redis, freeze propagation between two `relay serve`
nodes on one Redis (p50/p99 over N freezes), and API create-binding throughput.

    python -m loadtest bindings [--bindings 1000000] [--freezes 1000] [--creates 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
from collections.abc import Callable, Iterator

import aiohttp
import redis

from dialplan.route import decide
from relay.bindings.model import Binding, Mode
from relay.bindings.pool import NumberPool
from relay.bindings.store import open_store
from relay.bindings.sync import Follower
from relay.bindings.table import BindingTable, route_record

from .common import RedisProc, RelayChild, percentile, report, rss_bytes

PAIRS_PER_X = 50


def synthetic(n: int) -> Iterator[Binding]:
    """n AXB bindings: each X serves PAIRS_PER_X pairs (AXB reuse), one-hour expiry."""
    exp = time.time() + 3600
    for i in range(n):
        yield Binding(id=f"{i + 1:016x}", mode=Mode.AXB, x=f"+86170{i // PAIRS_PER_X:08d}",
                      a=f"+86138{i:08d}", b=f"+86139{i:08d}", expires_at=exp,
                      out_id=f"order-{i}")


def bench_memory_and_lookup(n: int) -> tuple[float, float, float, float, float]:
    gc.collect()
    before = rss_bytes()
    table = BindingTable()
    t0 = time.perf_counter()
    for b in synthetic(n):
        table.apply(b)
    fill = time.perf_counter() - t0
    gc.collect()
    per_binding = (rss_bytes() - before) / n
    rnd = random.Random(7)
    probes = []
    for _ in range(200_000):
        i = rnd.randrange(n)
        probes.append((f"+86170{i // PAIRS_PER_X:08d}", f"+86138{i:08d}"))
    lookup = table.lookup
    in_use = table.in_use
    now = time.time()
    # Best of five passes, as timeit does: on a shared VM the minimum is the figure that
    # other processes disturbed least.
    plain = {(int(x[1:]) << 50) | int(c[1:]): None for x, c in probes}

    def per_call(fn: Callable[[str, str], object]) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for x, caller in probes:
                fn(x, caller)
            best = min(best, (time.perf_counter() - t0) / len(probes))
        return best

    per_lookup = per_call(lookup)
    per_decision = per_call(lambda x, c: decide(lookup(x, c), in_use(x), c, now))
    # The anchor: the floor any Python design pays here, a bare dict hit on one of a
    # million int keys with the two number strings parsed (this VM's speed, in one line).
    get = plain.get
    anchor = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for x, caller in probes:
            get((int(x) << 50) | int(caller))
        anchor = min(anchor, (time.perf_counter() - t0) / len(probes))
    plain.clear()
    del table
    gc.collect()
    return per_lookup * 1e9, per_decision * 1e9, per_binding, n / fill, anchor * 1e9


def fill_redis(url: str, n: int) -> None:
    """Write n bindings the way the store lays them out (bulk, pipelined)."""
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for i, b in enumerate(synthetic(n)):
        pipe.hset("{relay}:b", b.id, b.pack())
        pipe.hset("{relay}:v", b.id, 1)
        pipe.hset("{relay}:r", b.id, route_record(b))
        if i % 20_000 == 19_999:
            pipe.execute()
    pipe.execute()
    r.set("{relay}:epoch", "bench")
    r.close()


async def bench_load(url: str) -> tuple[float, int]:
    store = open_store(url)
    await store.open()
    table, pool = BindingTable(), NumberPool()
    f = Follower(store, table, pool)
    t0 = time.perf_counter()
    await f.load()
    took = time.perf_counter() - t0
    await store.close()
    return took, len(table)


async def bench_nodes(url: str, freezes: int, creates: int, workdir: str
                      ) -> dict[str, float]:
    n1 = RelayChild(url, workdir)
    n2 = RelayChild(url, workdir)
    try:
        async with aiohttp.ClientSession() as http:
            numbers = [f"+86171{i:08d}" for i in range(max(creates, freezes) // 10 + 10)]
            async with http.post(n1.base + "/v1/numbers", json={"numbers": numbers}) as r:
                assert r.status == 201, await r.text()
            sem = asyncio.Semaphore(16)
            made: list[dict[str, str]] = []

            async def create(i: int) -> None:
                body = {"mode": "AXB", "a": f"+86137{i:08d}", "b": f"+86136{i:08d}",
                        "ttl": 3600}
                async with sem, http.post(n1.base + "/v1/bindings", json=body) as r:
                    assert r.status == 201, await r.text()
                    made.append(await r.json())
            t0 = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(creates)))
            create_rate = creates / (time.perf_counter() - t0)

            async def refused(b: dict[str, str], caller: str) -> bool:
                async with http.get(n2.base + "/v1/route",
                                    params={"from": caller, "to": b["x"]}) as r:
                    return (await r.json())["action"] == "refuse"
            delays = []
            for b in made[:freezes]:
                async with http.post(n1.base + f"/v1/bindings/{b['id']}/freeze") as r:
                    assert r.status == 200
                t0 = time.perf_counter()
                while not await refused(b, b["a"]):
                    if time.perf_counter() - t0 > 5:
                        raise RuntimeError("freeze never reached node 2")
                delays.append((time.perf_counter() - t0) * 1000)
            # The HTTP poll itself costs time: measure one poll's round trip as the floor.
            t0 = time.perf_counter()
            for b in made[:200]:
                await refused(b, b["a"])
            poll_ms = (time.perf_counter() - t0) / min(200, len(made)) * 1000
    finally:
        n1.stop()
        n2.stop()
    return {"create_rate": create_rate, "p50": percentile(delays, 50),
            "p99": percentile(delays, 99), "max": max(delays), "poll_ms": poll_ms}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest bindings")
    ap.add_argument("--bindings", type=int, default=1_000_000)
    ap.add_argument("--freezes", type=int, default=1000)
    ap.add_argument("--creates", type=int, default=2000)
    a = ap.parse_args(argv)
    n = a.bindings
    print(f"filling a table with {n:,} AXB bindings ...", flush=True)
    lookup_ns, decide_ns, per_binding, fill_rate, anchor_ns = bench_memory_and_lookup(n)
    rp = RedisProc()
    try:
        print(f"writing {n:,} bindings to a private redis-server ...", flush=True)
        fill_redis(rp.url(0), n)
        print("loading them as a node does at start ...", flush=True)
        load_s, loaded = asyncio.run(bench_load(rp.url(0)))
        assert loaded == n, loaded
        print(f"two relay nodes: {a.creates} creates, {a.freezes} freezes ...", flush=True)
        with tempfile.TemporaryDirectory() as wd:
            nodes = asyncio.run(bench_nodes(rp.url(1), a.freezes, a.creates, wd))
    finally:
        rp.stop()
    report("bindings", [
        ("lookup (X, caller) with 1M bindings", lookup_ns, "ns", "target < 2000 ns"),
        ("  anchor: bare dict hit + parse, 1M keys", anchor_ns, "ns", "this VM's floor"),
        ("lookup + routing decision", decide_ns, "ns", ""),
        ("memory per binding (RSS)", per_binding, "bytes", "target < 400 bytes"),
        ("table fill rate", fill_rate, "bindings/s", ""),
        ("load 1M bindings from Redis", load_s, "s", "target < 10 s"),
        ("freeze propagation p50", nodes["p50"], "ms", ""),
        ("freeze propagation p99", nodes["p99"], "ms", "target < 50 ms"),
        ("freeze propagation max", nodes["max"], "ms", ""),
        ("  (one /v1/route poll costs)", nodes["poll_ms"], "ms", "included above"),
        ("API create-binding throughput (Redis)", nodes["create_rate"], "bindings/s", ""),
    ], {"bindings": n, "freezes": a.freezes, "creates": a.creates})
    return 0
