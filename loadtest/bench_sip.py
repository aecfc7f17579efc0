"""SIP signalling benchmark: SIPp caller -> relay -> SIPp callee, against SIPp -> SIPp.

Both paths run in the same process of this benchmark, one after the other, on the same
machine, so the direct figures are the anchor for the relay's. Calls are 1 s long and
carry SDP but no RTP (signalling only; the relay still allocates media ports per call).
The binding is recorded, as bindings are by default: every call spools and finishes
its (silent) recording. `--unrecorded` adds a labelled extra ladder with recording off.

    python -m loadtest sip [--rates 100,200,...,1000,1100,1200] [--step 5]
                           [--latency-rate 200] [--latency-calls 2000] [--profile 10]
                           [--overload-step 10] [--unrecorded] [--relay-arg ARG ...]

Figures: the highest rate (calls/s) at which a step completes with < 0.1% failed calls;
then an overload step at twice that rate (SIPp accepts and ACKs 503s there), reporting
the goodput (calls completed per second) and the INVITEs shed with 503; setup latency
(INVITE -> 200) p50/p99 at `--latency-rate` with the ratio and the difference to
direct; the top frames of a py-spy profile of the relay under that load. Each figure's
1-minute load average is recorded beside it (the machine is shared).
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import TRACE_BLOCK as _BLOCK
from .common import RelayChild, cpu_seconds, free_port, percentile, report
from .common import post_json as _post
from .common import sipp_exe as _sipp
from .common import stop_proc as _stop

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "flows" / "sipp"
X, A, B = "+8617055556666", "+8613811112222", "+8613933334444"


def _callee(work: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_sipp(), "-sf", str(SCENARIOS / "uas.xml"), "-i", "127.0.0.1", "-p", str(port),
         "-mp", str(free_port(socket.SOCK_DGRAM)), "-key", "callee", B, "-nostdin",
         "-max_recv_loops", "5000"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)


def _metric(base: str, name: str) -> float:
    """One counter of the relay's /metrics (0 when absent)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def run_step(work: Path, target: int, rate: int, calls: int, *, rtt: bool = False,
             pid: int | None = None, scenario: str = "uac.xml") -> dict[str, Any]:
    """One SIPp caller run: `calls` calls at `rate`/s to 127.0.0.1:`target`; with the
    relay's `pid`, also the relay's CPU per call (ms) over the run."""
    name = f"uac-{target}-{rate}-{calls}"
    out = work / f"{name}.out"
    args = [_sipp(), "-sf", str(SCENARIOS / scenario), f"127.0.0.1:{target}",
            "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
            "-mp", str(free_port(socket.SOCK_DGRAM)), "-s", X, "-key", "caller", A,
            "-m", str(calls), "-r", str(rate), "-d", "1000", "-l", str(rate * 4),
            "-nostdin", "-max_recv_loops", "5000", "-timeout", f"{calls // rate + 60}s",
            "-trace_stat", "-stf", str(work / f"{name}.csv"), "-fd", "3600"]
    if rtt:
        args += ["-trace_msg", "-message_file", str(work / f"{name}.msg")]
    started = time.monotonic()
    cpu0 = cpu_seconds(pid) if pid is not None else 0.0
    with open(out, "wb") as f:
        proc = subprocess.run(args, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False)
    elapsed = time.monotonic() - started
    ok, failed = _counts(work / f"{name}.csv")
    result: dict[str, Any] = {"rate": rate, "calls": calls, "ok": ok, "failed": failed,
                              "rc": proc.returncode, "elapsed_s": elapsed,
                              "load1": os.getloadavg()[0]}
    if pid is not None:
        result["relay_cpu_ms_per_call"] = (cpu_seconds(pid) - cpu0) * 1000.0 / max(1, ok)
    if rtt:
        result["rtt_ms"] = setup_times(work / f"{name}.msg")
    return result


def _counts(stat_csv: Path) -> tuple[int, int]:
    """Successful and failed calls from SIPp's -trace_stat file (last row, cumulative)."""
    try:
        rows = list(csv.reader(stat_csv.read_text().splitlines(), delimiter=";"))
    except OSError:
        return 0, 0
    if len(rows) < 2:
        return 0, 0
    head, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(head)}
    return int(last[col["SuccessfulCall(C)"]]), int(last[col["FailedCall(C)"]])


def setup_times(trace: Path) -> list[float]:
    """INVITE sent -> 200 received per call (ms, microsecond resolution), from the
    caller's -trace_msg file (SIPp's own response times are whole milliseconds)."""
    from datetime import datetime

    sent: dict[str, float] = {}
    out: list[float] = []
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return out
    for m in _BLOCK.finditer(text):
        stamp, way, first, rest = m.groups()
        cid = re.search(r"^Call-ID:\s*(\S+)", rest, re.M | re.I)
        if cid is None:
            continue
        t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        key = cid.group(1)
        if way.endswith("sent") and first.startswith("INVITE ") and key not in sent:
            sent[key] = t
        elif (way.endswith("received") and first.startswith("SIP/2.0 200")
              and re.search(r"^CSeq:\s*\d+ INVITE", rest, re.M | re.I) and key in sent):
            out.append((t - sent.pop(key)) * 1000.0)
    trace.unlink()
    return out


