"""`relay serve --workers N` as a child of a test, and the processes it runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_port
from kamailio_proxy import need_kamailio


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children too)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def started(pid: int) -> int | None:
    """The start time of `pid` (clock ticks since boot): with the pid, a process's
    identity (pids are reused); None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def alive(proc: tuple[int, int | None]) -> bool:
    """Whether the process (pid, start time) still runs."""
    return proc[1] is not None and started(proc[0]) == proc[1]


def get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    """GET a JSON answer, whatever its status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until(check: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    """Poll `check()` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


class WorkerSet:
    """`relay serve --workers N` on free loopback ports (SIP for Kamailio, HTTP front)."""

    def __init__(self, workdir: Path, store: str, n: int, extra: list[str]) -> None:
        need_kamailio()
        self.workdir = workdir
        self.n = n
        self.http_port = free_port()
        self.sip_port = _free_udp_tcp()
        self.args = [sys.executable, "-m", "relay", "serve", "--workers", str(n),
                     "--store", store, "--sip", f"127.0.0.1:{self.sip_port}",
                     "--http", f"127.0.0.1:{self.http_port}", *extra]
        self.log = workdir / "workers.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[tuple[int, int | None]] = set()  # every process of the set seen

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 120.0) -> WorkerSet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(self._ready, timeout, f"the set to start: {self.tail()}", 0.3)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"relay serve --workers exited: {self.tail()}")
        try:
            status, body = get(self.base + "/healthz", 3)
        except OSError:
            return False
        return status == 200 and all(w["health"] for w in body["workers"])

    def health(self) -> dict[str, Any]:
        return dict(get(self.base + "/healthz")[1])

    def worker(self, i: int) -> dict[str, Any]:
        return dict(self.health()["workers"][i])

    def tree(self) -> set[tuple[int, int | None]]:
        """The set's processes now, as (pid, start time)."""
        assert self.proc is not None
        found = {(p, started(p)) for p in descendants(self.proc.pid)}
        self.seen |= found
        return found

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            self.seen |= {(p, started(p)) for p in descendants(proc.pid)}
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # Never leave anything behind, whatever the test did (only what this set ran).
        deadline = time.monotonic() + 30
        while any(alive(p) for p in self.seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in self.seen:
            if alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p[0], signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _free_udp_tcp() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
