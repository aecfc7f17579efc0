"""`relay serve --workers 2`: a real Kamailio (the dispatcher) in front of two real relay
workers on loopback, driven by SIPp (issue 16).

The callee SIPp sees each B-leg INVITE straight from the worker that holds the call, so
the Via of what it received says which worker took which call.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kamailio_proxy import quiet_media_range
from sipp_harness import Sipp, bind, callee, calls, refused_scenario, udp_port
from sipp_harness import caller as _caller
from workers_harness import WorkerSet, alive, get, wait_until

pytestmark = pytest.mark.integration

_VIA = re.compile(r"^Via: SIP/2.0/UDP [^:;]+:(\d+)", re.M | re.I)


def caller(workdir: Path, port: int, **kw: Any) -> Sipp:
    """A SIPp caller whose ACK and BYE follow the Record-Route (through Kamailio)."""
    kw.setdefault("scenario", "uac_routed.xml")
    return _caller(workdir, port, **kw)


def _via_ports(peer: Sipp) -> list[int]:
    """The sent-by port of every INVITE `peer` received, in order."""
    out = []
    for m in peer.received():
        if m.startswith("INVITE "):
            v = _VIA.search(m)
            if v:
                out.append(int(v.group(1)))
    return out


def _worker_ports(ws: WorkerSet) -> list[int]:
    return [int(w["sip"].rsplit(":", 1)[1]) for w in ws.health()["workers"]]


@pytest.fixture
def worker_set(tmp_path: Path, request: Any) -> Iterator[tuple[WorkerSet, int]]:
    """Two workers on the store the test asks for; the outbound goes to a callee port."""
    store = request.param if hasattr(request, "param") else "sqlite"
    if store == "redis":
        redis = request.getfixturevalue("redis_server")
        url = redis.url
    else:
        url = f"sqlite:///{tmp_path}/relay.db"
    callee_port = udp_port()
    ws = WorkerSet(tmp_path / "set", url, 2,
                   ["--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
                    "--media-ports", quiet_media_range(400),
                    "--recordings", str(tmp_path / "rec"), "--log-level", "WARNING"])
    try:
        ws.start()
        bind(ws.base)
        yield ws, callee_port
    finally:
        ws.stop()


@pytest.mark.parametrize("worker_set", ["redis"], indirect=True)
def test_calls_spread_and_a_killed_worker_comes_back(worker_set: tuple[WorkerSet, int],
                                                      tmp_path: Path) -> None:
    ws, callee_port = worker_set
    ports = _worker_ports(ws)
    uas = callee(tmp_path, callee_port).start()
    try:
        # 1. Calls spread over both workers by Call-ID, every one recorded.
        first = caller(tmp_path, ws.sip_port, extra=["-m", "40", "-r", "10", "-d", "200"],
                       name="first").start()
        assert first.wait(120) == 0, first.tail()
        seen = _via_ports(uas)
        assert set(seen) == set(ports), (seen, ports)
        assert min(seen.count(p) for p in ports) >= 5, seen  # a hash, not a round trip
        records = calls(ws.base, "?limit=100", want=40, timeout=30)
        assert len(records) >= 40 and all(r["sip_code"] == 200 for r in records[:40])
        nodes = {r.get("node") for r in records[:40]}
        assert {n.rsplit("/", 1)[-1] for n in nodes if n} == {"worker-0", "worker-1"}, nodes

        # 2. kill -9 of worker 1 under load: calls keep completing (Kamailio fails over
        #    to worker 0, then its probe marks worker 1 inactive), and worker 1 is back.
        victim = ws.worker(1)
        load = caller(tmp_path, ws.sip_port, extra=["-m", "150", "-r", "10", "-d", "500"],
                      name="load").start()
        wait_until(lambda: len(_via_ports(uas)) >= len(seen) + 20, 60, "load under way")
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = len(_via_ports(uas))
        back = wait_until(lambda: (w := ws.worker(1))["up"] and w["pid"] != victim["pid"]
                          and w["health"] and w, 90, "worker 1 restarted")
        assert back["restarts"] == 1
        load.wait(240)
        stats = (tmp_path / "load.out").read_text(errors="replace")
        done = len(_via_ports(uas)) - len(seen)
        # Only calls live on worker 1 when it died may fail (their BYE has nowhere to go).
        failed = _failed(load)
        assert failed <= 12, (failed, stats[-2000:])
        assert done >= 140, done
        after_kill = _via_ports(uas)[killed_at:]
        assert ports[0] in after_kill

        # 3. The restarted worker takes calls again once its probe answers.
        again = caller(tmp_path, ws.sip_port, extra=["-m", "30", "-r", "10", "-d", "100"],
                       name="again").start()
        assert again.wait(120) == 0, again.tail()
        tail = _via_ports(uas)[-30:]
        assert set(tail) == set(ports), tail
    finally:
        uas.stop()


def _failed(peer: Sipp) -> int:
    """Failed calls in SIPp's final statistics (its -trace_stat is not on: the screen)."""
    out = Path(str(peer.out)).read_text(errors="replace")
    m = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    return int(m[-1]) if m else 0