def max_rate(work: Path, target: int, rates: list[int], step: float,
             pid: int | None = None, base: str | None = None) -> tuple[int, list[Any]]:
    """The highest rate whose step has < 0.1% failures (stops at the first that fails).

    With the relay's API `base`, each step also says how many INVITEs its overload
    control shed (SIPp counts those calls as failed here)."""
    best = 0
    steps = []
    for rate in rates:
        calls = max(50, int(rate * step))
        shed0 = _metric(base, "relay_sip_overload_total") if base else 0.0
        r = run_step(work, target, rate, calls, pid=pid)
        if base:
            r["shed_503"] = int(_metric(base, "relay_sip_overload_total") - shed0)
        steps.append(r)
        cpu = (f", relay {r['relay_cpu_ms_per_call']:.2f} ms CPU/call"
               if "relay_cpu_ms_per_call" in r else "")
        if "shed_503" in r:
            cpu += f", {r['shed_503']} shed"
        sys.stdout.write(f"  {target}: {rate}/s -> {r['ok']} ok, {r['failed']} failed "
                         f"in {r['elapsed_s']:.1f}s{cpu} (load {r['load1']:.2f})\n")
        sys.stdout.flush()
        if r["ok"] + r["failed"] < calls or r["failed"] * 1000 >= calls:  # not < 0.1%
            break
        best = rate
        time.sleep(2)
    return best, steps


def overload_step(work: Path, relay: RelayChild, rate: int, seconds: float) -> dict[str, Any]:
    """`rate`/s offered for `seconds` with a caller that ACKs 503s: goodput and sheds.

    SIPp counts a shed call as successful (it ended as the scenario allows), so the
    relay's own 503 counter splits the two.
    """
    calls = max(50, int(rate * seconds))
    shed0 = _metric(relay.base, "relay_sip_overload_total")
    r = run_step(work, relay.sip, rate, calls, pid=relay.proc.pid, scenario="uac_shed.xml")
    shed = int(_metric(relay.base, "relay_sip_overload_total") - shed0)
    completed = r["ok"] - shed
    r.update(shed_503=shed, completed=completed,
             goodput=completed / r["elapsed_s"] if r["elapsed_s"] else 0.0,
             offered_s=calls / rate)
    # Goodput over the offered period, not SIPp's whole run (it waits for the last BYE).
    r["goodput_offered"] = completed / r["offered_s"]
    sys.stdout.write(f"  overload {rate}/s -> {completed} completed "
                     f"({r['goodput_offered']:.0f}/s over the {r['offered_s']:.0f} s offered), "
                     f"{shed} shed with 503, {r['failed']} failed (load {r['load1']:.2f})\n")
    return r


