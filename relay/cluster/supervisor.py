"""The parent of `relay serve --workers N`: starts the workers and Kamailio, restarts
whichever dies, serves the one HTTP address (front.py), and takes its children down with
it, even when it is killed with SIGKILL.

Every child is started in its own session (the parent forwards SIGINT/SIGTERM) with
PR_SET_PDEATHSIG: the kernel sends it SIGTERM the moment the parent dies, however it
dies. A worker then drains and exits as on any SIGTERM (its recording finishers follow
it: they carry their own death signal); Kamailio's main process ends its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..config import Config
from . import kamailio

__all__ = ["Child", "Cluster", "run_cluster"]

log = logging.getLogger("relay.cluster")

try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int) -> Callable[[], None]:
    """preexec_fn: this child gets `sig` when the parent dies (Linux prctl); if the
    parent is already gone (it died between fork and here), at once."""
    def pre() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)
    return pre


@dataclass
class Child:
    """One supervised process: a worker or Kamailio."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    http: tuple[str, int] | None = None  # a worker's internal API address
    sip: tuple[str, int] | None = None  # a worker's internal SIP address
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    fast_deaths: int = 0
    next_start: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.up and self.proc is not None else None

    def start(self) -> None:
        """Fork and exec; must run on the main thread (the death signal is tied to the
        thread that forked)."""
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid(), int(signal.SIGTERM)))
        self.started = time.monotonic()


def _free_sip_port(host: str, taken: set[int]) -> int:
    """A port free for both UDP and TCP on `host` (the relay listens on both)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            if port in taken:
                continue
            try:
                with socket.socket(fam, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            taken.add(port)
            return port
    raise RuntimeError(f"no free SIP port on {host}")


def _free_tcp_port(host: str, taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


def media_share(ports: tuple[int, int], n: int, i: int) -> tuple[int, int]:
    """Worker i's slice of the media port range (even start: RTP/RTCP pairs)."""
    lo, hi = ports
    width = (hi - lo + 1) // n
    width -= width % 2
    if width < 4:
        raise ValueError(f"media_ports {lo}-{hi} is too small for {n} workers")
    start = lo + i * width
    return start, start + width - 1


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The serve command's arguments without --workers (each worker is one node)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


