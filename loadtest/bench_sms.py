"""`python -m loadtest sms`: SMS through the relay over SMPP, end to end.

A `relay serve --smpp` child with N AXB bindings; one transmitter bind submits messages
from the A parties to their X with a window of 10 (SMPP 3.4 §2.6), one receiver bind of
the same gateway takes the forwarded deliver_sm (route "gateway") and answers at once.
Both binds run on relay.sms.session (sans-IO) behind a few lines of asyncio, not on
smpplib, so the generator costs little next to the relay.

Reports messages/s end to end (first submit to last delivery), submit_sm_resp and
delivery latency percentiles, and refusals; `--profile` samples the relay with py-spy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from relay.sms._state import Role
from relay.sms.events import Bound, MessageReceived, ResponseReceived
from relay.sms.session import SessionConfig, SmppSession

from .common import RelayChild, free_port, percentile, report

WINDOW = 10
TARGET = 3000.0


def _post(base: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Link(asyncio.Protocol):
    """One SMPP client bind on a sans-IO session: feed, react, write."""

    def __init__(self, bench: Bench, mode: str) -> None:
        self.bench = bench
        self.mode = mode
        self.loop = asyncio.get_running_loop()
        # No enquire_link during a run; response timeouts are left to the run's deadline.
        self.session = SmppSession(Role.CLIENT, self.loop.time(),
                                   SessionConfig(window=WINDOW, enquire_link_interval=3600.0,
                                                 response_timeout=3600.0))
        self.transport: asyncio.Transport | None = None
        self.bound = asyncio.Event()
        self.room = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session.bind(self.loop.time(), "bench", "pw", self.mode)
        self.flush()

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        bench = self.bench
        for ev in self.session.receive_data(data, self.loop.time()):
            if isinstance(ev, MessageReceived):
                self.session.respond(ev, 0)
                bench.delivered(ev, now)
            elif isinstance(ev, ResponseReceived):
                bench.answered(ev, now)
                self.room.set()
            elif isinstance(ev, Bound):
                self.bound.set()
        self.flush()


class Bench:
    """Counts and latencies of one run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent_at: list[float] = [0.0] * total
        self.resp_lat: list[float] = []
        self.deliv_lat: list[float] = []
        self.statuses: dict[int, int] = {}
        self.got = 0
        self.last = 0.0
        self.done = asyncio.Event()
        self.answered_n = 0

    def answered(self, ev: ResponseReceived, now: float) -> None:
        if ev.request.command_id != 0x00000004:  # submit_sm only
            return
        st = ev.response.command_status
        self.statuses[st] = self.statuses.get(st, 0) + 1
        i = int(getattr(ev.request, "short_message", b"b0")[1:])
        self.resp_lat.append(now - self.sent_at[i])
        self.answered_n += 1
        if st != 0:  # refused: never delivered, but the run is complete without it
            self._check()

    def delivered(self, ev: MessageReceived, now: float) -> None:
        i = int(ev.short_message[1:])
        self.deliv_lat.append(now - self.sent_at[i])
        self.got += 1
        self.last = now
        self._check()

    def _check(self) -> None:
        refused = sum(n for s, n in self.statuses.items() if s != 0)
        if self.got + refused >= self.total:
            self.done.set()