def start_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the relay for `seconds` (collapsed stacks into `out`)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(out: Path, n: int = 15) -> list[tuple[str, float]]:
    """The frames most often on top of the stack (self time, % of samples)."""
    if not out.exists():
        return []
    selfs: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = re.sub(r"\s+", " ", stack.split(";")[-1])
        selfs[leaf] += int(count)
        total += int(count)
    return [(name, 100.0 * k / total) for name, k in selfs.most_common(n)] if total else []


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest sip")
    ap.add_argument("--rates", default="100,200,300,400,500,600,700,800,900,1000,1100,1200")
    ap.add_argument("--step", type=float, default=5.0, help="seconds of calls per rate step")
    ap.add_argument("--latency-rate", type=int, default=200)
    ap.add_argument("--latency-calls", type=int, default=2000)
    ap.add_argument("--profile", type=int, default=10, help="py-spy seconds (0: off)")
    ap.add_argument("--overload-step", type=float, default=10.0,
                    help="seconds offered at twice the highest passing rate (0: skip)")
    ap.add_argument("--unrecorded", action="store_true",
                    help="also ladder with recording off (a labelled extra)")
    ap.add_argument("--relay-arg", action="append", default=[],
                    help="extra `relay serve` argument (repeatable)")
    ap.add_argument("--recordings", default="",
                    help="recordings folder (default: in the run's temporary folder; "
                         "e.g. under /dev/shm to leave the filesystem's cost out)")
    ap.add_argument("--skip-direct-ladder", action="store_true",
                    help="no direct ladder (the latency anchor still runs)")
    a = ap.parse_args(argv)
    rates = [int(r) for r in a.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    callee_port = free_port(socket.SOCK_DGRAM)

    def start_relay(name: str, record: bool) -> RelayChild:
        child = RelayChild(f"sqlite:///{work}/{name}.db", str(work), [
            "--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
            "--media-ports", "30000-39999",
            "--recordings", a.recordings or str(work / f"rec-{name}"), *a.relay_arg])
        _post(child.base, "/v1/numbers", {"numbers": [X]})
        _post(child.base, "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "x": X,
                                           "ttl": 86400, "record": record})
        time.sleep(0.5)
        return child

    relay = start_relay("relay", True)
    callee = _callee(work, callee_port)
    try:
        # Latency first, on a fresh relay: the rate ladder ends by overloading it, and
        # the transactions of that overload live on for 32 s (RFC 3261 Timer D).
        lat_calls = a.latency_calls
        direct_lat = run_step(work, callee_port, a.latency_rate, lat_calls, rtt=True)
        time.sleep(2)
        relay_lat = run_step(work, relay.sip, a.latency_rate, lat_calls, rtt=True,
                             pid=relay.proc.pid)
        top: list[tuple[str, float]] = []
        if a.profile:
            # A separate run: py-spy's sampling would distort the latency figures.
            time.sleep(2)
            spy = start_profile(relay.proc.pid, a.profile, work / "profile.txt")
            run_step(work, relay.sip, a.latency_rate, a.latency_rate * (a.profile + 2))
            if spy is not None:
                spy.wait(timeout=a.profile + 60)
            top = top_frames(work / "profile.txt")
        time.sleep(3)
        direct_max = 0
        direct_steps: list[Any] = []
        if not a.skip_direct_ladder:
            sys.stdout.write("max rate, direct (SIPp -> SIPp):\n")
            direct_max, direct_steps = max_rate(work, callee_port, rates, a.step)
        sys.stdout.write("max rate, through the relay (recorded):\n")
        relay_max, relay_steps = max_rate(work, relay.sip, rates, a.step, relay.proc.pid,
                                          relay.base)
        over: dict[str, Any] = {}
        if a.overload_step and relay_max:
            # Let the failed step's transactions and calls end first (Timer D, 32 s).
            time.sleep(35)
            sys.stdout.write("overload, through the relay (recorded):\n")
            over = overload_step(work, relay, 2 * relay_max, a.overload_step)
        plain_max = 0
        plain_steps: list[Any] = []
        if a.unrecorded:
            # A fresh relay: what the overload step left (calls waiting for their ring
            # timeout, lingering transactions) must not count against this ladder.
            relay.stop()
            relay = start_relay("plain", False)
            time.sleep(5)
            sys.stdout.write("max rate, through the relay (extra: recording off):\n")
            plain_max, plain_steps = max_rate(work, relay.sip, rates, a.step, relay.proc.pid,
                                              relay.base)
    finally:
        _stop(callee)
        relay.stop()
    d, r = direct_lat["rtt_ms"], relay_lat["rtt_ms"]
    d50, d99, r50, r99 = (percentile(d, 50), percentile(d, 99), percentile(r, 50),
                          percentile(r, 99))
    rows = [
        ("max calls/s direct (<0.1% failed)", float(direct_max), "calls/s", "anchor"),
        ("max calls/s via relay, recorded (<0.1% failed)", float(relay_max), "calls/s",
         "target 1000"),
        (f"setup p50 direct @{a.latency_rate}/s", d50, "ms", "anchor"),
        (f"setup p99 direct @{a.latency_rate}/s", d99, "ms", "anchor"),
        (f"setup p50 via relay @{a.latency_rate}/s", r50, "ms", ""),
        (f"setup p99 via relay @{a.latency_rate}/s", r99, "ms", ""),
        ("p99 added by the relay", r99 - d99, "ms", "target < 5"),
        ("p50 ratio relay/direct", r50 / d50 if d50 else float("nan"), "x", ""),
        ("p99 ratio relay/direct", r99 / d99 if d99 else float("nan"), "x", ""),
        ("failed calls via relay @latency rate", float(relay_lat["failed"]), "calls", "0"),
        (f"relay CPU per call @{a.latency_rate}/s", relay_lat["relay_cpu_ms_per_call"], "ms",
         "1 core / 1000 calls/s = 1 ms"),
    ]
    if over:
        rows += [
            (f"overload: offered @{over['rate']}/s", float(over["rate"]), "calls/s", "2x max"),
            ("overload: goodput (completed per offered s)", over["goodput_offered"], "calls/s",
             f">= {relay_max}"),
            ("overload: shed with 503", float(over["shed_503"]), "calls", ""),
            ("overload: failed (neither completed nor shed)", float(over["failed"]), "calls",
             ""),
        ]
    if a.unrecorded:
        rows.append(("extra: max calls/s via relay, NOT recorded", float(plain_max), "calls/s",
                     "extra"))
    rows.append(("load average (1 min) at the end", os.getloadavg()[0], "", "shared machine"))
    report("sip", rows, {"direct_steps": direct_steps, "relay_steps": relay_steps,
                         "overload": over, "unrecorded_steps": plain_steps,
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "latency": {"direct": {k: v for k, v in direct_lat.items()
                                                if k != "rtt_ms"},
                                     "relay": {k: v for k, v in relay_lat.items()
                                               if k != "rtt_ms"}},
                         "profile_top": top})
    if top:
        sys.stdout.write("\npy-spy, relay under load (self time, top frames):\n")
        for name, pct in top:
            sys.stdout.write(f"  {pct:5.1f}%  {name}\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0
