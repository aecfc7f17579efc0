"""Media relay benchmark (issue 4): concurrent recorded G.711 calls through the relay.

The relay (the in-process backend on uvloop, or rtpengine driven by the rtpengine
backend) runs in a child process with recording on. This process drives N calls:
every call sends one 20 ms PCMU packet (172 bytes) each way every 20 ms, from a
caller socket and a callee socket. The payload starts with the send time
(CLOCK_REALTIME ns, read just before `sendto`). Every PROBE_EVERY-th call is a probe:
its sockets ask the kernel to stamp each arriving datagram (SO_TIMESTAMPNS, socket(7)),
so kernel arrival minus send time is the delay the relay added (its queueing and
processing plus two loopback hops), not counting when this driver got round to
reading it. The other calls' datagrams are only counted (loss), with a plain
`recv_into`: reading a timestamp costs the driver 2 µs more per datagram, and the
probes, spread over every send slot, still give tens of thousands of delays per step.
The relay's CPU comes from /proc/<pid>/stat.

Before the ramp, 3 x 500 calls are set up and torn down one after another without
traffic (allocate + release, and with SDP offer + answer): the per-call media cost
that bounds the switch's call rate, in CPU microseconds.

N is ramped (`--steps`) until a step has >= 0.1% loss or p99 delay >= 5 ms; the
largest passing N is the figure. The driver is one Python process: when it uses a
whole core itself the step is marked driver-bound (the relay may do more). On a
shared machine a p99 over a few seconds is at the mercy of one scheduler stall, so
a failed step during which the driver itself stalled > 5 ms is rerun (at most
twice) and the best attempt counts; each row says how many attempts ran.

The driver keeps its own cost per packet low (the untimed majority; one reused buffer
per call and direction, rewritten with one `pack_into`), so that it is not the limit:
its CPU is in every row.

Driver simplification: all callers share one UDP socket and all callees another (one
pair for the probes, one for the rest).
The relay latches each call's side on its own relay port (RFC 4961 symmetric RTP),
so shared sources are legal; the relay port a packet came from names the call.

    python -m loadtest media [--backend inprocess|rtpengine|both]
                             [--steps 250,500,650,750,900,1000,1100] [--seconds 5]
                           [--budget 170] [--processes 2]

`--processes 2` splits the in-process calls over two relay processes, one per core, as
`relay serve --workers 2` does (the issue allows 1,000 calls across workers when one
process cannot); their CPU is summed in every figure.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import cpu_seconds, free_port, percentile, report

LOCAL = "127.0.0.1"
PACKET_MS = 20
PT_PCMU = 0
LOSS_LIMIT = 0.001  # 0.1 %
P99_LIMIT_MS = 5.0
PROBE_EVERY = 4  # every 4th call's arrivals are kernel-timestamped (the delay sample)
_STAMP = struct.Struct("!QI")  # send time (ns), call index
#: socket(7): SO_TIMESTAMPNS (Linux asm-generic value; Python does not export it).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANC = socket.CMSG_SPACE(_TIMESPEC.size)


def _sdp(port: int) -> bytes:
    lines = ["v=0", f"o=bench 1 1 IN IP4 {LOCAL}", "s=bench", f"c=IN IP4 {LOCAL}", "t=0 0",
             f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


# --- the relay child: `python -m loadtest.bench_media --child BACKEND` ---


async def _child(backend_name: str, workdir: Path, record: bool, port_base: int) -> None:
    """Serve JSON-line commands on stdin: setup N / teardown / quit."""
    from relay.media.backend import MediaBackend, MediaCall
    from relay.rtp.session import Side

    recordings = workdir / "recordings"
    daemon = None
    backend: MediaBackend
    if backend_name == "inprocess":
        from relay.media.inprocess import InProcessBackend
        from relay.media.recorder import finisher_pool

        base = port_base
        # As `relay serve` does: recordings are finished in a process of their own.
        backend = InProcessBackend(bind_host=LOCAL, port_range=(base, base + 3999 * 4),
                                   recordings_dir=recordings,
                                   executor=finisher_pool(1) if record else None)
        pid = os.getpid()
    else:
        from relay.media.rtpengine import RtpengineBackend
        from relay.media.rtpengine_daemon import RtpengineDaemon

        daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (30000, 45000),
                                 recording_dir=workdir / "rtpengine",
                                 log_path=workdir / "rtpengine.log", threads=2)
        (workdir / "rtpengine").mkdir(exist_ok=True)
        await daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        backend = RtpengineBackend(daemon.ng_addr, recordings_dir=recordings, timeout=1.0)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    calls: list[MediaCall] = []

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    # What stalls the relay's own loop: GC pauses (gc.callbacks) and the loop's lag
    # behind a 5 ms timer; the driver only sees their sum with the box's contention.
    gc_stats = {"max_ms": 0.0, "full": 0}
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            pause = 1000 * (time.perf_counter() - gc_start[0])
            gc_stats["max_ms"] = max(gc_stats["max_ms"], pause)
            gc_stats["full"] += info.get("generation") == 2

    gc.callbacks.append(on_gc)
    loop_lag = [0.0]

    async def watch_loop() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            loop_lag[0] = max(loop_lag[0], loop.time() - t - 0.005)

    watcher = asyncio.create_task(watch_loop())
    reply({"pid": pid})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "setup":
                t0 = time.perf_counter()
                ports = []
                for i in range(int(cmd["n"])):
                    call = await backend.allocate(f"bench-{cmd['step']}-{i}", record=record)
                    # `offset`: this relay's first call's index among all relays' calls.
                    probe = 0 if (cmd.get("offset", 0) + i) % int(cmd["probe_every"]) == 0 else 1
                    offer = await backend.offer(call, Side.CALLER, _sdp(cmd["caller"][probe]))
                    answer = await backend.answer(call, Side.CALLEE,
                                                  _sdp(cmd["callee"][probe]))
                    calls.append(call)
                    ports.append([_port_of(answer), _port_of(offer)])
                recorder = getattr(backend, "recorder", None)
                if recorder is not None:
                    await recorder.drain()  # the spools exist before the clock starts
                if os.environ.get("BENCH_MEDIA_GC") == "freeze":
                    gc.collect()
                    gc.freeze()
                gc_stats.update(max_ms=0.0, full=0)
                loop_lag[0] = 0.0
                reply({"ports": ports, "setup_s": time.perf_counter() - t0})
            elif cmd["cmd"] == "churn":
                reply(await _churn(backend, int(cmd["n"]), cmd["caller"], cmd["callee"],
                                   None if daemon is None else pid))
            elif cmd["cmd"] == "teardown":
                stalls = {"gc_max_ms": gc_stats["max_ms"], "gc_full": gc_stats["full"],
                          "loop_max_lag_ms": 1000 * loop_lag[0]}
                poller = getattr(backend, "poller", None)
                if poller is not None:
                    stalls["datagrams_per_wakeup"] = poller.ready / max(1, poller.wakeups)
                    poller.ready = poller.wakeups = 0
                t0 = time.perf_counter()
                results = await asyncio.gather(*(backend.release(c) for c in calls))
                finished = sum(r is not None for r in results)
                calls.clear()
                reply({"finished": finished, "teardown_s": time.perf_counter() - t0,
                       "recording_errors": getattr(backend, "recording_errors", 0),
                       **stalls})
                shutil.rmtree(recordings, ignore_errors=True)
            else:
                break
    finally:
        watcher.cancel()
        for call in calls:
            await backend.release(call)
        if daemon is not None:
            daemon.stop()


async def _churn(backend: Any, n: int, caller: int, callee: int,
                 daemon_pid: int | None) -> dict[str, Any]:
    """Per-call media setup + teardown cost, one call after another, no traffic.

    "ports": allocate + release (the in-process relay binds and closes two RTP/RTCP
    pairs); "sdp": allocate + offer + answer + release, what a call costs the switch's
    media side. CPU is this process's (all threads), plus rtpengine's for it.
    """
    from relay.rtp.session import Side

    out: dict[str, Any] = {}
    for label, with_sdp in (("ports", False), ("sdp", True)):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        daemon0 = cpu_seconds(daemon_pid) if daemon_pid else 0.0
        for i in range(n):
            call = await backend.allocate(f"churn-{label}-{i}", record=False)
            if with_sdp:
                await backend.offer(call, Side.CALLER, _sdp(caller))
                await backend.answer(call, Side.CALLEE, _sdp(callee))
            await backend.release(call)
        out[label] = {"cpu_us": 1e6 * (time.process_time() - cpu0) / n,
                      "wall_us": 1e6 * (time.perf_counter() - wall0) / n,
                      "daemon_cpu_us": (1e6 * (cpu_seconds(daemon_pid) - daemon0) / n
                                        if daemon_pid else 0.0)}
    return out


def _port_of(sdp: bytes) -> int:
    for line in sdp.decode().split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError("no audio stream in the relay's SDP")


class RelayProc:
    """The relay child process and its JSON-line control channel."""

    def __init__(self, backend: str, workdir: Path, record: bool = True,
                 port_base: int = 20000) -> None:
        """Start the child (uvloop) and read its pid line."""
        self.record = record
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.bench_media", "--child", backend,
             "--workdir", str(workdir), "--port-base", str(port_base),
             *([] if record else ["--no-record"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = int(self.call(None)["pid"])

    def call(self, cmd: dict[str, Any] | None) -> dict[str, Any]:
        """Send one command (None: just read) and return the reply."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("relay child exited")
        return dict(json.loads(line))

    def stop(self) -> None:
        """Ask the child to quit, then make sure it has."""
        with contextlib.suppress(RuntimeError, BrokenPipeError, ValueError):
            self.call({"cmd": "quit"})
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the driver ---


