"""A real Kamailio as a record-routing proxy in front of the relay, on both legs (issue 18).

:class:`KamailioProxy` renders ``kamailio/relay-proxy.cfg`` with free loopback ports and
starts Kamailio in the foreground (``-DD -E``) as a child process in its own session,
with its runtime directory (RPC FIFO) under the test's folder; :meth:`KamailioProxy.stop`
ends that process group. Topology::

    SIPp caller -> :caller_port  Kamailio -> relay --sip
    relay --outbound -> :callee_port  Kamailio -> SIPp callee

Every request and reply Kamailio handles leaves one ``KAMLOG`` line on its stderr,
which the tests read (:meth:`KamailioProxy.lines`).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sipp_harness import media_range, udp_port

CONFIG = Path(__file__).resolve().parent / "kamailio" / "relay-proxy.cfg"
# Debian and Ubuntu put the modules under the multiarch triplet; others under lib or lib64.
_MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules",
                "/usr/lib64/kamailio/modules", "/usr/local/lib64/kamailio/modules",
                "/usr/local/lib/kamailio/modules")


def need_kamailio() -> tuple[str, str]:
    """The kamailio executable and its module directory, or skip the test."""
    exe = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.skip("kamailio is not installed (test.sh installs it when run as root)")
    for pattern in _MODULE_DIRS:
        for path in sorted(glob.glob(pattern)):
            if os.path.exists(os.path.join(path, "tm.so")):
                return exe, path
    pytest.skip("kamailio's modules (tm.so) were not found")


def quiet_media_range(width: int = 200) -> str:
    """A media port range that is wholly bindable now, below the ephemeral ports."""
    return media_range(width, 20000, 32000)


class KamailioProxy:
    """One Kamailio child: ``caller_port`` faces the caller, ``callee_port`` the relay."""

    def __init__(self, workdir: Path) -> None:
        self.exe, self.mpath = need_kamailio()
        self.workdir = workdir / "kamailio"
        self.caller_port = udp_port()
        self.callee_port = udp_port()
        while self.callee_port == self.caller_port:
            self.callee_port = udp_port()
        self.log = self.workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, relay_port: int, callee_port: int, timeout: float = 15.0) -> KamailioProxy:
        """Render the configuration for the relay and callee ports, start, await both
        listeners (each answers an OPTIONS keepalive)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = CONFIG.read_text()
        for key, value in {"CALLER_PORT": str(self.caller_port),
                           "CALLEE_PORT": str(self.callee_port),
                           "RELAY": f"127.0.0.1:{relay_port}",
                           "CALLEE": f"127.0.0.1:{callee_port}",
                           "MPATH": self.mpath, "RUNDIR": str(self.workdir)}.items():
            text = text.replace(f"@{key}@", value)
        cfg = self.workdir / "relay-proxy.cfg"
        cfg.write_text(text)
        with open(self.log, "ab") as log:
            # -DD: no daemon, children kept; -E: log to stderr; -Y: our runtime dir.
            self.proc = subprocess.Popen(
                [self.exe, "-f", str(cfg), "-DD", "-E", "-Y", str(self.workdir),
                 "-m", "64", "-M", "8", "-w", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        for port in (self.caller_port, self.callee_port):
            while not self._keepalive(port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"kamailio did not start: {self.tail()}")
                time.sleep(0.1)
        return self

    @staticmethod
    def _keepalive(port: int) -> bool:
        """Whether the listener on ``port`` answers an OPTIONS with 200."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()[1]
            s.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKkam{me}\r\n"
                      "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\n"
                      f"Call-ID: probe-{me}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
            try:
                return s.recv(4096).startswith(b"SIP/2.0 200")
            except OSError:
                return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to Kamailio's own process group (main and children), SIGKILL later."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM if proc.poll() is None else signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def lines(self) -> list[str]:
        """The script's log lines (``xlog`` in relay-proxy.cfg), oldest first."""
        if not self.log.exists():
            return []
        return [line.split("<script>: ", 1)[1] for line in
                self.log.read_text(errors="replace").splitlines() if "<script>: " in line]

    def tail(self) -> str:
        """The end of Kamailio's log, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
