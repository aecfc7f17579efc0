"""AXE by digits (issue 9): SIPp callers dial a shared X, hear the prompt, key an
extension with RFC 4733 digits, are bridged to that extension's B, talk, hang up.

`relay serve` runs on its defaults (recorded bindings, in-process media, the shipped
prompts) with `--outbound` pointing at one SIPp callee (tests/flows/sipp/uas_tone.xml:
rings, answers, plays a tone until the BYE). The bindings are N AXE bindings on one X
(extension E_i -> B_i), made through the API. Caller i (uac_axe_dtmf.xml, one SIPp per
extension, each at 1/N of the rate) calls X from A_i with no extension, waits
`--wait-ms` after the relay's 200, plays a pcap of "E_i#" (loadtest.dtmf_pcap: PCMU
voice around RFC 4733 events) and holds until the pcap ends, so it talks on while
bridged. The same callers and pcaps also call the callee directly (SIPp -> SIPp): the
anchor, in the same run.

    python -m loadtest axe [--rates 5,10,20,40,80] [--step 20] [--exts 4]
                           [--wait-ms 1000] [--ring-ms 200] [--talk-ms 1000]
                           [--profile 0] [--profile-rate 20] [--cooldown 20] [--out DIR]

A call through the relay counts as completed only when its record (GET /v1/calls) names
the caller's extension and that extension's B, with the callee answered; everything
else the caller started is failed (SIPp errors, a missing record, a wrong extension or
B). Figures: the highest rate whose step has < 0.1% failed calls, each way; at that rate
the setup latency (INVITE -> bridged, i.e. the relay's INVITE stamp to B's answer, from
the record) against its scripted floor (the wait, the keying up to the end of "#", and
the ring, measured directly), the relay's CPU per call and the prompts it played at
once (the `relay_media_playing` gauge sampled every 0.2 s, ringback included). Each
step also carries the load average of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.events.records import from_iso

from .bench_sip import SCENARIOS, _counts, setup_times, start_profile, top_frames
from .common import OUT, RelayChild, cpu_seconds, free_port, percentile, report
from .common import post_json as _post
from .common import sipp_exe as _sipp
from .common import stop_proc as _stop
from .dtmf_pcap import EVENT_CODES, dtmf_packets, write_rtp_pcap, write_tone_pcap

X = "+8617055557777"
A_HZ, B_HZ = 440.0, 1000.0  # the callers' voice around their digits, the callee's tone


@dataclass(frozen=True, slots=True)
class Extension:
    """One AXE binding on X and the caller that keys it."""

    ext: str
    b: str
    caller: str
    pcap: Path


def _key_seconds(packets: list[tuple[float, bytes]], pt: int = 101) -> float:
    """When, from the pcap's start, the relay can know the extension: the first end
    packet of the "#" event (the relay's detector reports a digit there)."""
    for t, rtp in packets:
        if rtp[1] & 0x7F == pt and rtp[12] == EVENT_CODES["#"] and rtp[13] & 0x80:
            return t
    raise ValueError("no '#' in the pcap")


def make_extensions(work: Path, n: int, tail_ms: int) -> tuple[list[Extension], float, float]:
    """N extensions with their pcaps; also when "#" ends and how long a pcap plays (s)."""
    exts = []
    key_s = play_s = 0.0
    for i in range(n):
        ext = f"{1001 + i}"
        packets = dtmf_packets(f"{ext}#", lead_ms=200, tail_ms=tail_ms, audio_hz=A_HZ)
        pcap = write_rtp_pcap(work / f"ext-{ext}.pcap", packets)
        key_s, play_s = _key_seconds(packets), packets[-1][0] + 0.02
        exts.append(Extension(ext, f"+86139{i + 1:08d}", f"+86138{i + 1:08d}", pcap))
    return exts, key_s, play_s


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def _gauges(base: str) -> dict[str, float]:
    """The relay's gauges and counters from /metrics (unlabelled lines only)."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            out[name] = float(value)
    return out


class Sampler(threading.Thread):
    """Reads the relay's prompts-playing and live-calls gauges every `period` s."""

    def __init__(self, base: str, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.base, self.period = base, period
        self.playing: list[float] = []
        self.live: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.period):
            try:
                g = _gauges(self.base)
            except OSError:
                continue
            self.playing.append(g.get("relay_media_playing", 0.0))
            self.live.append(g.get("relay_calls_live", 0.0))

    def stop(self) -> dict[str, float]:
        """Stop; the peak and the mean over the samples where any call was live."""
        self._done.set()
        self.join()
        busy = [p for p, live in zip(self.playing, self.live, strict=True) if live] or [0.0]
        return {"prompts_playing_peak": max(self.playing, default=0.0),
                "prompts_playing_mean": sum(busy) / len(busy),
                "calls_live_peak": max(self.live, default=0.0)}


def _callee(work: Path, port: int, ring_ms: int, tone: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_sipp(), "-sf", str(SCENARIOS / "uas_tone.xml"), "-i", "127.0.0.1",
         "-p", str(port), "-mp", str(free_port(socket.SOCK_DGRAM)), "-key", "callee",
         "+8613900000000", "-key", "pcap", str(tone), "-d", str(ring_ms), "-nostdin",
         "-max_recv_loops", "5000"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)


def _callers(work: Path, target: int, exts: list[Extension], rate: int, calls: int,
             wait_ms: int, hold_ms: int, name: str) -> list[subprocess.Popen[bytes]]:
    """One SIPp per extension, each placing calls/N calls at rate/N per second."""
    n = len(exts)
    procs = []
    for e in exts:
        stem = work / f"{name}-{e.ext}"
        args = [_sipp(), "-sf", str(SCENARIOS / "uac_axe_dtmf.xml"), f"127.0.0.1:{target}",
                "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
                "-mp", str(free_port(socket.SOCK_DGRAM)), "-s", X, "-key", "caller",
                e.caller, "-key", "pcap", str(e.pcap), "-key", "wait_ms", str(wait_ms),
                "-d", str(hold_ms), "-m", str(calls // n), "-r", str(rate),
                "-rp", str(1000 * n), "-l", str(max(10, rate * 30 // n)), "-nostdin",
                "-max_recv_loops", "5000", "-timeout", f"{calls // rate + 90}s",
                "-trace_stat", "-stf", f"{stem}.csv", "-fd", "3600",
                "-trace_msg", "-message_file", f"{stem}.msg"]
        with open(f"{stem}.out", "wb") as out:
            procs.append(subprocess.Popen(args, cwd=work, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    return procs


def _records(base: str, since: float, want: int, timeout: float = 30.0
             ) -> list[dict[str, Any]]:
    """The call records on X since `since` (every page); waits until `want` are there,
    or the relay has no live call and nothing left to write and two reads agree."""
    deadline = time.monotonic() + timeout
    last = -1
    recs: list[dict[str, Any]] = []
    while True:
        recs = []
        query = {"x": X, "since": f"{since:.3f}", "limit": "1000"}
        while True:
            page = _get(base, "/v1/calls?" + urllib.parse.urlencode(query))
            recs += page["calls"]
            if not page.get("next"):
                break
            query["cursor"] = page["next"]
        g = _gauges(base)
        idle = not g.get("relay_calls_live") and not g.get("relay_records_pending")
        if len(recs) >= want or (idle and len(recs) == last) or time.monotonic() > deadline:
            return recs
        last = len(recs)
        time.sleep(0.5)


def _digits(number: str | None) -> str:
    return "".join(c for c in number or "" if c.isdigit())


def check_records(recs: list[dict[str, Any]], exts: list[Extension]) -> dict[str, Any]:
    """Sort the records into completed and the ways a call can go wrong; with the
    setup times (ms, from the relay's stamps) of the completed ones."""
    by_caller = {_digits(e.caller): e for e in exts}
    out: dict[str, Any] = {"completed": 0, "no_ext": 0, "wrong_ext": 0, "wrong_b": 0,
                           "unconnected": 0, "foreign": 0, "setup_ms": [], "answer_ms": [],
                           "keying_ms": [], "route_ms": [], "ring_ms": []}
    for rec in recs:
        e = by_caller.get(_digits(rec.get("caller")))
        legs = rec.get("legs") or {}
        a, b = legs.get("caller") or {}, legs.get("callee") or {}
        if e is None:
            out["foreign"] += 1
        elif not rec.get("ext"):
            out["no_ext"] += 1  # the relay heard no extension (digits lost or late)
        elif rec.get("ext") != e.ext:
            out["wrong_ext"] += 1
        elif _digits(rec.get("callee")) != _digits(e.b):
            out["wrong_b"] += 1
        elif rec.get("unconnected_cause") != "none" or not b.get("answer_at"):
            out["unconnected"] += 1
        else:
            out["completed"] += 1
            invite, answered = _ms(a["invite_at"]), _ms(a["answer_at"])
            routed, b_invite, b_answer = (_ms(rec["ivr_end_at"]), _ms(b["invite_at"]),
                                          _ms(b["answer_at"]))
            out["setup_ms"].append(b_answer - invite)
            out["answer_ms"].append(answered - invite)
            out["keying_ms"].append(routed - answered)
            out["route_ms"].append(b_invite - routed)
            out["ring_ms"].append(b_answer - b_invite)
    return out


def _ms(iso: str) -> float:
    """A record's time (ISO 8601 UTC, ms: the API's contract) as epoch milliseconds."""
    return (from_iso(iso) or 0.0) * 1000.0


def _pcts(values: list[float]) -> dict[str, float]:
    return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}


def _children_cpu() -> float:
    """CPU seconds of the children this process has waited for (the SIPp callers)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def idle_cpu_rate(relay: RelayChild, seconds: float = 3.0) -> float:
    """The relay's CPU seconds per second with no call but this benchmark's sampling
    (its timers, the /metrics reads): subtracted to give the CPU a call costs."""
    sampler = Sampler(relay.base)
    sampler.start()
    cpu0, t0 = cpu_seconds(relay.proc.pid), time.monotonic()
    time.sleep(seconds)
    sampler.stop()
    return (cpu_seconds(relay.proc.pid) - cpu0) / (time.monotonic() - t0)


def run_step(work: Path, target: int, exts: list[Extension], rate: int, calls: int,
             wait_ms: int, hold_ms: int, relay: RelayChild | None = None,
             idle_cpu: float = 0.0) -> dict[str, Any]:
    """One step: `calls` calls at `rate`/s to 127.0.0.1:`target`. Through the `relay`,
    a call completes only when its record is right (see the module docstring); its
    CPU per call is given whole and less `idle_cpu` (CPU s/s of the idle relay)."""
    name = f"uac-{target}-{rate}-{calls}"
    calls -= calls % len(exts)
    since = time.time() - 1.0
    load0 = os.getloadavg()[0]
    sampler = None
    if relay is not None:
        cpu0 = cpu_seconds(relay.proc.pid)
        sampler = Sampler(relay.base)
        sampler.start()
    started = time.monotonic()
    harness0 = _children_cpu()
    procs = _callers(work, target, exts, rate, calls, wait_ms, hold_ms, name)
    for p in procs:
        try:
            p.wait(timeout=calls // rate + 150)
        except subprocess.TimeoutExpired:
            _stop(p)
    elapsed = time.monotonic() - started
    callers_cores = (_children_cpu() - harness0) / elapsed
    sipp_ok = sipp_failed = 0
    rtt: list[float] = []
    for e in exts:
        ok, failed = _counts(work / f"{name}-{e.ext}.csv")
        sipp_ok, sipp_failed = sipp_ok + ok, sipp_failed + failed
        rtt += setup_times(work / f"{name}-{e.ext}.msg")
    result: dict[str, Any] = {
        "rate": rate, "calls": calls, "elapsed_s": round(elapsed, 2),
        "sipp_ok": sipp_ok, "sipp_failed": sipp_failed,
        "rcs": [p.returncode for p in procs], "load_avg_1m": [load0, os.getloadavg()[0]],
        "sipp_callers_cpu_cores": round(callers_cores, 3),
        "invite_to_200_ms": _pcts(rtt)}
    if relay is None:
        result["ok"], result["failed"] = sipp_ok, calls - sipp_ok
        return result
    recs = _records(relay.base, since, calls)
    assert sampler is not None
    result.update(sampler.stop())
    spent = cpu_seconds(relay.proc.pid) - cpu0
    window = time.monotonic() - started
    result["relay_cpu_ms_per_call"] = spent * 1000.0 / max(1, calls)
    result["relay_cpu_ms_per_call_net"] = ((spent - idle_cpu * window) * 1000.0
                                           / max(1, calls))
    result["relay_cpu_cores"] = spent / window
    checked = check_records(recs, exts)
    result["ok"] = checked["completed"]
    result["failed"] = calls - checked["completed"]
    result["records"] = {k: v for k, v in checked.items() if not k.endswith("_ms")}
    for key in ("setup_ms", "answer_ms", "keying_ms", "route_ms", "ring_ms"):
        result[key] = _pcts(checked[key])
    return result


def ladder(work: Path, target: int, exts: list[Extension], rates: list[int], step: float,
           wait_ms: int, hold_ms: int, relay: RelayChild | None = None,
           idle_cpu: float = 0.0) -> tuple[int, list[dict[str, Any]]]:
    """The highest rate whose step has < 0.1% failed calls (stops at the first that
    fails), and every step's figures."""
    best, steps = 0, []
    for rate in rates:
        calls = max(len(exts), int(rate * step))
        r = run_step(work, target, exts, rate, calls, wait_ms, hold_ms, relay, idle_cpu)
        steps.append(r)
        extra = ""
        if relay is not None:
            extra = (f", setup p50/p99 {r['setup_ms']['p50']:.0f}/{r['setup_ms']['p99']:.0f} ms"
                     f", {r['relay_cpu_ms_per_call_net']:.1f} ms CPU/call "
                     f"({r['relay_cpu_cores']:.2f} cores), prompts playing "
                     f"peak {r['prompts_playing_peak']:.0f}, records {r['records']}")
        sys.stdout.write(f"  {rate}/s: {r['ok']} ok, {r['failed']} failed of {r['calls']} "
                         f"in {r['elapsed_s']:.1f}s (load {r['load_avg_1m'][0]:.2f}, SIPp "
                         f"callers {r['sipp_callers_cpu_cores']:.2f} cores){extra}\n")
        sys.stdout.flush()
        if r["failed"] * 1000 >= r["calls"]:  # not < 0.1%
            break
        best = rate
        if rate != rates[-1]:
            time.sleep(2)  # between steps (none after the last)
    return best, steps


def _at(steps: list[dict[str, Any]], rate: int) -> dict[str, Any]:
    return next((s for s in steps if s["rate"] == rate), {})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest axe")
    ap.add_argument("--rates", default="5,10,20,40,80")
    ap.add_argument("--step", type=float, default=20.0, help="seconds of calls per rate step")
    ap.add_argument("--exts", type=int, default=4, help="AXE bindings (extensions) on X")
    ap.add_argument("--wait-ms", type=int, default=1000,
                    help="after the relay's 200, before keying (the prompt plays)")
    ap.add_argument("--ring-ms", type=int, default=200, help="the callee rings this long")
    ap.add_argument("--talk-ms", type=int, default=1000, help="bridged talk, about")
    ap.add_argument("--profile", type=int, default=0, help="py-spy seconds (0: off)")
    ap.add_argument("--profile-rate", type=int, default=20)
    ap.add_argument("--cooldown", type=float, default=20.0,
                    help="seconds between the direct ladder and the relay's (its top step "
                         "overloads the machine; a tiny ladder, as in the tests, needs none)")
    ap.add_argument("--out", type=Path, default=OUT, help="where axe.json goes")
    a = ap.parse_args(argv)
    rates = [int(r) for r in a.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-axe-"))
    exts, key_s, play_s = make_extensions(work, a.exts, a.ring_ms + a.talk_ms + 300)
    hold_ms = round(play_s * 1000)
    tone = write_tone_pcap(work / "b.pcap", B_HZ, 30.0 + play_s + a.wait_ms / 1000)
    callee_port = free_port(socket.SOCK_DGRAM)
    callee = _callee(work, callee_port, a.ring_ms, tone)
    load_start = os.getloadavg()
    relay = RelayChild(f"sqlite:///{work}/var/relay.db", str(work),
                       ["--outbound", f"127.0.0.1:{callee_port}"])
    try:
        _post(relay.base, "/v1/numbers", {"numbers": [X]})
        for e in exts:
            _post(relay.base, "/v1/bindings", {"mode": "AXE", "x": X, "ext": e.ext, "b": e.b,
                                               "ttl": 86400, "record": True})
        time.sleep(0.5)
        idle = idle_cpu_rate(relay)
        top: list[tuple[str, float]] = []
        if a.profile:
            # First, on a fresh relay: the ladder ends by overloading it.
            spy = start_profile(relay.proc.pid, a.profile, work / "profile.txt")
            prof = run_step(work, relay.sip, exts, a.profile_rate,
                            a.profile_rate * a.profile, a.wait_ms, hold_ms, relay, idle)
            sys.stdout.write(f"profiled step, {a.profile_rate}/s: {prof['ok']} ok, "
                             f"{prof['failed']} failed ({prof['records']})\n")
            if spy is not None:
                spy.wait(timeout=a.profile + 60)
            top = top_frames(work / "profile.txt")
            if (work / "profile.txt").exists():  # the raw stacks, for a closer look
                a.out.mkdir(parents=True, exist_ok=True)
                shutil.copy(work / "profile.txt", a.out / "axe-profile.txt")
            time.sleep(2)
        sys.stdout.write("max rate, direct (SIPp -> SIPp, same pcaps):\n")
        direct_max, direct_steps = ladder(work, callee_port, exts, rates, a.step,
                                          a.wait_ms, hold_ms)
        time.sleep(a.cooldown)  # the direct ladder's top step overloads the machine
        sys.stdout.write("max rate, through the relay (AXE by digits):\n")
        relay_max, relay_steps = ladder(work, relay.sip, exts, rates, a.step, a.wait_ms,
                                        hold_ms, relay, idle)
    finally:
        _stop(callee)
        relay.stop()
    load_end = os.getloadavg()
    at = relay_max or rates[0]
    r, d = _at(relay_steps, at), _at(direct_steps, at)
    ring = d.get("invite_to_200_ms", {})
    floor = a.wait_ms + key_s * 1000 + ring.get("p50", float(a.ring_ms))
    rows = [
        ("max calls/s direct (<0.1% failed)", float(direct_max), "calls/s", "anchor"),
        ("max calls/s via relay (<0.1% failed)", float(relay_max), "calls/s", ""),
        (f"setup INVITE->bridged p50 via relay @{at}/s", r["setup_ms"]["p50"], "ms", ""),
        (f"setup INVITE->bridged p95 via relay @{at}/s", r["setup_ms"]["p95"], "ms", ""),
        (f"setup INVITE->bridged p99 via relay @{at}/s", r["setup_ms"]["p99"], "ms", ""),
        ("scripted floor (wait + keying to '#' + direct ring p50)", floor, "ms", "anchor"),
        (f"setup p99 added by the relay @{at}/s", r["setup_ms"]["p99"] - floor, "ms", ""),
        (f"direct INVITE->200 p50 @{at}/s", ring.get("p50", float("nan")), "ms", "anchor"),
        (f"direct INVITE->200 p99 @{at}/s", ring.get("p99", float("nan")), "ms", "anchor"),
        (f"relay answers the caller p99 @{at}/s", r["answer_ms"]["p99"], "ms", ""),
        (f"relay answer -> '#' heard p50 @{at}/s", r["keying_ms"]["p50"], "ms",
         f"scripted {a.wait_ms + key_s * 1000:.0f}"),
        (f"relay answer -> '#' heard p99 @{at}/s", r["keying_ms"]["p99"], "ms", ""),
        (f"'#' -> INVITE to B p99 @{at}/s", r["route_ms"]["p99"], "ms", ""),
        (f"INVITE to B -> B answers p99 @{at}/s", r["ring_ms"]["p99"], "ms",
         f"scripted {a.ring_ms}"),
        (f"relay CPU per call @{at}/s (idle relay subtracted)", r["relay_cpu_ms_per_call_net"],
         "ms", ""),
        (f"relay CPU @{at}/s", r["relay_cpu_cores"], "cores", ""),
        (f"prompts playing at once, peak @{at}/s", r["prompts_playing_peak"], "prompts", ""),
        (f"prompts playing at once, mean @{at}/s", r["prompts_playing_mean"], "prompts", ""),
        (f"live calls, peak @{at}/s", r["calls_live_peak"], "calls", ""),
        (f"failed calls via relay @{at}/s", float(r["failed"]), "calls", "0"),
    ]
    report("axe", rows, {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": "recorded, in-process media, prompts on",
        "load_avg": {"start": load_start, "end": load_end},
        "relay_idle_cpu_cores": idle,
        "params": {"rates": rates, "step_s": a.step, "exts": a.exts, "wait_ms": a.wait_ms,
                   "ring_ms": a.ring_ms, "talk_ms": a.talk_ms, "hold_ms": hold_ms,
                   "key_ms": key_s * 1000},
        "direct_steps": direct_steps, "relay_steps": relay_steps, "profile_top": top},
        out=a.out)
    sys.stdout.write(f"load average {load_start[0]:.2f} at the start, "
                     f"{load_end[0]:.2f} at the end\n")
    if top:
        sys.stdout.write(f"\npy-spy, relay at {a.profile_rate}/s (self time, top frames):\n")
        for frame, pct in top:
            sys.stdout.write(f"  {pct:5.1f}%  {frame}\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0
