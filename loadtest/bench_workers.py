"""Recorded calls/s with 1 and 2 relay workers, against Kamailio alone (the anchor), in
one run, all on one Redis (issue 16).

    python -m loadtest workers [--rates 200,300,...] [--step 5] [--skip-anchor]

Three paths, one after the other, each with a SIPp caller and a SIPp callee on
loopback, 1 s calls with SDP (no RTP), the binding recorded:

* anchor: SIPp -> Kamailio (deploy/kamailio/relay-dispatcher.cfg, dispatching straight
  to the callee) -> SIPp: what the balancer alone carries on this machine;
* 1 worker: SIPp -> `relay serve` (one process, no balancer) -> SIPp;
* 2 workers: SIPp -> `relay serve --workers 2` (Kamailio + two relay processes) -> SIPp.

Figure per path: the highest rate whose step completes with < 0.1% of its calls failed
or shed (the ladder stops at the first step that fails). A 503 (a worker's overload
guard, or Kamailio's "No Relay Node Available" when every worker sheds) is ACKed and
counted as shed, apart from calls that failed outright. Every step also reports the
whole machine's CPU per completed call (/proc/stat: every process, the kernel's too),
which says what the two cores can carry whatever the split between processes. The
callers use sipp/uac_routed_bench.xml (ACK and BYE along the Record-Route), so in-dialog
requests cross Kamailio as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .bench_sip import SCENARIOS, A, B, X, _callee, _counts, _post, _sipp, _stop
from .common import RelayChild, free_port, report, wait_listening

# tests/flows/sipp/uac_routed.xml with its 180/183 optional="true" rather than
# "global": a 180 that Kamailio relays after the 200 (its processes race) would send a
# "global" call back to wait for a 200 again. Here it is ignored (-abortunexp off).
BENCH_UAC = Path(__file__).resolve().parent / "sipp" / "uac_routed_bench.xml"


def run_step(work: Path, target: int, rate: int, calls: int) -> dict[str, Any]:
    """One SIPp caller run (BENCH_UAC, 1 s calls); SIPp is stopped when it
    overruns the step by 20 s, and the calls it had not finished by then count as
    failed (`unfinished`: on this machine SIPp sometimes leaves a call or two in its
    pause for good, whatever it calls)."""
    name = f"uac-{target}-{rate}-{calls}"
    stat = work / f"{name}.csv"
    args = [_sipp(), "-sf", str(BENCH_UAC), f"127.0.0.1:{target}",
            "-default_behaviors", "all,-abortunexp",
            "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
            "-mp", str(free_port(socket.SOCK_DGRAM)), "-s", X, "-key", "caller", A,
            "-m", str(calls), "-r", str(rate), "-d", "1000", "-l", str(rate * 4),
            "-nostdin", "-max_recv_loops", "5000", "-timeout", f"{calls // rate + 60}s",
            "-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_counts"]
    started = time.monotonic()
    busy0 = machine_busy()
    with open(work / f"{name}.out", "wb") as f:
        proc = subprocess.Popen(args, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout=calls / rate + 20)
        except subprocess.TimeoutExpired:
            _stop(proc)
    busy = machine_busy() - busy0
    ok, failed = _counts(stat)
    # SIPp counts a shed call (503 ACKed) as successful: its 503 counter splits them.
    shed = _received(work / f"{BENCH_UAC.stem}_{proc.pid}_counts.csv", "503")
    done = ok - shed
    return {"rate": rate, "calls": calls, "ok": done, "shed_503": shed,
            "failed": max(failed, calls - ok), "unfinished": max(0, calls - ok - failed),
            "rc": proc.returncode, "elapsed_s": time.monotonic() - started,
            "machine_cpu_ms_per_call": busy * 1000.0 / max(1, done),
            "load1": os.getloadavg()[0]}


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (proc(5), /proc/stat "cpu")."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _received(counts_csv: Path, code: str) -> int:
    """How many `code` responses SIPp's -trace_counts file says arrived (last row)."""
    try:
        rows = [r.split(";") for r in counts_csv.read_text().splitlines() if r]
    except OSError:
        return 0
    if len(rows) < 2:
        return 0
    return sum(int(v) for name, v in zip(rows[0], rows[-1], strict=False)
               if name.endswith(f"_{code}_Recv") and v.isdigit())


def _ladder(work: Path, target: int, rates: list[int], step: float,
            label: str) -> tuple[int, list[dict[str, Any]]]:
    best, steps = 0, []
    for rate in rates:
        calls = max(50, int(rate * step))
        r = run_step(work, target, rate, calls)
        steps.append(r)
        sys.stdout.write(f"  {label}: {rate}/s -> {r['ok']} completed, {r['shed_503']} shed "
                         f"with 503, {r['failed']} failed ({r['unfinished']} of them "
                         f"unfinished) in {r['elapsed_s']:.1f}s; machine CPU "
                         f"{r['machine_cpu_ms_per_call']:.2f} ms per completed call "
                         f"(load {r['load1']:.2f})\n")
        sys.stdout.flush()
        if (r["ok"] + r["shed_503"] + r["failed"] < calls
                or (r["failed"] + r["shed_503"]) * 1000 >= calls):
            break
        best = rate
        time.sleep(2)
    return best, steps


