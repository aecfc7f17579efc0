"""Two relay nodes on a real Redis Cluster (three masters on loopback, `redis-server
--cluster-enabled yes`) through a `redis+cluster://` URL (issue 16): bindings, a call
and its record, and a freeze that reaches the other node through the change stream."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from procs import stop_process
from sipp_harness import api, bind, callee, caller, calls, relay_args, udp_port
from workers_harness import get, wait_until

pytestmark = pytest.mark.integration


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    import socket

    while True:
        port = free_port()
        if port > 55000:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if exe is None or cli is None:
        pytest.skip("redis-server is not installed")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    try:
        for p in ports:
            d = tmp_path / f"cluster-{p}"
            d.mkdir()
            procs.append(subprocess.Popen(
                [exe, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--save", "",
                 "--appendonly", "no", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: all(subprocess.run([cli, "-p", str(p), "PING"], capture_output=True,
                                              text=True).stdout.strip() == "PONG"
                               for p in ports), 30, "cluster nodes up")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       capture_output=True, timeout=60)
        wait_until(lambda: all("cluster_state:ok" in subprocess.run(
            [cli, "-p", str(p), "CLUSTER", "INFO"], capture_output=True, text=True).stdout
            for p in ports), 60, "cluster_state:ok")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports[:2])
    finally:
        for proc in procs:
            stop_process(proc)


def test_two_nodes_on_redis_cluster(cluster: str, relay_factory: Any,
                                    tmp_path: Path) -> None:
    callee_port = udp_port()
    n1 = relay_factory(cluster, relay_args(callee_port, tmp_path), name="c1")
    n2 = relay_factory(cluster, relay_args(callee_port, tmp_path), name="c2")
    b = bind(n1.base)
    route = "/v1/route?from=%2B8613811112222&to=%2B8617055556666"
    wait_until(lambda: get(n2.base + route)[1].get("action") == "bridge", 30,
               "node 2 follows the binding")
    uas = callee(tmp_path, callee_port).start()
    try:
        uac = caller(tmp_path, n2.sip_port, extra=["-m", "1", "-d", "200"]).start()
        assert uac.wait(60) == 0, uac.tail()
    finally:
        uas.stop()
    rec = calls(n1.base, want=1, timeout=30)
    assert rec and rec[0]["sip_code"] == 200 and rec[0]["binding"] == b["id"]
    api(n1.base, "POST", f"/v1/bindings/{b['id']}/freeze")
    wait_until(lambda: get(n2.base + route)[1].get("code") == 410, 30,
               "node 2 sees the freeze")
    assert get(n2.base + "/healthz")[1]["status"] == "ok"
