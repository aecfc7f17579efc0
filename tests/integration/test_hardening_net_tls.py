"""Issue 13 through `relay serve`: SIP over TLS (`--sip-tls`, `[sip] tls_cert` and
`tls_key`, TLS 1.2 or later) with the same connection caps as TCP.

The certificate is made here with the `openssl` command. A SIPp built with TLS
(`-t l1`: the `sipp` on PATH if it has it, or the one `RELAY_SIPP_TLS` names, e.g.
built with `cmake -DUSE_SSL=1`) calls over TLS directly; the Debian SIPp has no TLS,
so otherwise the SIPp caller speaks TCP to a `socat` bridge that opens a TLS
connection to the relay (the relay only ever sees TLS). A Python `ssl` client checks
the protocol versions directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import A, B, X, bind, callee, caller, calls, relay_args, udp_port, write_config

pytestmark = pytest.mark.integration


def tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    key, crt = tmp_path / "sip.key", tmp_path / "sip.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1",
                    "-subj", "/CN=relay.test", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


def start(relay_factory: Any, tmp_path: Path, cert: tuple[Path, Path],
          sip: dict[str, Any] | None = None) -> tuple[Any, int, int]:
    out = udp_port()
    tls = tcp_port()
    cfg = write_config(tmp_path / "cfg", {"tls_cert": str(cert[0]), "tls_key": str(cert[1]),
                                          **(sip or {})})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(cfg),
                                     "--sip-tls", f"127.0.0.1:{tls}"))
    return relay, tls, out


def client_context(cafile: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = maximum
    return ctx


def options(n: int) -> bytes:
    return (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sips:probe@127.0.0.1>;tag=t{n}\r\nTo: <sips:127.0.0.1>\r\n"
            f"Call-ID: tls{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()


def test_options_over_tls_and_old_protocols_refused(relay_factory: Any, tmp_path: Path,
                                                    cert: tuple[Path, Path]) -> None:
    _relay, tls, _ = start(relay_factory, tmp_path, cert, {"tcp_max_per_source": 3})
    ctx = client_context(cert[0])  # verifies the relay's certificate and name
    with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        s.sendall(options(1))
        assert s.recv(65535).startswith(b"SIP/2.0 200")
    # Exactly TLS 1.2 is taken; TLS 1.1 (and older) is refused in the handshake (where
    # this OpenSSL can still offer it at all: its security level may forbid it).
    with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw, \
            client_context(cert[0], ssl.TLSVersion.TLSv1_2).wrap_socket(
                raw, server_hostname="127.0.0.1") as s12:
        assert s12.version() == "TLSv1.2"
        s12.sendall(options(5))
        assert s12.recv(65535).startswith(b"SIP/2.0 200")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = client_context(cert[0], ssl.TLSVersion.TLSv1_1)
    except (ValueError, ssl.SSLError):
        old = None  # this OpenSSL cannot even offer it: nothing to try
    if old is not None:
        with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw, \
                pytest.raises((ssl.SSLError, ConnectionResetError)):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    # Plain SIP on the TLS port gets nothing back (not a handshake).
    with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
        raw.sendall(options(2))
        try:
            got = raw.recv(65535)
        except (TimeoutError, ConnectionResetError):
            got = b""
        assert not got.startswith(b"SIP/2.0")
    # The TCP caps hold on TLS too: a fourth connection from one source is refused.
    held = []
    try:
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", tls), timeout=10)
            held.append(ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
        time.sleep(0.5)
        raw = socket.create_connection(("127.0.0.1", tls), timeout=10)
        extra = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        held.append(extra)
        try:
            extra.sendall(options(3))
            refused = extra.recv(65535) == b""
        except (ssl.SSLError, OSError):
            refused = True
        assert refused
        held[0].sendall(options(4))
        assert held[0].recv(65535).startswith(b"SIP/2.0 200")
    finally:
        for s in held:
            s.close()


def tls_sipp() -> str | None:
    """A SIPp that speaks TLS (`-t l1`), or None."""
    for exe in (os.environ.get("RELAY_SIPP_TLS"), shutil.which("sipp")):
        if exe and os.access(exe, os.X_OK):
            out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=30)
            if "l1: TLS" in out.stdout + out.stderr:
                return exe
    return None


def test_a_sipp_call_over_tls_directly(relay_factory: Any, tmp_path: Path,
                                       cert: tuple[Path, Path]) -> None:
    exe = tls_sipp()
    if exe is None:
        pytest.skip("no SIPp with TLS here (set RELAY_SIPP_TLS; the bridge test covers it)")
    relay, tls, out = start(relay_factory, tmp_path, cert)
    bind(relay.base)
    uas = callee(tmp_path, out, number=B, extra=["-m", "2"])
    uac = caller(tmp_path, tls, number=A, x=X,
                 extra=["-t", "l1", "-tls_cert", str(cert[0]), "-tls_key", str(cert[1]),
                        "-tls_version", "1.2", "-m", "2", "-d", "500"])
    uac.args[0] = exe
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(30) == 0, uas.tail()
    assert sorted(c["sip_code"] for c in calls(relay.base, want=2)) == [200, 200]
    trace = uac.trace.read_text(errors="replace")
    assert "TLS message received" in trace and "SIP/2.0 200 OK" in trace


def test_a_sipp_call_over_tls_through_a_bridge(relay_factory: Any, tmp_path: Path,
                                               cert: tuple[Path, Path]) -> None:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed (the TLS bridge for this SIPp)")
    relay, tls, out = start(relay_factory, tmp_path, cert)
    bind(relay.base)
    bridge = tcp_port()
    proc = subprocess.Popen(
        [socat, f"TCP-LISTEN:{bridge},bind=127.0.0.1,reuseaddr,fork",
         f"OPENSSL:127.0.0.1:{tls},cafile={cert[0]},verify=1,commonname=relay.test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", bridge), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        uas = callee(tmp_path, out, number=B, extra=["-m", "2"])
        uac = caller(tmp_path, bridge, number=A, x=X,
                     extra=["-t", "t1", "-m", "2", "-d", "500", "-max_socket", "10"])
        uas.start()
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(30) == 0, uas.tail()
        found = calls(relay.base, want=2)
        assert sorted(c["sip_code"] for c in found) == [200, 200]
        assert any(m.startswith("SIP/2.0 200") for m in uac.received())
    finally:
        # socat and its per-connection children: the session this test started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
