"""Shared fixtures: free ports and a test-owned redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import stop_process


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 right now (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server owned by one test: start, stop, restart on the same port.

    It keeps an append-only file in the test's folder, so a restart keeps the data, as a
    production Redis with persistence would.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (run the test command in the README)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
             "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RelayProcess:
    """`relay serve` as a child process on free loopback ports."""

    def __init__(self, workdir: Path, store: str, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.workdir = workdir
        self.args = ["--store", store, "--http", f"127.0.0.1:{self.http_port}",
                     "--sip", f"127.0.0.1:{self.sip_port}", *(extra or [])]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # it has served once (a restart keeps its ports)
        self.log = workdir / f"relay-{self.http_port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait for /healthz. The ports were free when drawn, but another
        process on this shared machine may bind one before the relay does: on a first
        start (a restart keeps its ports) that gets new ports, twice at most."""
        for attempt in range(3):
            try:
                self._start(timeout)
                return
            except _PortTaken:
                if self.started or attempt == 2:
                    raise
                self._new_ports()

    def _new_ports(self) -> None:
        old = (f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.sip_port}")
        self.http_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        new = (f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.sip_port}")
        self.args[self.args.index(old[0])] = new[0]
        self.args[self.args.index(old[1])] = new[1]

    def _start(self, timeout: float) -> None:
        import os
        import sys
        import urllib.request

        env = dict(os.environ, **(self.env or {}))
        self.workdir.mkdir(parents=True, exist_ok=True)
        logged = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve", *self.args],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log.read_text()
                if "[Errno 98] Address already in use" in text[logged:]:
                    raise _PortTaken(f"relay exited: {text[-2000:]}")
                raise RuntimeError(f"relay exited: {text[-2000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=0.5):
                    self.started = True
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"relay did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc, grace=15.0)
        self.proc = None


class _PortTaken(RuntimeError):
    """`relay serve` exited at once: a port it was given was bound by then."""


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[object]:
    """Start `relay serve` processes; all are stopped after the test."""
    started: list[RelayProcess] = []

    def make(store: str, extra: list[str] | None = None, name: str = "node",
             env: dict[str, str] | None = None) -> RelayProcess:
        p = RelayProcess(tmp_path / f"{name}{len(started)}", store, extra, env)
        p.start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()
