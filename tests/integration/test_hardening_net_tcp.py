"""Issue 13 through `relay serve`: SIP over TCP under hostile connections.

Thousands of idle connections from one host neither stop calls nor the UDP OPTIONS
answers nor the HTTP API (the descriptor reserve); a source is capped; trunks only
when configured; a slowloris connection is closed at its deadline, an idle one at
the idle timeout, and a connection that keeps alive with CRLF pings stays. Sockets
on loopback only; several source addresses of 127/8 stand for several hosts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import stop_process
from sipp_harness import A, B, bind, callee, caller, calls, media_range, udp_port, write_config

pytestmark = pytest.mark.integration

#: The relay's descriptor limit in the crowd test, and what it keeps in reserve.
RELAY_NOFILE = 1024
RESERVE = 400
CROWD = 2000


class LimitedRelay:
    """`relay serve` started with RLIMIT_NOFILE soft = hard = `nofile` (so it cannot
    raise it), on free loopback ports."""

    def __init__(self, workdir: Path, args: list[str], nofile: int | None) -> None:
        self.http_port = _free(socket.SOCK_STREAM)
        self.sip_port = _free_both()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = workdir / "relay.log"
        workdir.mkdir(parents=True, exist_ok=True)
        pre = (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
               f"({nofile}, {nofile}))\n" if nofile else "")
        code = pre + ("import runpy, sys; sys.argv = ['relay', *sys.argv[1:]]; "
                      "runpy.run_module('relay', run_name='__main__')")
        cmd = [sys.executable, "-c", code, "serve", "--store",
               f"sqlite:///{workdir}/relay.db", "--http", f"127.0.0.1:{self.http_port}",
               "--sip", f"127.0.0.1:{self.sip_port}", *args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"relay did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc, grace=15.0)


def _free_both() -> int:
    """A port free for UDP and TCP alike (SIP listens on both)."""
    for _ in range(50):
        port = _free(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[Any]:
    started: list[LimitedRelay] = []

    def make(sip: dict[str, Any], *, trunk: str = "127.0.0.0/8",
             nofile: int | None = None) -> tuple[LimitedRelay, int]:
        out = udp_port()
        cfg = write_config(tmp_path / "cfg", sip)
        for attempt in range(3):  # a port drawn free may be bound by another process first
            try:
                name = f"relay{len(started)}" + (f"-retry{attempt}" if attempt else "")
                relay = LimitedRelay(tmp_path / name,
                                     ["--outbound", f"127.0.0.1:{out}", "--trunk", trunk,
                                      "--media-ports", media_range(), "--recordings",
                                      str(tmp_path / "rec"), "--log-level", "WARNING",
                                      "--config", str(cfg)], nofile)
                break
            except RuntimeError as exc:
                if "[Errno 98] Address already in use" not in str(exc) or attempt == 2:
                    raise
        started.append(relay)
        return relay, out

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room in this test process for the crowd of client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, CROWD + 2000) if hard != resource.RLIM_INFINITY else CROWD + 2000
    if soft < CROWD + 500:
        if want < CROWD + 500:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {CROWD} sockets")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_many(port: int, count: int, sources: list[str]) -> list[socket.socket]:
    """`count` connections, spread over `sources`, not waiting for each."""
    out: list[socket.socket] = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((sources[i % len(sources)], 0))
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        out.append(s)
    return out


def is_closed(s: socket.socket) -> bool | None:
    """True when the relay closed or reset it, False when open, None when undecided."""
    try:
        data = s.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False  # established (or still connecting) and nothing to read
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNREFUSED):
            return True
        if exc.errno in (errno.ENOTCONN, errno.EINPROGRESS):
            return None
        raise
    return data == b""


def settle(socks: list[socket.socket], timeout: float) -> tuple[int, int]:
    """(open, closed) once the count of closed ones stops changing for a second."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    closed = 0
    while time.monotonic() < deadline:
        states = [is_closed(s) for s in socks]
        closed = sum(1 for x in states if x)
        if closed != last:
            last, since = closed, time.monotonic()
        elif time.monotonic() - since > 1.5 and None not in states:
            break
        time.sleep(0.2)
    return len(socks) - closed, closed


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def options(port: int, n: int, transport: str = "UDP", host: str = "127.0.0.1") -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {host}:5060;branch=z9hG4bKtcp{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{host}>;tag=o{n}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: tcpopt{n}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()


def udp_options_answered(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(options(port, int(time.monotonic() * 1000)), ("127.0.0.1", port))
        return s.recv(65535).startswith(b"SIP/2.0 200")


def tcp_options(port: int, source: str = "127.0.0.1", n: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:
        s.sendall(options(port, n, "TCP", source))
        return s.recv(65535)


def test_a_crowd_of_idle_connections_does_not_stop_calls(start_relay: Any, many_fds: None,
                                                         tmp_path: Path) -> None:
    # Caps high enough that only the descriptor reserve holds the crowd back.
    relay, out = start_relay({"tcp_max_connections": 100_000, "tcp_max_per_source": 100_000,
                              "tcp_fd_reserve": RESERVE, "tcp_idle_seconds": 600,
                              "tcp_message_seconds": 600}, nofile=RELAY_NOFILE)
    bind(relay.base)
    crowd = connect_many(relay.sip_port, CROWD, [f"127.0.0.{i}" for i in range(2, 12)])
    try:
        # Every connection reached the relay (held or refused), then the clients agree.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = metrics(relay.base)
            if m["relay_sip_tcp_connections"] + m["relay_sip_tcp_refused_fds_total"] >= CROWD:
                break
            time.sleep(0.5)
        held, refused = settle(crowd, 90)
        fds = len(os.listdir(f"/proc/{relay.proc.pid}/fd"))
        print(f"\n{CROWD} idle connections: {held} held, {refused} refused; relay fds {fds}")
        assert held <= RELAY_NOFILE - RESERVE and held > 100
        assert refused >= CROWD - (RELAY_NOFILE - RESERVE)
        # With the crowd held: HTTP, UDP OPTIONS, a TCP OPTIONS and SIPp calls all work.
        with urllib.request.urlopen(relay.base + "/healthz", timeout=10) as r:
            assert r.status == 200
        assert udp_options_answered(relay.sip_port)
        uas = callee(tmp_path, out, number=B, extra=["-m", "3"])
        uac = caller(tmp_path, relay.sip_port, number=A,
                     extra=["-m", "3", "-r", "1", "-d", "500"])
        uas.start()
        uac.start()
        assert uac.wait(90) == 0, uac.tail()
        assert uas.wait(30) == 0, uas.tail()
        assert sorted(c["sip_code"] for c in calls(relay.base, want=3)) == [200, 200, 200]
        m = metrics(relay.base)
        assert m["relay_sip_tcp_refused_fds_total"] >= refused
        assert m["relay_sip_tcp_connections"] <= RELAY_NOFILE - RESERVE
    finally:
        for s in crowd:
            s.close()


def test_per_source_cap_and_trunks_only(start_relay: Any, tmp_path: Path) -> None:
    relay, _ = start_relay({"tcp_max_per_source": 20, "tcp_trunks_only": True},
                           trunk="127.0.0.1/32")
    mine = connect_many(relay.sip_port, 50, ["127.0.0.1"])
    try:
        held, refused = settle(mine, 60)
        assert (held, refused) == (20, 30)
        # An admitted connection is served; another source's own cap is untouched.
        keep = next(s for s in mine if is_closed(s) is False)
        keep.setblocking(True)
        keep.settimeout(10)
        keep.sendall(options(relay.sip_port, 7, "TCP"))
        assert keep.recv(65535).startswith(b"SIP/2.0 200")
    finally:
        for s in mine:
            s.close()
    # Not a trunk: refused at once, whatever it would send.
    stranger = connect_many(relay.sip_port, 3, ["127.0.0.5"])
    try:
        assert settle(stranger, 30) == (0, 3)
    finally:
        for s in stranger:
            s.close()
    m = metrics(relay.base)
    assert m["relay_sip_tcp_refused_source_total"] == 30
    assert m["relay_sip_tcp_refused_untrusted_total"] == 3


def test_slowloris_idle_and_keepalive(start_relay: Any, tmp_path: Path) -> None:
    relay, _ = start_relay({"tcp_message_seconds": 2, "tcp_idle_seconds": 4})
    port = relay.sip_port
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    quiet = socket.create_connection(("127.0.0.1", port), timeout=10)  # never a message
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    alive = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        idle.sendall(options(port, 1, "TCP"))
        assert idle.recv(65535).startswith(b"SIP/2.0 200")
        alive.sendall(options(port, 2, "TCP"))
        assert alive.recv(65535).startswith(b"SIP/2.0 200")
        # The slow client dribbles its header a byte every 0.3 s, never finishing.
        text = options(port, 3, "TCP")
        started = time.monotonic()
        slow_closed_at = quiet_closed_at = idle_closed_at = None
        for s in (slow, quiet, idle):
            s.setblocking(False)
        i = 0
        while time.monotonic() - started < 15 and (slow_closed_at is None
                                                   or idle_closed_at is None
                                                   or quiet_closed_at is None):
            now = time.monotonic() - started
            if slow_closed_at is None:
                try:
                    slow.send(text[i:i + 1])
                    i += 1
                except OSError:
                    slow_closed_at = now
                if slow_closed_at is None and is_closed(slow):
                    slow_closed_at = now
            if quiet_closed_at is None and is_closed(quiet):
                quiet_closed_at = now
            if idle_closed_at is None and is_closed(idle):
                idle_closed_at = now
            if int(now * 10) % 10 == 0:
                alive.sendall(b"\r\n\r\n")  # RFC 5626 keepalive: about once a second
            time.sleep(0.3)
        print(f"\nslowloris closed after {slow_closed_at} s, no-message after "
              f"{quiet_closed_at} s, idle after {idle_closed_at} s")
        assert slow_closed_at is not None and 1.5 <= slow_closed_at <= 8
        assert i < len(text)  # it never got its message through
        assert quiet_closed_at is not None and quiet_closed_at <= 8
        assert idle_closed_at is not None and 3 <= idle_closed_at <= 10
        # The connection that kept alive is still served.
        alive.settimeout(10)
        alive.sendall(options(port, 4, "TCP"))
        data = b""
        while b"SIP/2.0 200" not in data:
            chunk = alive.recv(65535)
            assert chunk, "the keepalive connection was closed"
            data += chunk
    finally:
        for s in (slow, quiet, idle, alive):
            s.close()
    m = metrics(relay.base)
    assert m["relay_sip_tcp_closed_slow_total"] >= 2
    assert m["relay_sip_tcp_closed_idle_total"] >= 1
