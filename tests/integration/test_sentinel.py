"""A real Redis Sentinel set on loopback (one master, one replica, three sentinels, all
`redis-server`) under `relay serve --workers 2`, failed over during calls (issue 16).

What must hold: the calls in progress complete; every binding change the API confirmed
is on the new master; each worker's follower resumes the new master's stream where it
was (no full reload) and sees changes made after the failover; health is ok again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from kamailio_proxy import quiet_media_range
from procs import stop_process
from sipp_harness import api, bind, callee, udp_port
from test_workers import caller
from workers_harness import WorkerSet, get, wait_until

pytestmark = pytest.mark.integration

SERVICE = "relaymaster"


def _ask(port: int, *words: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *words], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip()


class SentinelSet:
    """redis-server master and replica, and three sentinels watching them."""

    def __init__(self, workdir: Path) -> None:
        self.exe = shutil.which("redis-server")
        if self.exe is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server is not installed")
        self.workdir = workdir
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _server(self, port: int, *more: str) -> None:
        d = self.workdir / f"redis-{port}"
        d.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [str(self.exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(d), *more],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> SentinelSet:
        self._server(self.master_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        wait_until(lambda: "master_link_status:up" in _ask(self.replica_port, "INFO",
                                                            "replication"), 30, "replica")
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n")
            self.procs[port] = subprocess.Popen(
                [str(self.exe), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.sentinel_ports:
            wait_until(lambda p=port: str(self.master_port) in _ask(
                p, "SENTINEL", "get-master-addr-by-name", SERVICE), 30, "sentinels")
        # Each sentinel must know the others and the replica before a failover can run.
        wait_until(lambda: all(_ask(p, "SENTINEL", "replicas", SERVICE) and
                               "num-other-sentinels" in _ask(p, "SENTINEL", "master",
                                                             SERVICE)
                               for p in self.sentinel_ports), 30, "sentinels met")
        return self

    def master(self) -> int:
        """The master's port as the sentinels see it now."""
        got = _ask(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", SERVICE)
        return int(got.split()[-1]) if got else 0

    def kill(self, port: int) -> None:
        os.kill(self.procs[port].pid, signal.SIGKILL)
        self.procs[port].wait()

    def stop(self) -> None:
        for p in self.procs.values():
            stop_process(p)


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    s = SentinelSet(tmp_path / "redis")
    try:
        yield s.start()
    finally:
        s.stop()


def _other_sentinels_known(s: SentinelSet) -> bool:
    for p in s.sentinel_ports:
        text = _ask(p, "SENTINEL", "master", SERVICE)
        m = re.search(r"num-other-sentinels\s+(\d+)", text)
        if not m or int(m.group(1)) < 2:
            return False
    return True


def _metric(ws: WorkerSet, name: str) -> dict[str, float]:
    """`name` per worker, from the set's /metrics."""
    with urllib.request.urlopen(ws.base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(rf'^{name}\{{worker="(\d)"\}} (\S+)', text, re.M)}


def _reloads(ws: WorkerSet) -> dict[str, float]:
    return _metric(ws, "relay_feed_reloads_total")


def test_failover_during_calls_loses_nothing(sentinels: SentinelSet,
                                             tmp_path: Path) -> None:
    wait_until(lambda: _other_sentinels_known(sentinels), 30, "sentinels know each other")
    callee_port = udp_port()
    ws = WorkerSet(tmp_path / "set", sentinels.url, 2,
                   ["--outbound", f"127.0.0.1:{callee_port}", "--trunk", "127.0.0.0/8",
                    "--media-ports", quiet_media_range(400),
                    "--recordings", str(tmp_path / "rec"), "--log-level", "WARNING"])
    uas = callee(tmp_path, callee_port)
    try:
        ws.start()
        bind(ws.base)
        api(ws.base, "POST", "/v1/numbers",
            {"numbers": [f"+86170100000{i:02d}" for i in range(40)]})
        made = [api(ws.base, "POST", "/v1/bindings",
                    {"mode": "AXB", "a": f"+86138100000{i:02d}", "b": f"+86139100000{i:02d}",
                     "x": f"+86170100000{i:02d}", "ttl": 3600})["id"] for i in range(20)]
        assert _reloads(ws) == {"0": 1.0, "1": 1.0}
        # Each change was confirmed by the replica before the API answered (WAIT).
        assert sum(_metric(ws, "relay_store_unreplicated_total").values()) == 0
        uas.start()
        calls = caller(tmp_path, ws.sip_port, extra=["-m", "12", "-r", "4", "-d", "8000"],
                       name="during").start()
        wait_until(lambda: get(ws.base + "/v1/node")[1]["live_calls"] >= 8, 30,
                   "calls in progress")
        old = sentinels.master()
        assert old == sentinels.master_port
        sentinels.kill(old)
        wait_until(lambda: sentinels.master() == sentinels.replica_port, 90,
                   "the sentinels promote the replica")
        # Changes after the failover go to the new master and reach both followers.
        def freeze() -> bool:
            try:
                api(ws.base, "POST", f"/v1/bindings/{made[0]}/freeze")
                return True
            except OSError:  # no master reachable yet: retried
                return False
        wait_until(freeze, 60, "a freeze through the new master")
        try:
            late = wait_until(lambda: _try_bind(ws.base), 60, "a binding made after it")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_LAST[-1:]}") from None
        for w in ws.health()["workers"]:
            route = f"http://{w['http']}/v1/route?from=%2B8613810000021&to=%2B8617010000021"
            wait_until(lambda r=route: get(r)[1].get("action") == "bridge", 30,
                       f"worker {w['worker']} follows the new master")
            route = f"http://{w['http']}/v1/route?from=%2B8613810000000&to=%2B8617010000000"
            wait_until(lambda r=route: get(r)[1].get("code") == 410, 30,
                       f"worker {w['worker']} sees the freeze")
        assert late
        # The calls in progress all completed.
        assert calls.wait(120) == 0, calls.tail()
        # Every confirmed binding is on the new master; no follower reloaded its table.
        for bid in made:
            assert api(ws.base, "GET", f"/v1/bindings/{bid}")["id"] == bid
        assert _reloads(ws) == {"0": 1.0, "1": 1.0}
        wait_until(lambda: ws.health()["status"] == "ok", 60, "health ok again")
    finally:
        uas.stop()
        ws.stop()


def _try_bind(base: str) -> str | None:
    try:
        return str(api(base, "POST", "/v1/bindings",
                       {"mode": "AXB", "a": "+8613810000021", "b": "+8613910000021",
                        "x": "+8617010000021", "ttl": 3600})["id"])
    except urllib.error.HTTPError as exc:
        _LAST.append(exc.read().decode(errors="replace"))
        return None
    except OSError as exc:
        _LAST.append(repr(exc))
        return None


_LAST: list[str] = []
