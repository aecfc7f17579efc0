"""A real DNS server for tests: Debian's dnsmasq on 127.0.0.1 and a free port, serving
only the records a test gives it (and NXDOMAIN for other names under `.test`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from procs import stop_process


def dnsmasq_exe() -> str:
    exe = shutil.which("dnsmasq") or (
        "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
    if exe is None:
        pytest.skip("dnsmasq not installed (test.sh installs dnsmasq-base)")
    return exe


def _free_udp_and_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


class Dnsmasq:
    """dnsmasq in the foreground with `records` (its --naptr-record=, --srv-host=,
    --host-record= options); queries are logged, so a test can count them."""

    def __init__(self, workdir: Path, records: list[str], ttl: int = 60) -> None:
        self.port = _free_udp_and_tcp_port()
        self.log = workdir / "dnsmasq.log"
        self.records = records
        self.ttl = ttl
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, exe: str) -> None:
        args = [
            exe, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--pid-file=",
            f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--user=root", "--local=/test/", f"--local-ttl={self.ttl}", "--log-queries",
            "--log-facility=-", *self.records,
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def queries(self) -> int:
        return self.log.read_text(errors="replace").count(" query[")

    def stop(self) -> None:
        stop_process(self.proc)