def _redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, "redis-server")
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return proc, f"redis://127.0.0.1:{port}/0"


class _WorkerSet:
    """`relay serve --workers N` (the parent, Kamailio and the workers)."""

    def __init__(self, store: str, work: Path, n: int, extra: list[str]) -> None:
        self.http = free_port()
        self.sip = free_port(socket.SOCK_DGRAM)
        self.log = open(work / f"workers-{n}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--workers", str(n), "--store", store,
             "--http", f"127.0.0.1:{self.http}", "--sip", f"127.0.0.1:{self.sip}",
             "--log-level", "WARNING", *extra], cwd=work, stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                    if all(w["health"] for w in json.loads(r.read())["workers"]):
                        return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("relay serve --workers exited") from None
            time.sleep(0.3)
        raise RuntimeError("relay serve --workers did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _routed_callee(work: Path, port: int) -> subprocess.Popen[bytes]:
    """The callee behind Kamailio alone: its replies echo the Record-Route."""
    return subprocess.Popen(
        [_sipp(), "-sf", str(SCENARIOS / "uas_routed.xml"), "-i", "127.0.0.1", "-p",
         str(port), "-mp", str(free_port(socket.SOCK_DGRAM)), "-key", "callee", B,
         "-nostdin", "-max_recv_loops", "5000"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)


def _kamailio_alone(work: Path, callee_port: int) -> tuple[subprocess.Popen[bytes], int]:
    from relay.cluster import kamailio
    from relay.cluster.supervisor import keepalive

    exe, mpath = kamailio.find_kamailio()
    rundir = work / "kamailio-anchor"
    rundir.mkdir(exist_ok=True)
    ds = rundir / "dispatcher.list"
    kamailio.write_list(ds, [("127.0.0.1", callee_port)])
    port = free_port(socket.SOCK_DGRAM)
    from relay.cluster.supervisor import die_with_parent

    proc = subprocess.Popen(
        # No probing: SIPp's callee scenario does not answer OPTIONS.
        kamailio.command(exe, mpath, rundir, ("127.0.0.1", port), ds, ["127.0.0.0/8"],
                         ping_interval=0),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=die_with_parent(os.getpid(), int(signal.SIGTERM)))  # never orphaned
    deadline = time.monotonic() + 30
    while not keepalive(("127.0.0.1", port)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("kamailio did not start")
        time.sleep(0.2)
    return proc, port


def _bind(base: str) -> None:
    _post(base, "/v1/numbers", {"numbers": [X]})
    _post(base, "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "x": X, "ttl": 86400,
                                 "record": True})
    time.sleep(1.5)  # every worker follows the binding


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest workers")
    ap.add_argument("--rates", default="200,300,400,500,600,700,800,1000,1200,1500")
    ap.add_argument("--step", type=float, default=5.0, help="seconds of calls per step")
    ap.add_argument("--skip-anchor", action="store_true")
    a = ap.parse_args(argv)
    rates = [int(r) for r in a.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    callee_port = free_port(socket.SOCK_DGRAM)
    redis, url = _redis(work)
    extra = ["--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
             "--recordings", str(work / "rec")]
    steps: dict[str, Any] = {}
    best: dict[str, int] = {}
    try:
        if not a.skip_anchor:
            sys.stdout.write("anchor: Kamailio alone (SIPp -> Kamailio -> SIPp):\n")
            routed = _routed_callee(work, callee_port)
            kam, kport = _kamailio_alone(work, callee_port)
            try:
                best["anchor"], steps["anchor"] = _ladder(work, kport, rates, a.step,
                                                          "kamailio")
            finally:
                os.killpg(kam.pid, signal.SIGTERM)
                kam.wait(timeout=30)
                _stop(routed)
            time.sleep(3)
        callee = _callee(work, callee_port)
        sys.stdout.write("1 worker (relay serve, recorded, Redis):\n")
        one = RelayChild(url, str(work), [*extra, "--media-ports", "30000-39999"])
        try:
            _bind(one.base)
            best["1"], steps["1"] = _ladder(work, one.sip, rates, a.step, "1 worker")
        finally:
            one.stop()
        time.sleep(35)  # the last step's transactions end (Timer D) before the next set
        sys.stdout.write("2 workers (relay serve --workers 2 behind Kamailio):\n")
        two = _WorkerSet(url, work, 2, [*extra, "--media-ports", "40000-49999"])
        try:
            best["2"], steps["2"] = _ladder(work, two.sip, rates, a.step, "2 workers")
        finally:
            two.stop()
    finally:
        if "callee" in locals():
            _stop(callee)
        _stop(redis)
    load = os.getloadavg()[0]
    rows = [("max calls/s, Kamailio alone (<0.1% failed)", float(best.get("anchor", 0)),
             "calls/s", "anchor"),
            ("max calls/s, 1 worker, recorded (<0.1% failed)", float(best.get("1", 0)),
             "calls/s", ""),
            ("max calls/s, 2 workers behind Kamailio, recorded (<0.1% failed)",
             float(best.get("2", 0)), "calls/s", "target 1500")]
    if best.get("1"):
        rows.append(("ratio 2 workers / 1 worker", best.get("2", 0) / best["1"], "x", ""))
    report("workers", rows, {"steps": steps, "load1_end": load, "rates": rates})
    return 0
