"""SIPp peers around a `relay serve` child: the caller (UAC) and the outbound trunk (UAS).

Every SIPp runs with -trace_msg, so a test can read every message each peer received
and assert that nothing of the other side reached it (DESIGN.md privacy rule).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import pytest
from procs import stop_process

SCENARIOS = Path(__file__).resolve().parents[1] / "flows" / "sipp"
X = "+8617055556666"
A = "+8613811112222"
B = "+8613933334444"


def udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SIPP_BASES: set[int] = set()


def sipp_media_port() -> int:
    """A base for SIPp's `-mp`: it binds audio RTP and RTCP there and video at +2 and +3,
    so all four must be free (two SIPps on neighbouring ephemeral ports collided). Bases
    are multiples of 4 never handed out twice in this process: two SIPps made before
    either starts would otherwise both find the same ports free."""
    for _ in range(100):
        base = int(media_range(4, 40000, 60000).split("-")[0]) & ~3
        if base not in _SIPP_BASES and _free_block(base, 4):
            _SIPP_BASES.add(base)
            return base
    raise RuntimeError("no free block of 4 UDP ports for SIPp's media")


def _free_block(base: int, width: int) -> bool:
    held: list[socket.socket] = []
    try:
        for port in range(base, base + width):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        for s in held:
            s.close()
    return True


def media_range(width: int = 300, low: int = 20000, high: int = 60000) -> str:
    """A random media port range that is wholly bindable now.

    Several suites share this machine: drawing among many narrow ranges and probing each
    keeps a relay from starting on a range another relay already fills (503, "no bindable
    port pair"). Tests place a few dozen calls at most; 300 ports is 75 recorded calls.
    """
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(low, high - width, 2)
        if _free_block(base, width):
            return f"{base}-{base + width - 1}"
    raise RuntimeError(f"no free media port range in {low}-{high}")


def _bound_ports() -> set[int]:
    """Local ports of this machine's IPv4 UDP and TCP sockets (/proc/net/udp, tcp)."""
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/tcp"):
        with open(table) as f:
            next(f)
            for line in f:
                ports.add(int(line.split(None, 2)[1].rsplit(":", 1)[1], 16))
    return ports


def need_sipp() -> str:
    exe = shutil.which("sipp")
    if exe is None:
        pytest.skip("sipp is not installed")
    return exe


class Sipp:
    """One SIPp process (caller or callee) with its message trace.

    A callee (`listens`) is started only once it listens: `start` returns when SIPp
    has bound its SIP and media ports (some 20 ms; longer on a loaded machine), so a
    caller started next never sends to a port nobody holds yet."""

    def __init__(self, workdir: Path, name: str, scenario: Path, args: list[str],
                 port: int | None = None, *, listens: bool = False) -> None:
        self.name = name
        self.listens = listens
        self.port = port or udp_port()
        self.media_port = sipp_media_port()
        self.trace = workdir / f"{name}.msg"
        self.errors = workdir / f"{name}.err"
        self.out = workdir / f"{name}.out"
        self.args = [need_sipp(), "-sf", str(scenario), "-i", "127.0.0.1",
                     "-p", str(self.port), "-mp", str(self.media_port),
                     "-trace_msg", "-message_file", str(self.trace),
                     "-trace_err", "-error_file", str(self.errors), "-nostdin",
                     "-cid_str", f"{name}secret-%u-%p@%s", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sipp:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        if self.listens:
            self._wait_bound()
        return self

    def _wait_bound(self, timeout: float = 10.0) -> None:
        """Until the SIP port (UDP, or TCP with -t) and the media port are bound, or
        SIPp has exited (its wait() then says why)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            held = _bound_ports()
            if self.port in held and self.media_port in held:
                return
            time.sleep(0.01)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            raise AssertionError(f"{self.name} did not finish: {self.tail()}") from None

    def stop(self) -> None:
        stop_process(self.proc)

    def tail(self) -> str:
        err = self.errors.read_text(errors="replace")[-3000:] if self.errors.exists() else ""
        return f"errors: {err}"

    def received(self) -> list[str]:
        """Every message this SIPp received, as text."""
        if not self.trace.exists():
            return []
        return self._messages("received")

    def sent(self) -> list[str]:
        """Every message this SIPp sent, as text."""
        if not self.trace.exists():
            return []
        return self._messages("sent")

    def _messages(self, way: str) -> list[str]:
        # SIPp's -trace_msg blocks start "UDP message sent" or "TCP message received"...
        text = self.trace.read_text(errors="replace")
        parts = re.split(r"-{20,} [^\n]*\n", text)
        return [p.split(":\n", 1)[1].strip() for p in parts
                if p[:3] in ("UDP", "TCP") and p[4:].startswith(f"message {way}")
                and ":\n" in p]


def caller(workdir: Path, relay_port: int, scenario: str = "uac.xml", *,
           number: str = A, x: str = X, extra: list[str] | None = None,
           scenario_path: Path | None = None, name: str = "caller") -> Sipp:
    """The calling trunk (SIPp UAC) dialling X as `number`."""
    path = scenario_path or SCENARIOS / scenario
    return Sipp(workdir, name, path,
                [f"127.0.0.1:{relay_port}", "-s", x, "-key", "caller", number,
                 "-timeout", "60s", "-timeout_error", *(extra or [])])


def callee(workdir: Path, port: int, scenario: str = "uas.xml", *, number: str = B,
           extra: list[str] | None = None, name: str = "callee") -> Sipp:
    """The outbound trunk (SIPp UAS on `port`) answering as `number`."""
    return Sipp(workdir, name, SCENARIOS / scenario,
                ["-key", "callee", number, "-timeout", "90s", *(extra or [])], port,
                listens=True)


def refused_scenario(workdir: Path, code: int, max_forwards: int = 70) -> Path:
    """uac_refused.xml.in with the expected status filled in."""
    text = (SCENARIOS / "uac_refused.xml.in").read_text()
    path = workdir / f"uac_refused_{code}_{max_forwards}.xml"
    path.write_text(text.replace("@CODE@", str(code)).replace("@MF@", str(max_forwards)))
    return path


def api(base: str, method: str, path: str, body: Any = None,
        token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def bind(base: str, x: str = X, a: str = A, b: str = B, mode: str = "AXB",
         token: str | None = None, **extra: Any) -> dict[str, Any]:
    """Put X in the pool and bind it (A, B)."""
    api(base, "POST", "/v1/numbers", {"numbers": [x]}, token)
    body = {"mode": mode, "b": b, "x": x, "ttl": 3600, **extra}
    if a is not None:
        body["a"] = a
    return dict(api(base, "POST", "/v1/bindings", body, token))


def ms(iso: str) -> int:
    """An API time (ISO 8601 UTC with ms) as epoch milliseconds, for arithmetic."""
    from datetime import datetime

    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def calls(base: str, query: str = "", token: str | None = None, want: int = 1,
          timeout: float = 10.0) -> list[dict[str, Any]]:
    """Poll /v1/calls until `want` records are there (the writer batches)."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    pause = 0.05  # records land 50-200 ms after a call's end: look soon, then every 0.2 s
    while time.monotonic() < deadline:
        found = api(base, "GET", "/v1/calls" + query, token=token)["calls"]
        if len(found) >= want:
            return found
        time.sleep(pause)
        pause = min(0.2, pause * 2)
    return found


def relay_args(outbound_port: int, workdir: Path, *more: str) -> list[str]:
    return ["--outbound", f"127.0.0.1:{outbound_port}", "--trunk", "127.0.0.0/8",
            "--media-ports", media_range(), "--recordings", str(workdir / "rec"),
            "--log-level", "WARNING", *more]


def write_config(workdir: Path, sip: dict[str, Any], **sections: dict[str, Any]) -> Path:
    """A relay.toml with a [sip] section and any others (tunables that have no flag)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for name, values in {"sip": sip, **sections}.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}" if not isinstance(v, bool)
                         else f"{k} = {'true' if v else 'false'}")
    path = workdir / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Peer(Protocol):
    """What the privacy check needs of a peer: its SIP and RTP ports (a SIPp or a softphone)."""

    @property
    def port(self) -> int: ...

    @property
    def media_port(self) -> int: ...


def assert_private(to_caller: list[str], to_callee: list[str], caller_peer: Peer,
                   callee_peer: Peer, a: str = A, b: str = B) -> None:
    """Nothing of one side in any message the relay sent to the other side."""
    assert to_caller and to_callee
    a_digits, b_digits = a.lstrip("+"), b.lstrip("+")
    for msg in to_callee:
        low = msg.lower()
        assert a_digits[-8:] not in msg, msg
        assert "callersecret" not in low, msg  # User-Agent, Call-ID, SDP o=/s=, X- header
        assert "callertag" not in low, msg
        assert f":{caller_peer.port}" not in msg, msg
        assert not re.search(rf"\b{caller_peer.media_port}\b", msg), msg
        assert "caller-proxy" not in low and "caller secret" not in low, msg
    for msg in to_caller:
        low = msg.lower()
        assert b_digits[-8:] not in msg, msg
        assert "calleesecret" not in low, msg
        assert "calleetag" not in low, msg
        assert f":{callee_peer.port}" not in msg, msg
        assert not re.search(rf"\b{callee_peer.media_port}\b", msg), msg
        assert "callee-proxy" not in low, msg
