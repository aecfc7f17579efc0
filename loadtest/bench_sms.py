"""`python -m loadtest sms`: SMS through the relay over SMPP, end to end.

A `relay serve --smpp` child with N AXB bindings; one transmitter bind submits messages
from the A parties to their X with a window of 10 (SMPP 3.4 §2.6: at most 10 submit_sm
awaiting their submit_sm_resp), one receiver bind of the same gateway takes the
forwarded deliver_sm (route "gateway") and answers at once. So one window of 10, end
to end: the relay answers a submit_sm only after the receiver acknowledged its
deliver_sm. Both binds run on relay.sms.session (sans-IO) behind a few lines of
asyncio, not on smpplib, over real TCP sockets, so the generator costs little next to
the relay.

Reports messages/s end to end (first submit to last delivery), submit_sm_resp and
delivery latency percentiles, refusals, and CPU per message of the relay (all threads,
and its event-loop thread alone; the rest is the record writer's SQLite thread) and
of the generator. CPU per message is the steadier figure on a shared machine; msg/s
and latency move with whatever else runs, so `--repeat N` measures N times against
the same relay and reports the median run (every run is in the JSON). `--profile`
samples the relay with py-spy.
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
        if self.got + self.answered_n - self.statuses.get(0, 0) >= self.total:
            self.done.set()  # delivered + refused


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


def _measure(runner: Any, pid: int, port: int, pairs: list[tuple[str, str]],
             messages: int) -> dict[str, Any]:
    """One measured run: rates, latencies and CPU per message."""
    cpu0, loop0 = _cpu_seconds(pid), _cpu_seconds(pid, thread=pid)
    own0 = time.process_time()
    bench, elapsed = runner(_run(port, pairs, messages))
    relay_cpu = _cpu_seconds(pid) - cpu0
    loop_cpu = _cpu_seconds(pid, thread=pid) - loop0
    own_cpu = time.process_time() - own0
    per_msg = 1e6 / max(1, messages)
    ms = 1000.0
    return {
        "delivered": bench.got,
        "rate": bench.got / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(bench.deliv_lat, 50) * ms,
        "p99": percentile(bench.deliv_lat, 99) * ms,
        "resp_p99": percentile(bench.resp_lat, 99) * ms,
        "refused": sum(n for s, n in bench.statuses.items() if s),
        "statuses": {f"0x{k:02X}": v for k, v in bench.statuses.items()},
        "relay_us": relay_cpu * per_msg,
        "loop_us": loop_cpu * per_msg,
        "gen_us": own_cpu * per_msg,
        "elapsed_s": elapsed,
    }


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest sms", description=__doc__)
    ap.add_argument("--messages", type=int, default=30_000)
    ap.add_argument("--bindings", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="measured runs against the same relay; the median run is reported")
    ap.add_argument("--profile", action="store_true", help="py-spy the relay during the run")
    a = ap.parse_args(list(argv))

    workdir = tempfile.mkdtemp(prefix="bench-sms-")
    port = free_port()
    relay = RelayChild(f"sqlite:///{workdir}/relay.db", workdir,
                       ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "bench:pw"])
    spy: subprocess.Popen[bytes] | None = None
    runs: list[dict[str, Any]] = []
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
        for n in range(max(1, a.repeat)):
            runs.append(_measure(runner, relay.proc.pid, port, pairs, a.messages))
            if a.repeat > 1:
                r = runs[-1]
                sys.stdout.write(f"run {n + 1}: {r['rate']:,.0f} msg/s, p99 {r['p99']:.2f} ms,"
                                 f" relay {r['relay_us']:.1f} us/msg (loop {r['loop_us']:.1f}),"
                                 f" generator {r['gen_us']:.1f} us/msg\n")
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        relay.stop()
        if not a.profile:
            shutil.rmtree(workdir, ignore_errors=True)
    r = sorted(runs, key=lambda x: x["rate"])[len(runs) // 2]  # the median run, whole
    median = "" if len(runs) == 1 else f"median of {len(runs)} runs"
    rows = [
        ("messages delivered", float(r["delivered"]), "msg", f"of {a.messages}"),
        ("end-to-end rate", r["rate"], "msg/s", f"target {TARGET:,.0f} {median}".rstrip()),
        ("delivery latency p50", r["p50"], "ms", ""),
        ("delivery latency p99", r["p99"], "ms", ""),
        ("submit_sm_resp p99", r["resp_p99"], "ms", ""),
        ("refused", float(r["refused"]), "msg", "0"),
        # CPU per message does not depend on what else shares the machine, unlike msg/s.
        ("relay CPU per message", r["relay_us"], "us", "all threads"),
        ("relay event-loop thread CPU", r["loop_us"], "us", "per message"),
        ("relay msg/s per CPU core", 1e6 / r["relay_us"] if r["relay_us"] else 0.0, "msg/s",
         "(CPU-bound ceiling)"),
        ("generator CPU per message", r["gen_us"], "us", ""),
    ]
    extra: dict[str, Any] = {"window": WINDOW, "bindings": a.bindings,
                             "statuses": r["statuses"], "elapsed_s": r["elapsed_s"],
                             "runs": runs}
    if spy is not None:
        extra["profile"] = f"{workdir}/relay.folded"
        extra["profile_top"] = _top(f"{workdir}/relay.folded")
    report("sms", rows, extra)
    if spy is not None:
        sys.stdout.write("\nrelay profile, self time (py-spy):\n")
        for name, share in extra["profile_top"]:
            sys.stdout.write(f"  {share:5.1f}%  {name}\n")
    return 0


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
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