async def _run(port: int, pairs: list[tuple[str, str]], total: int) -> tuple[Bench, float]:
    loop = asyncio.get_running_loop()
    bench = Bench(total)
    _, rx = await loop.create_connection(lambda: Link(bench, "rx"), "127.0.0.1", port)
    _, tx = await loop.create_connection(lambda: Link(bench, "tx"), "127.0.0.1", port)
    await asyncio.wait_for(asyncio.gather(rx.bound.wait(), tx.bound.wait()), 10)
    session = tx.session
    start = time.perf_counter()
    i = 0
    n_pairs = len(pairs)
    while i < total:
        while session.window_free == 0:
            tx.room.clear()
            await tx.room.wait()
        now = loop.time()
        while i < total and session.window_free > 0:
            src, x = pairs[i % n_pairs]
            bench.sent_at[i] = time.perf_counter()
            session.submit(now, source_addr=src, source_addr_ton=1, source_addr_npi=1,
                           destination_addr=x, dest_addr_ton=1, dest_addr_npi=1,
                           short_message=b"b%d" % i)
            i += 1
        tx.flush()
    await asyncio.wait_for(bench.done.wait(), 120)
    elapsed = (bench.last or time.perf_counter()) - start
    for link in (tx, rx):
        if link.transport is not None:
            link.transport.close()
    return bench, elapsed


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest sms", description=__doc__)
    ap.add_argument("--messages", type=int, default=30_000)
    ap.add_argument("--bindings", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--profile", action="store_true", help="py-spy the relay during the run")
    a = ap.parse_args(list(argv))

    workdir = tempfile.mkdtemp(prefix="bench-sms-")
    port = free_port()
    relay = RelayChild(f"sqlite:///{workdir}/relay.db", workdir,
                       ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "bench:pw"])
    spy: subprocess.Popen[bytes] | None = None
    try:
        xs = [f"+86170{n:08d}" for n in range(a.bindings)]
        _post(relay.base, "/v1/numbers", {"numbers": xs})
        pairs = []
        for n, x in enumerate(xs):
            a_num, b_num = f"+86138{n:08d}", f"+86139{n:08d}"
            _post(relay.base, "/v1/bindings", {"mode": "AXB", "a": a_num, "b": b_num, "x": x})
            pairs.append((a_num[1:], x[1:]))
        try:
            import uvloop
            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        runner(_run(port, pairs, a.warmup))  # JIT-free Python still warms caches and pools
        pyspy = shutil.which("py-spy", path=os.pathsep.join(
            [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
        if a.profile and pyspy:
            spy = subprocess.Popen(
                [pyspy, "record", "--pid", str(relay.proc.pid), "--format", "raw",
                 "--output", f"{workdir}/relay.folded", "--rate", "200", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cpu0 = _cpu_seconds(relay.proc.pid)
        own0 = time.process_time()
        bench, elapsed = runner(_run(port, pairs, a.messages))
        relay_cpu = _cpu_seconds(relay.proc.pid) - cpu0
        own_cpu = time.process_time() - own0
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        relay.stop()
        if not a.profile:
            shutil.rmtree(workdir, ignore_errors=True)
    delivered = bench.got
    rate = delivered / elapsed if elapsed > 0 else 0.0
    ms = 1000.0
    rows = [
        ("messages delivered", float(delivered), "msg", f"of {a.messages}"),
        ("end-to-end rate", rate, "msg/s", f"target {TARGET:,.0f}"),
        ("delivery latency p50", percentile(bench.deliv_lat, 50) * ms, "ms", ""),
        ("delivery latency p99", percentile(bench.deliv_lat, 99) * ms, "ms", ""),
        ("submit_sm_resp p99", percentile(bench.resp_lat, 99) * ms, "ms", ""),
        ("refused", float(sum(n for s, n in bench.statuses.items() if s)), "msg", "0"),
        # CPU per message does not depend on what else shares the machine, unlike msg/s.
        ("relay CPU per message", relay_cpu / max(1, a.messages) * 1e6, "us", ""),
        ("relay msg/s per CPU core", a.messages / relay_cpu if relay_cpu else 0.0, "msg/s",
         "(CPU-bound ceiling)"),
        ("generator CPU per message", own_cpu / max(1, a.messages) * 1e6, "us", ""),
    ]
    extra: dict[str, Any] = {"window": WINDOW, "bindings": a.bindings,
                             "statuses": {f"0x{k:02X}": v for k, v in bench.statuses.items()},
                             "elapsed_s": elapsed}
    if spy is not None:
        extra["profile"] = f"{workdir}/relay.folded"
        extra["profile_top"] = _top(f"{workdir}/relay.folded")
    report("sms", rows, extra)
    if spy is not None:
        sys.stdout.write("\nrelay profile, self time (py-spy):\n")
        for name, share in extra["profile_top"]:
            sys.stdout.write(f"  {share:5.1f}%  {name}\n")
    return 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _top(path: str, n: int = 15) -> list[tuple[str, float]]:
    """Self-time shares from py-spy's folded stacks (leaf frame of each sample)."""
    counts: dict[str, int] = {}
    total = 0
    try:
        with open(path) as f:
            for line in f:
                stack, _, num = line.rstrip().rpartition(" ")
                leaf = stack.rsplit(";", 1)[-1]
                counts[leaf] = counts.get(leaf, 0) + int(num)
                total += int(num)
    except OSError:
        return []
    return [(k, 100.0 * v / total) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]
