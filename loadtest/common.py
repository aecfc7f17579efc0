"""Pieces the benchmarks share: a private redis-server, `relay serve` children, RSS,
percentiles and the report line format."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (proc(5): fields 14 and 15, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]



def wait_listening(port: int, what: str, timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:`port` accepts TCP connections; RuntimeError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not start")

class RedisProc:
    """A redis-server of the benchmark's own on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (see README: the test command)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, "redis-server")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def own_session() -> dict[str, Any]:
    """Popen arguments for a child in a session of its own (a terminal's Ctrl-C is the
    tool's to handle) that still dies with the tool, even after its SIGKILL: without a
    process group to share, nothing else would stop it (PR_SET_PDEATHSIG, Linux). The
    signal follows the spawning thread, so only a child of the main thread gets it."""
    if threading.current_thread() is not threading.main_thread():
        return {"start_new_session": True}
    from relay.cluster.supervisor import die_with_parent

    return {"start_new_session": True,
            "preexec_fn": die_with_parent(os.getpid(), int(signal.SIGTERM))}


class RelayChild:
    """`relay serve` in a child process on free ports."""

    def __init__(self, store: str, workdir: str, extra: list[str] | None = None,
                 new_session: bool = False) -> None:
        """`new_session`: out of the terminal's process group, so that a Ctrl-C meant for
        the load tool does not stop the relay under it."""
        self.http = free_port()
        self.sip = free_port(socket.SOCK_DGRAM)
        self.log = open(Path(workdir) / f"relay-{self.http}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--store", store,
             "--http", f"127.0.0.1:{self.http}", "--sip", f"127.0.0.1:{self.sip}",
             "--log-level", "WARNING", *(extra or [])],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
            **(own_session() if new_session else {}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("relay exited during start") from None
                time.sleep(0.05)
        raise RuntimeError("relay did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def post_json(base: str, path: str, body: Any) -> Any:
    """POST `body` as JSON to the relay API at `base` (no token) and return the answer."""
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def sipp_exe() -> str:
    """The sipp executable, or exit saying how to get it."""
    exe = shutil.which("sipp")
    if exe is None:
        raise SystemExit("sipp is not installed (Debian: sip-tester)")
    return exe


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child (SIPp, a relay), SIGKILL it after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# One message of SIPp's -trace_msg file: stamp, direction, first line, the rest.
TRACE_BLOCK = re.compile(r"^-{20,} (\S+ \S+)\n(UDP message (?:sent|received))[^\n]*\n\n"
                         r"([^\n]*)\n(.*?)(?=^-{20,} |\Z)", re.M | re.S)


def report(name: str, rows: list[tuple[str, float, str, str]], extra: dict[str, Any],
           out: Path = OUT) -> None:
    """Print `figure  value unit  (target)` lines and save them as JSON in `out`."""
    width = max(len(r[0]) for r in rows)
    sys.stdout.write(f"\n== {name} ==\n")
    for label, value, unit, target in rows:
        sys.stdout.write(f"{label.ljust(width)}  {value:>12,.2f} {unit:<10} {target}\n")
    out.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "figures": {r[0]: {"value": r[1], "unit": r[2], "target": r[3]}
                                           for r in rows}, **extra}
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))