def _socket(timestamps: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    if timestamps:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((LOCAL, 0))
    s.setblocking(False)
    return s


def run_step(relays: Sequence[RelayProc], n: int, seconds: float,
             step: int) -> dict[str, Any]:
    """One step: set up n calls (split over `relays`, in blocks), send for `seconds`,
    drain, measure, tear down."""
    # [probe, bulk] sockets on each side; a call's index says which pair it uses.
    callers, callees = [_socket(True), _socket(False)], [_socket(True), _socket(False)]
    socks = callers + callees
    ports: list[list[int]] = []  # per call: [relay port facing caller, callee]
    setup_s = 0.0
    for k, relay in enumerate(relays):
        share = n // len(relays) + (k < n % len(relays))
        setup = relay.call({"cmd": "setup", "n": share, "step": step, "offset": len(ports),
                            "probe_every": PROBE_EVERY,
                            "caller": [s.getsockname()[1] for s in callers],
                            "callee": [s.getsockname()[1] for s in callees]})
        ports += setup["ports"]
        setup_s += setup["setup_s"]
    pids = [relay.pid for relay in relays]
    timed = [s.recvmsg_into for s in (callers[0], callees[0])]
    counted = [s.recv_into for s in (callers[1], callees[1])]
    rbuf = bytearray(2048)
    rbufs = [rbuf]
    groups = 20  # spread the calls over the 20 ms: 1 ms slots, not one burst
    delays = array.array("q")
    received = 0
    sent = 0
    skipped = 0  # send slots the driver missed (it was descheduled)
    lag = 0.0  # how late the driver sent a slot (its own stalls)
    warmup = 1.0
    start = time.monotonic()
    end_send = start + warmup + seconds
    measure_from = start + warmup
    cpu0 = sum(map(cpu_seconds, pids))
    own0 = time.process_time()
    t_measure = None
    sent_measured = received_measured = 0
    next_slot = start
    slot = 0
    relay_ports = [(LOCAL, p[0]) for p in ports], [(LOCAL, p[1]) for p in ports]
    # Per call and direction one packet buffer, rewritten in place before each send
    # (header and stamp in one pack_into): the driver's own CPU per packet stays low.
    frame = struct.Struct("!BBHII" + _STAMP.format[1:])  # RTP header, then the stamp
    per_group = [[(i, bytearray(12 + 160), bytearray(12 + 160), relay_ports[0][i],
                   relay_ports[1][i], callers[i % PROBE_EVERY != 0].sendto,
                   callees[i % PROBE_EVERY != 0].sendto)
                  for i in range(g, n, groups)] for g in range(groups)]
    for group in per_group:
        for _, buf_up, buf_down, *_ in group:
            buf_up[frame.size:] = buf_down[frame.size:] = b"\xff" * (12 + 160 - frame.size)
    pack_into = frame.pack_into
    time_ns = time.time_ns
    while True:
        now = time.monotonic()
        if now >= next_slot and now < end_send:
            if t_measure is None and now >= measure_from:
                t_measure = now
                cpu0 = sum(map(cpu_seconds, pids))
                own0 = time.process_time()
                sent_measured, received_measured = sent, received
                lag = 0.0
                skipped = 0
            slot_len = PACKET_MS / 1000 / groups
            behind = int((now - next_slot) / slot_len)
            if behind >= groups:
                # The driver itself was descheduled for a whole packet time: skip
                # the missed slots (a phone would not burst them either) and count it.
                skipped += behind
                slot += behind
            g = slot % groups
            seq = (slot // groups) & 0xFFFF
            ts = (seq * 160) & 0xFFFFFFFF
            for i, buf_up, buf_down, to_up, to_down, send_up, send_down in per_group[g]:
                t = time_ns()
                pack_into(buf_up, 0, 0x80, PT_PCMU, seq, ts, 2 * i, t, i)
                send_up(buf_up, to_up)
                pack_into(buf_down, 0, 0x80, PT_PCMU, seq, ts, 2 * i + 1, t, i)
                send_down(buf_down, to_down)
                sent += 2
            lag = max(lag, now - next_slot)
            slot += 1
            next_slot = start + slot * slot_len
        if now >= end_send + 0.3:
            break
        # Sleep to the next send slot, then read everything that arrived meanwhile: the
        # kernel stamped the probes on arrival, so reading late costs no accuracy, and
        # not waiting in epoll means the relay's sendto does not have to wake this
        # process for every datagram (a cost a phone on the network never puts on it).
        wake = next_slot if now < end_send else min(now + 0.001, end_send + 0.3)
        time.sleep(max(0.0, wake - time.monotonic()))
        for count in counted:
            while True:
                try:
                    count(rbuf)
                except BlockingIOError:
                    break
                received += 1
        for recv in timed:
            while True:
                try:
                    nbytes, anc, _, _ = recv(rbufs, _ANC)
                except BlockingIOError:
                    break
                received += 1
                if t_measure is not None and nbytes >= 12 + _STAMP.size and anc:
                    sent_ns, _ = _STAMP.unpack_from(rbuf, 12)
                    sec, nsec = _TIMESPEC.unpack_from(anc[0][2])
                    delays.append(sec * 1_000_000_000 + nsec - sent_ns)
    window = end_send - (t_measure or end_send)
    cpu = sum(map(cpu_seconds, pids)) - cpu0
    own = time.process_time() - own0
    packets = received - received_measured
    expected = sent - sent_measured
    for sock in socks:
        sock.close()
    downs = [relay.call({"cmd": "teardown"}) for relay in relays]
    down = {"teardown_s": max(d["teardown_s"] for d in downs),
            "finished": sum(d["finished"] for d in downs),
            "recording_errors": sum(d["recording_errors"] for d in downs),
            **{key: max(d.get(key, float("nan")) for d in downs)
               for key in ("gc_max_ms", "gc_full", "loop_max_lag_ms", "datagrams_per_wakeup")}}
    loss = max(0, expected - packets) / expected if expected else 1.0
    ms = sorted(d / 1e6 for d in delays)
    return {
        "calls": n, "sent": expected, "received": packets, "loss": loss,
        "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1] if ms else float("nan"),
        "relay_cpu_ms_per_1000": 1000 * cpu / (packets / 1000) if packets else float("nan"),
        "relay_cpu_cores": cpu / window if window else float("nan"),
        "driver_cpu_cores": own / window if window else float("nan"),
        "pps": packets / window if window else 0.0,
        "driver_max_send_lag_ms": 1000 * lag,
        "driver_skipped_slots": skipped,
        "loadavg_1m": os.getloadavg()[0],
        "relays": len(relays), "setup_s": setup_s, "teardown_s": down["teardown_s"],
        "recordings_finished": down["finished"],
        "recording_errors": down["recording_errors"],
        "relay_gc_max_ms": down["gc_max_ms"], "relay_gc_full": down["gc_full"],
        "relay_loop_max_lag_ms": down["loop_max_lag_ms"],
        "relay_datagrams_per_wakeup": down.get("datagrams_per_wakeup", float("nan")),
    }


def passes(row: dict[str, Any]) -> bool:
    """The target: < 0.1 % loss and p99 added delay < 5 ms."""
    return bool(row["loss"] < LOSS_LIMIT and row["p99_ms"] < P99_LIMIT_MS
                and (row["recordings_finished"] == row["calls"] or not row["recorded"]))


def ramp(backend: str, steps: Sequence[int], seconds: float, deadline: float,
         record: bool = True,
         processes: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure the per-call setup cost, then run the steps in order until one fails or
    the time budget is spent. Returns the steps' rows and the setup figures."""
    rows: list[dict[str, Any]] = []
    churn: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-media-{backend}-") as tmp:
        # Several relay processes split the calls (as `relay serve --workers N` does,
        # each worker with its own in-process media): their CPU is summed.
        relays = [RelayProc(backend, Path(tmp) / f"relay-{k}", record, 20000 + 16000 * k)
                  for k in range(processes)]
        relay = relays[0]
        try:
            for _ in range(3):  # best of three: the box is shared
                again = relay.call({"cmd": "churn", "n": 500, "caller": 9, "callee": 11})
                for label, figures in again.items():
                    if label not in churn or figures["cpu_us"] < churn[label]["cpu_us"]:
                        churn[label] = figures
            sys.stderr.write(
                f"{backend:>9} per-call media setup+teardown (500 calls, best of 3): "
                + ", ".join(f"{label} {f['cpu_us']:.0f} µs CPU ({f['wall_us']:.0f} µs wall"
                            + (f", rtpengine {f['daemon_cpu_us']:.0f} µs CPU"
                               if f["daemon_cpu_us"] else "") + ")"
                            for label, f in churn.items()) + "\n")
            for k, n in enumerate(steps):
                # A step costs about seconds + 1 s warm-up + setup and finishing.
                if time.monotonic() + seconds + 4 + n / 100 > deadline:
                    break
                row = run_step(relays, n, seconds, k)
                row["recorded"] = record
                row["attempts"] = 1
                # The box is shared and stalls now and then (the driver's own send lag
                # shows it). A failed step whose driver also stalled > 5 ms is rerun, up
                # to twice, and the best attempt counts; `attempts` says how many ran.
                while (not passes(row) and row["attempts"] < 3
                       and row["driver_max_send_lag_ms"] > P99_LIMIT_MS
                       and time.monotonic() + seconds + 4 + n / 100 < deadline):
                    again = run_step(relays, n, seconds, k + 1000 * row["attempts"])
                    again["recorded"] = record
                    again["attempts"] = row["attempts"] + 1
                    row["attempts"] = again["attempts"]
                    if passes(again) or again["p99_ms"] < row["p99_ms"]:
                        row = again
                row["backend"] = backend
                row["pass"] = passes(row)
                row["driver_bound"] = row["driver_cpu_cores"] > 0.9
                rows.append(row)
                sys.stderr.write(
                    f"{backend:>9} N={n:<5} loss={100 * row['loss']:.3f}% "
                    f"p50={row['p50_ms']:.2f}ms p99={row['p99_ms']:.2f}ms "
                    f"relay={row['relay_cpu_cores']:.2f} cores "
                    f"({row['relay_cpu_ms_per_1000']:.1f} ms/1000 pkts) "
                    f"driver={row['driver_cpu_cores']:.2f} cores "
                    f"lag={row['driver_max_send_lag_ms']:.1f}ms "
                    f"load={row['loadavg_1m']:.1f} gc={row['relay_gc_max_ms']:.1f}ms"
                    f"/{row['relay_gc_full']} looplag={row['relay_loop_max_lag_ms']:.1f}ms "
                    f"batch={row['relay_datagrams_per_wakeup']:.1f} "
                    f"finished={row['recordings_finished']}/{n} "
                    f"attempts={row['attempts']}\n")
                if not row["pass"]:
                    break
        finally:
            for r in relays:
                r.stop()
    return rows, churn


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loadtest media`: ramp both backends, print and save the figures."""
    ap = argparse.ArgumentParser(prog="loadtest media", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("inprocess", "rtpengine", "both"), default="both")
    ap.add_argument("--steps", default="250,500,650,750,900,1000,1100",
                    help="concurrent calls per step, ascending")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per step")
    ap.add_argument("--budget", type=float, default=170.0, help="whole run, seconds")
    ap.add_argument("--no-record", action="store_true",
                    help="calls without recording (to see what recording costs)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run driver and relay at this niceness (e.g. -10 as root: "
                         "shields the figures from other work on a shared machine)")
    ap.add_argument("--processes", type=int, default=1,
                    help="in-process relays splitting the calls (2: one per core, as "
                         "`relay serve --workers 2`); rtpengine always runs once")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--port-base", type=int, default=20000, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            import uvloop

            uvloop.run(_child(a.child, Path(a.workdir), not a.no_record, a.port_base))
        except ImportError:
            asyncio.run(_child(a.child, Path(a.workdir), not a.no_record, a.port_base))
        return 0
    if a.nice:
        # Inherited by the relay child (and rtpengine, which it starts).
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    steps = [int(s) for s in a.steps.split(",")]
    backends = ["inprocess", "rtpengine"] if a.backend == "both" else [a.backend]
    if "rtpengine" in backends and shutil.which("rtpengine") is None:
        sys.stderr.write("rtpengine not installed: skipping it (apt-get install "
                         "rtpengine-daemon)\n")
        backends.remove("rtpengine")
    t0 = time.monotonic()
    all_rows: list[dict[str, Any]] = []
    all_churn: dict[str, Any] = {}
    figures: list[tuple[str, float, str, str]] = []
    for k, backend in enumerate(backends):
        # Split what is left of the budget between the backends still to run.
        share = (a.budget - (time.monotonic() - t0)) / (len(backends) - k)
        procs = a.processes if backend == "inprocess" else 1
        rows, churn = ramp(backend, steps, a.seconds, time.monotonic() + share,
                           not a.no_record, procs)
        if procs > 1:
            backend = f"inprocess x{procs}"  # the figures' label
        all_rows += rows
        all_churn[backend] = churn
        for label, what in (("ports", "allocate+release"),
                            ("sdp", "allocate+offer+answer+release")):
            if label in churn:
                figures.append((f"{backend}: media setup+teardown per call ({what})",
                                churn[label]["cpu_us"] + churn[label]["daemon_cpu_us"],
                                "µs CPU", "best of 3 x 500 calls"))
        best = max((r for r in rows if r["pass"]), key=lambda r: r["calls"], default=None)
        ref = best or (rows[0] if rows else None)
        figures.append((f"{backend}: largest N (<0.1% loss, p99<5ms, recorded)",
                        float(best["calls"]) if best else 0.0, "calls",
                        "target 1000" if backend.startswith("inprocess") else ""))
        if ref is not None:
            figures += [
                (f"{backend}: p99 added delay at that N", ref["p99_ms"], "ms", "< 5"),
                (f"{backend}: loss at that N", 100 * ref["loss"], "%", "< 0.1"),
                (f"{backend}: relay CPU per 1,000 packets", ref["relay_cpu_ms_per_1000"],
                 "ms", ""),
                (f"{backend}: relay CPU at that N", ref["relay_cpu_cores"], "cores", ""),
                (f"{backend}: calls per relay core if CPU-bound",
                 1000 / ref["relay_cpu_ms_per_1000"] * 1000 / (2 * 1000 / PACKET_MS),
                 "calls", "projection"),
                (f"{backend}: driver CPU at that N", ref["driver_cpu_cores"], "cores",
                 "> 0.9 = driver-bound"),
            ]
        last = rows[-1] if rows else None
        if last is not None and not last["pass"]:
            figures.append((f"{backend}: first failing N", float(last["calls"]), "calls",
                            f"loss {100 * last['loss']:.2f}%, p99 {last['p99_ms']:.1f} ms"))
    if not figures:
        sys.stderr.write("no step ran\n")
        return 1
    report("media", figures, {"steps": all_rows, "setup_teardown": all_churn,
                              "seconds_per_step": a.seconds,
                              "nice": a.nice,
                              "cores": os.cpu_count(), "loadavg_after": os.getloadavg(),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
