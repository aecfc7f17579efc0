"""Policy benchmark (issue 11): what a policy costs a call.

Prints the routing decision with and without a policy (ns per decision, in memory,
best of 5 passes over `--bindings` bindings, with the bare-dict anchor of the same
run), the round trip of one frequency count on a private Redis, and SIPp calls
through one relay (Redis store) at a fixed, bounded rate with no policy and then with
every binding under a policy (quiet hours outside the window, max_calls, max_score),
in the same run.

    python -m loadtest policy [--bindings 200000] [--rate 200] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from dialplan.policy import Limit, parse_policy
from dialplan.route import decide
from relay.bindings.table import BindingTable
from relay.counters import open_counter_store
from relay.policies import PolicyBook

from .bench_bindings import PAIRS_PER_X, synthetic
from .bench_sip import A, B, X, _callee, _post, _stop, run_step
from .common import RedisProc, RelayChild, free_port, percentile, report

TZ = "Asia/Shanghai"


def _outside_now() -> dict[str, str]:
    """A two-hour quiet window that starts three hours from now in TZ (never hit)."""
    now = datetime.now(ZoneInfo(TZ))
    return {"from": (now + timedelta(hours=3)).strftime("%H:%M"),
            "to": (now + timedelta(hours=5)).strftime("%H:%M"), "tz": TZ}


def bench_decisions(n: int) -> dict[str, float]:
    table = BindingTable()
    for b in synthetic(n):
        table.apply(b)
    book = PolicyBook(default="house")
    body = {"quiet_hours": _outside_now(), "directions": ["a_to_b", "b_to_a"],
            "ring_timeout": 30, "max_calls": {"count": 10, "per": "24h"}, "max_score": 60}
    book.replace({"house": body})
    inside = parse_policy("night", {**body, "quiet_hours": {
        "from": "00:00", "to": "23:59", "tz": TZ}})
    rnd = random.Random(7)
    probes = []
    for _ in range(100_000):
        i = rnd.randrange(n)
        probes.append((f"+86170{i // PAIRS_PER_X:08d}", f"+86138{i:08d}"))
    lookup, in_use, now = table.lookup, table.in_use, time.time()
    for_binding, blocked = book.for_binding, book.blocked
    plain = {(int(x[1:]) << 50) | int(c[1:]): None for x, c in probes}
    get = plain.get

    def best(fn: Callable[[str, str], object]) -> float:
        out = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for x, caller in probes:
                fn(x, caller)
            out = min(out, (time.perf_counter() - t0) / len(probes))
        return out * 1e9

    def plain_decision(x: str, c: str) -> object:
        return decide(lookup(x, c), in_use(x), c, now)

    def with_policy(x: str, c: str) -> object:
        e = lookup(x, c)
        return decide(e, in_use(x), c, now, policy=for_binding(e.policy if e else None),
                      blocked=blocked(c, x, now))

    def refused_quiet(x: str, c: str) -> object:
        return decide(lookup(x, c), in_use(x), c, now, policy=inside,
                      blocked=blocked(c, x, now))

    return {"anchor": best(lambda x, c: get((int(x) << 50) | int(c))),
            "plain": best(plain_decision), "policy": best(with_policy),
            "quiet": best(refused_quiet)}


async def bench_counter(url: str, n: int = 2000) -> tuple[float, float]:
    """One `take` round trip on Redis (the Lua script), p50 and p99 in ms."""
    c = open_counter_store(url)
    await c.open()
    times = []
    limit = Limit(10_000, 3600)
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await c.take(f"call:bench:{i % 100}", time.time(), limit)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        await c.close()
    return percentile(times, 50), percentile(times, 99)


def _call(base: str, method: str, path: str, body: object) -> None:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method=method)
    urllib.request.urlopen(req, timeout=10).close()


def bench_calls(url: str, rate: int, calls: int) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    callee_port = free_port(socket.SOCK_DGRAM)
    relay = RelayChild(url, str(work), [
        "--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
        "--media-ports", "40000-44999", "--recordings", str(work / "rec")])
    callee = _callee(work, callee_port)
    out: dict[str, dict[str, float]] = {}
    try:
        _post(relay.base, "/v1/numbers", {"numbers": [X]})
        # Unrecorded on purpose (not the default): the figure isolates this feature's
        # cost; recording's own is measured by `loadtest sip` (README says so beside it).
        b = _post(relay.base, "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "x": X,
                                               "ttl": 86400, "record": False})
        time.sleep(0.5)
        for label in ("plain", "policy"):
            if label == "policy":
                _call(relay.base, "PUT", "/v1/policies/bench", {
                    "quiet_hours": _outside_now(), "max_calls": {"count": 10_000, "per": "1h"},
                    "max_score": 100})
                _call(relay.base, "PATCH", f"/v1/bindings/{b['id']}", {"policy": "bench"})
                time.sleep(1)
            r = run_step(work, relay.sip, rate, calls, rtt=True, pid=relay.proc.pid)
            rtt = r["rtt_ms"]
            out[label] = {"ok": r["ok"], "failed": r["failed"],
                          "p50": percentile(rtt, 50), "p99": percentile(rtt, 99),
                          "cpu_ms": r["relay_cpu_ms_per_call"]}
            time.sleep(3)
    finally:
        _stop(callee)
        relay.stop()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest policy")
    ap.add_argument("--bindings", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args(argv)
    print(f"decisions over {a.bindings:,} bindings ...", flush=True)
    d = bench_decisions(a.bindings)
    rp = RedisProc()
    try:
        print("counter round trips on a private redis-server ...", flush=True)
        c50, c99 = asyncio.run(bench_counter(rp.url(0)))
        print(f"SIPp calls through one relay at {a.rate}/s, without then with a policy ...",
              flush=True)
        calls = bench_calls(rp.url(1), a.rate, a.calls)
    finally:
        rp.stop()
    p, q = calls["plain"], calls["policy"]
    report("policy", [
        ("  anchor: bare dict hit + parse", d["anchor"], "ns", "this VM's floor"),
        ("lookup + decision, no policy", d["plain"], "ns", ""),
        ("lookup + decision with a policy (routes)", d["policy"], "ns", ""),
        ("lookup + decision, quiet hours refuse", d["quiet"], "ns", ""),
        ("frequency count on Redis p50", c50, "ms", ""),
        ("frequency count on Redis p99", c99, "ms", ""),
        (f"calls ok/failed @{a.rate}/s, no policy", p["ok"], "calls", f"{p['failed']:.0f} failed"),
        (f"calls ok/failed @{a.rate}/s, policy", q["ok"], "calls", f"{q['failed']:.0f} failed"),
        ("setup p50, no policy", p["p50"], "ms", ""),
        ("setup p50, policy (decided in memory)", q["p50"], "ms", ""),
        ("setup p99, no policy", p["p99"], "ms", ""),
        ("setup p99, policy", q["p99"], "ms", ""),
        ("relay CPU per call, no policy", p["cpu_ms"], "ms", ""),
        ("relay CPU per call, policy", q["cpu_ms"], "ms", ""),
    ], {"bindings": a.bindings, "rate": a.rate, "calls": a.calls, "decisions_ns": d,
        "calls_detail": calls})
    return 0
