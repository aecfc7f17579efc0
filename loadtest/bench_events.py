"""Events benchmark: what the outbox sender delivers, and what events cost a call.

    python -m loadtest events [--events 20000] [--concurrency 64] [--rate 300]
                              [--seconds 5] [--rates 300,500,700,900,1100] [--step 3]

1. Sender throughput. An SQLite outbox filled with `--events` call events (four keys'
   worth per call, as a call makes them) is drained by `OutboxSender` into a receiver in
   its own process on loopback (aiohttp, answers 200). Anchor in the same run: the same
   client posting the same bodies to the same receiver with no outbox (no reads, no
   deletes), the ceiling for any sender on this machine.
2. Cost per call. SIPp calls (1 s, signalling only, unrecorded bindings) through `relay
   serve` with `[events]` off and on (the webhook = the same receiver): the relay's CPU
   per call (all its threads, so the record writer's outbox inserts and the sender's
   POSTs count) at `--rate`, and the highest rate with < 0.1% failed calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench_sip import _callee, max_rate, run_step
from .common import RelayChild, free_port, report, wait_listening
from .common import post_json as _post
from .common import stop_proc as _stop

X, A, B = "+8617055556666", "+8613811112222", "+8613933334444"


def _receiver_main(port: int) -> None:
    """The receiver child: 200 to every POST, counting them (GET /count)."""
    from aiohttp import web

    count = [0]

    async def take(request: web.Request) -> web.Response:
        await request.read()
        count[0] += 1
        return web.Response(status=200)

    async def get_count(request: web.Request) -> web.Response:
        return web.Response(text=str(count[0]))

    app = web.Application()
    app.router.add_post("/events", take)
    app.router.add_get("/count", get_count)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Receiver:
    """The receiver in a child process (so it does not share this process's loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "loadtest.bench_events",
                                      "--receiver", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, "receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def stop(self) -> None:
        _stop(self.proc)  # type: ignore[arg-type]


async def _throughput(work: Path, url: str, n: int, concurrency: int) -> dict[str, float]:
    from relay.events.model import make_event
    from relay.events.outbox import SqliteOutbox
    from relay.events.sender import OutboxSender
    from relay.io.webhook import RetryPolicy, WebhookClient
    from relay.records import SqliteRecordStore

    db = str(work / "outbox.db")
    store = SqliteRecordStore(db)
    await store.open()
    body = {"call_id": "", "x": X, "binding": "3af6bcae12219fa1", "out_id": "order-1",
            "direction": "a_to_b", "caller": "+86138****2222", "callee": "+86139****4444"}
    types = ("call.ringing", "call.answered", "call.ended", "recording.ready")
    events = [make_event(types[i % 4], f"call-{i // 4}", time.time(),
                         {**body, "call_id": f"call-{i // 4}"}) for i in range(n)]
    for i in range(0, n, 5000):
        await store.put_batch({}, events[i:i + 5000])
    await store.close()

    client = WebhookClient(url, "bench-secret", concurrency=concurrency)
    await client.start()
    # Anchor: the same POSTs, no outbox.
    started = time.perf_counter()
    sem = asyncio.Semaphore(concurrency)

    async def post(e: Any) -> None:
        async with sem:
            await client.post(e.id, e.body)

    await asyncio.gather(*(post(e) for e in events[: n // 2]))
    bare = (n // 2) / (time.perf_counter() - started)
    started = time.perf_counter()  # twice, the better counts: the first warms up
    await asyncio.gather(*(post(e) for e in events[n // 2:]))
    bare = max(bare, (n - n // 2) / (time.perf_counter() - started))

    box = SqliteOutbox(db)
    await box.open()
    sender = OutboxSender(box, client, RetryPolicy(final_4xx=False), batch=concurrency * 4)
    started = time.perf_counter()
    cpu0 = time.process_time()
    while True:
        await sender.round(time.time())
        if await box.size() == 0:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    await box.close()
    await client.close()
    return {"sender_events_per_s": n / elapsed, "bare_posts_per_s": bare,
            "sender_cpu_us_per_event": cpu / n * 1e6, "drain_s": elapsed}


def _calls(work: Path, receiver: Receiver, rate: int, seconds: float, rates: list[int],
           step: float, events: bool) -> dict[str, Any]:
    tag = "on" if events else "off"
    sub = work / tag
    sub.mkdir()
    extra: list[str] = []
    if events:
        conf = sub / "relay.toml"
        conf.write_text(f'[events]\nurl = "{receiver.url}"\nsecret = "bench-secret"\n')
        extra = ["--config", str(conf)]
    callee_port = free_port(socket.SOCK_DGRAM)
    relay = RelayChild(f"sqlite:///{sub}/relay.db", str(sub), [
        "--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
        "--media-ports", "30000-39999", "--recordings", str(sub / "rec"), *extra])
    callee = _callee(sub, callee_port)
    try:
        _post(relay.base, "/v1/numbers", {"numbers": [X]})
        # Unrecorded on purpose (not the default): the figure isolates this feature's
        # cost; recording's own is measured by `loadtest sip` (README says so beside it).
        _post(relay.base, "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "x": X,
                                           "ttl": 86400, "record": False})
        time.sleep(0.5)
        fixed = run_step(sub, relay.sip, rate, int(rate * seconds), pid=relay.proc.pid)
        time.sleep(3)
        sys.stdout.write(f"max rate, events {tag}:\n")
        best, steps = max_rate(sub, relay.sip, rates, step, relay.proc.pid)
    finally:
        _stop(callee)
        relay.stop()
    return {"fixed": fixed, "max_rate": best, "steps": steps}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest events")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=int, default=300, help="calls/s for the CPU figure")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rates", default="300,500,700,900,1100")
    ap.add_argument("--step", type=float, default=3.0)
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    receiver = Receiver()
    load0 = os.getloadavg()
    try:
        tp = asyncio.run(_throughput(work, receiver.url, a.events, a.concurrency))
        sys.stdout.write(f"sender: {tp['sender_events_per_s']:,.0f} events/s "
                         f"(bare POSTs {tp['bare_posts_per_s']:,.0f}/s)\n")
        rates = [int(r) for r in a.rates.split(",")]
        off = _calls(work, receiver, a.rate, a.seconds, rates, a.step, events=False)
        time.sleep(2)
        on = _calls(work, receiver, a.rate, a.seconds, rates, a.step, events=True)
    finally:
        receiver.stop()
    load1 = os.getloadavg()
    cpu_off = off["fixed"]["relay_cpu_ms_per_call"]
    cpu_on = on["fixed"]["relay_cpu_ms_per_call"]
    rows = [
        ("sender: events/s delivered (SQLite outbox)", tp["sender_events_per_s"], "events/s",
         ""),
        ("anchor: bare POSTs/s, same client and receiver", tp["bare_posts_per_s"], "posts/s",
         "anchor"),
        ("sender CPU per event (this process)", tp["sender_cpu_us_per_event"], "us", ""),
        (f"relay CPU per call @{a.rate}/s, events off", cpu_off, "ms", "anchor"),
        (f"relay CPU per call @{a.rate}/s, events on", cpu_on, "ms", ""),
        ("events' cost per call", cpu_on - cpu_off, "ms", ""),
        ("failed calls @fixed rate, events off", float(off["fixed"]["failed"]), "calls", "0"),
        ("failed calls @fixed rate, events on", float(on["fixed"]["failed"]), "calls", "0"),
        ("max calls/s (<0.1% failed), events off", float(off["max_rate"]), "calls/s",
         "anchor"),
        ("max calls/s (<0.1% failed), events on", float(on["max_rate"]), "calls/s", ""),
        ("load average (1 min) before", load0[0], "", ""),
        ("load average (1 min) after", load1[0], "", ""),
    ]
    report("events", rows, {"throughput": tp, "off": off, "on": on,
                            "loadavg_before": load0, "loadavg_after": load1})
    sys.stdout.write(f"load average before {load0}, after {load1}\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        _receiver_main(int(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
