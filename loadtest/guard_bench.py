"""What the egress leak guard (relay/guard.py) costs: CPU per bridged call with and
without it, and the scan of one message on its own.

    python -m loadtest.guard_bench [--calls 1000] [--rounds 5]

Drives the same in-memory AXB calls as `loadtest.switch_bench` (INVITE, 100/180/200,
ACK, BYE and its 200: about nine messages through the guard per call) through two
CallMaps, one with `[guard] enabled = false`, alternating rounds so that other load on
the machine hits both alike; the best round of each counts. Prints both figures, the
ratio (the budget: under 1.05) and the per-message scan time.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import timeit

from relay.guard import GuardSettings, LeakGuard, needles_for, scan

from .switch_bench import RELAY_SDP, Driver


def _round(d: Driver, calls: int, start: int, now: float) -> float:
    d.inside = 0.0
    for n in range(start, start + calls):
        d.call(n, now + n * 0.001)
    return d.inside / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loadtest.guard_bench")
    ap.add_argument("--calls", type=int, default=1000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    on, off = Driver(), Driver()
    off.switch.settings.guard = LeakGuard(GuardSettings(enabled=False), plant="")
    on.switch.settings.guard = LeakGuard(GuardSettings(), plant="")
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    now = time.time()
    for d in (on, off):
        _round(d, 200, 0, now)  # warm up
    best_on = best_off = float("inf")
    n = 200
    for _ in range(a.rounds):
        best_off = min(best_off, _round(off, a.calls, n, now))
        best_on = min(best_on, _round(on, a.calls, n, now))
        n += a.calls
    checked = on.switch.settings.guard.checked / (n - 200 + 200)
    needles = needles_for(["+8613933334444"], ["+8617055556666", "+8613811112222"])
    msg = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-1\r\n"
           b'From: "Caller" <sip:+8613811112222@127.0.0.1:5061>;tag=1CallerTag\r\n'
           b"To: <sip:+8617055556666@127.0.0.1:5060>;tag=0123456789abcdef\r\n"
           b"Call-ID: 1-caller@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
           b"Contact: <sip:+8617055556666@127.0.0.1:5060>\r\nContent-Type: application/sdp"
           b"\r\nContent-Length: 180\r\n\r\n" + RELAY_SDP)
    per_scan = min(timeit.repeat(lambda: scan(msg, needles), number=20000, repeat=3)) / 20000
    out = sys.stdout.write
    out(f"CallMap CPU per bridged call, guard off: {best_off:.0f} us\n")
    out(f"CallMap CPU per bridged call, guard on:  {best_on:.0f} us "
        f"({checked:.1f} messages checked per call)\n")
    out(f"ratio on/off: {best_on / best_off:.3f} (budget: < 1.05)\n")
    out(f"scan of one {len(msg)}-byte message: {per_scan * 1e6:.2f} us\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