class Cluster:
    """Workers, Kamailio and the HTTP front of one `relay serve --workers N`."""

    def __init__(self, cfg: Config, argv: Sequence[str], n: int,
                 rundir: Path | None = None) -> None:
        self.cfg = cfg
        self.n = n
        self.rundir = rundir or Path(tempfile.mkdtemp(prefix="relay-workers-"))
        self._own_rundir = rundir is None
        self.stopping = False
        # Workers bind where --sip does (a wildcard too: their B-legs leave from it, and
        # [sip] advertise names the address); Kamailio reaches a wildcard on loopback.
        bind = cfg.sip[0]
        host = bind if bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.sip_host = host
        sip_taken: set[int] = {cfg.sip[1]}
        http_taken: set[int] = {cfg.http[1]}
        args = worker_argv(argv)
        self.workers: list[Child] = []
        for i in range(n):
            port = _free_sip_port(bind or "0.0.0.0", sip_taken)
            sip = (host, port)
            http = ("127.0.0.1", _free_tcp_port("127.0.0.1", http_taken))
            spec = {"index": i, "argv": args, "sip": (bind, port), "http": http,
                    "media_ports": media_share(cfg.media_ports, n, i),
                    "trunks": [f"{host}/{128 if ':' in host else 32}"]}
            env = dict(os.environ, RELAY_WORKER_SPEC=json.dumps(spec),
                       RELAY_WORKER_INDEX=str(i))
            self.workers.append(Child(f"worker {i}", [sys.executable, "-m",
                                                      "relay.cluster.worker"],
                                      env=env, http=http, sip=sip))
        exe, mpath = kamailio.find_kamailio()
        ds_list = self.rundir / "dispatcher.list"
        kamailio.write_list(ds_list, [w.sip for w in self.workers if w.sip])
        section = cfg.sections.workers
        ping = section.ping_interval
        children = section.kamailio_children
        config = Path(section.kamailio_config or kamailio.CONFIG)
        if not config.exists():
            raise kamailio.KamailioNotFound(
                f"{config} is missing: set [workers] kamailio_config to a copy of "
                "deploy/kamailio/relay-dispatcher.cfg")
        self.kamailio = Child("kamailio", kamailio.command(
            exe, mpath, self.rundir, cfg.sip, ds_list, cfg.trunks, ping_interval=ping,
            children=children, config=config))

    @property
    def children(self) -> list[Child]:
        return [*self.workers, self.kamailio]

    async def start(self, timeout: float = 90.0) -> None:
        """Workers one by one (each up before the next: they share files such as the
        recordings key), then Kamailio once it answers a keepalive."""
        async with aiohttp.ClientSession() as http:
            for w in self.workers:
                w.start()
                await self._await_worker(http, w, timeout)
        self.kamailio.start()
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, keepalive, self.cfg.sip):
            if not self.kamailio.up or time.monotonic() > deadline:
                raise RuntimeError("kamailio did not start (see its log lines above)")
            await asyncio.sleep(0.2)

    async def _await_worker(self, http: aiohttp.ClientSession, w: Child,
                            timeout: float) -> None:
        assert w.http is not None
        deadline = time.monotonic() + timeout
        url = f"http://{w.http[0]}:{w.http[1]}/healthz"
        while True:
            if not w.up:
                raise RuntimeError(f"{w.name} exited at start (status "
                                   f"{w.proc.returncode if w.proc else None})")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status in (200, 503):
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{w.name} did not start within {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def supervise(self) -> None:
        """Restart whatever exits, with a backoff for children that die young."""
        while not self.stopping:
            now = time.monotonic()
            for c in self.children:
                if c.proc is None or c.up:
                    continue
                if c.next_start == 0.0:
                    lived = now - c.started
                    c.fast_deaths = c.fast_deaths + 1 if lived < 10.0 else 0
                    delay = min(10.0, 0.25 * 2 ** c.fast_deaths) if c.fast_deaths else 0.0
                    c.next_start = now + delay
                    log.warning("%s (pid %s) exited with status %s: restarting in %.1f s",
                                c.name, c.proc.pid, c.proc.returncode, delay)
                if now >= c.next_start and not self.stopping:
                    c.next_start = 0.0
                    c.restarts += 1
                    c.start()
            await asyncio.sleep(0.1)

    async def stop(self, grace: float = 30.0) -> None:
        """Workers first (they drain while Kamailio still routes their in-dialog
        requests), then Kamailio; SIGKILL whatever outlives `grace`."""
        self.stopping = True
        for group in (self.workers, [self.kamailio]):
            for c in group:
                if c.up and c.proc is not None:
                    # A worker alone (its recording finishers must outlive its drain);
                    # Kamailio's main process with its children (its process group).
                    kill = os.kill if c in self.workers else os.killpg
                    with contextlib.suppress(ProcessLookupError):
                        kill(c.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while any(c.up for c in group) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for c in group:
                if c.up and c.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.proc.pid, signal.SIGKILL)
                    c.proc.wait()
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)


def keepalive(addr: tuple[str, int], timeout: float = 0.5) -> bool:
    """Whether the SIP listener at `addr` answers an OPTIONS to itself with 200."""
    host, port = addr
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((host, 0))
        me = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {host}:{me};branch=z9hG4bKka{me}{time.monotonic_ns()}\r\n"
                  "From: <sip:relay@relay.invalid>;tag=ka\r\nTo: <sip:relay.invalid>\r\n"
                  f"Call-ID: ka-{me}-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                  "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (host, port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


async def run_cluster(cfg: Config, argv: Sequence[str], n: int,
                      ready: Callable[[Cluster], None] | None = None) -> None:
    """`relay serve --workers N` until SIGINT or SIGTERM."""
    from .front import Front

    cluster = Cluster(cfg, argv, n)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    front = Front(cluster)
    try:
        await cluster.start()
        await front.start(cfg.http)
        if ready is not None:
            ready(cluster)
        task = asyncio.create_task(cluster.supervise(), name="supervise")
        await stop.wait()
        log.info("stopping the workers and kamailio")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await cluster.stop()
        await front.stop()