def test_kill_9_of_the_parent_leaves_no_child(worker_set: tuple[WorkerSet, int]) -> None:
    ws, _callee = worker_set
    tree = ws.tree()
    names = {Path(f"/proc/{p}/comm").read_text().strip() for p, _s in tree if alive((p, _s))}
    assert "kamailio" in names and len(tree) >= 2 + 5, (names, tree)
    assert ws.proc is not None
    os.kill(ws.proc.pid, signal.SIGKILL)
    ws.proc.wait()
    wait_until(lambda: not any(alive(p) for p in tree), 60,
               f"every child gone: {[p for p in tree if alive(p)]}")


def test_drain_with_live_calls(worker_set: tuple[WorkerSet, int], tmp_path: Path) -> None:
    ws, callee_port = worker_set
    ports = _worker_ports(ws)
    uas = callee(tmp_path, callee_port).start()
    try:
        # Long calls on both workers.
        long = caller(tmp_path, ws.sip_port, extra=["-m", "6", "-r", "6", "-d", "12000"],
                      name="long").start()
        wait_until(lambda: get(ws.base + "/v1/node")[1]["live_calls"] >= 6, 30,
                   "six live calls")
        # The set's one API lists the live calls of both workers.
        live = get(ws.base + "/v1/calls/live")[1]["calls"]
        assert len(live) == 6 and len({c["id"] for c in live}) == 6, live
        # Drain worker 0 alone (on its own API, as on a node of a larger set).
        w0 = ws.worker(0)
        req = urllib.request.Request(f"http://{w0['http']}/v1/node/drain", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert ws.worker(0)["health"]["draining"] is True
        # New calls: all to worker 1 (a 503 fails over; then the probe skips worker 0).
        before = len(_via_ports(uas))
        more = caller(tmp_path, ws.sip_port, extra=["-m", "20", "-r", "10", "-d", "100"],
                      name="more").start()
        assert more.wait(120) == 0, more.tail()
        assert set(_via_ports(uas)[before:]) == {ports[1]}
        # The live calls (three or so on worker 0) end normally.
        assert long.wait(120) == 0, long.tail()
        # Every call completed, none cut short; the draining worker's 503s (before the
        # probe marked it inactive, Kamailio failed those over) are records of their own.
        records = wait_until(
            lambda: (rs := calls(ws.base, "?limit=200", want=26, timeout=1))
            and sum(r["sip_code"] == 200 for r in rs) >= 26 and rs, 60, "26 records")
        done = [r for r in records if r["sip_code"] == 200]
        assert len(done) == 26 and all(r["end_reason"] is None for r in done)
        assert {r["sip_code"] for r in records} <= {200, 503}

        # The whole set drains with `relay drain`: health says so, new calls get 503.
        out = subprocess.run([sys.executable, "-m", "relay", "drain", "--url", ws.base,
                              "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        status, health = get(ws.base + "/healthz")
        assert status == 503 and health["draining"] is True
        refused = caller(tmp_path, ws.sip_port, extra=["-m", "1"], name="refused",
                         scenario_path=refused_scenario(tmp_path, 503)).start()
        assert refused.wait(60) == 0, refused.tail()
        subprocess.run([sys.executable, "-m", "relay", "drain", "--url", ws.base, "--resume"],
                       check=True, capture_output=True, timeout=60)
        assert get(ws.base + "/healthz")[0] == 200
    finally:
        uas.stop()
