"""AXE between two real softphones through `relay serve` (issue 9): baresip (Debian
baresip-core 1.0) dials X without an extension, is answered by the relay, hears the
prompt and keys the extension as RFC 4733 telephone-events; a second baresip (auto
answer) on the outbound trunk is B. Each phone plays a known tone and hears the other's.

The digits: baresip's `menu` module has the `sndcode` command ("Send Code"), which
calls `call_send_digit` for each character and then the key release, so one
`sndcode` per digit gives one RFC 4733 event (start, then end) per digit. The command
goes in over `ctrl_tcp` (netstring-framed JSON `{"command", "params", "token"}`) once
the phone reports CALL_ESTABLISHED on the same connection: a `-e` command would run at
start-up, before there is a call.

The phones are test_softphones.Softphone (headless: aufile source, aubridge player,
sndfile dumps, G.711 only, 127.0.0.1) with ctrl_tcp added. B's ctrl_tcp events show
that no digit reached it (CALL_DTMF_START; baresip 1.0 logs no line for an RFC 4733
digit it receives).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from audio_check import goertzel, read_wav, write_tone_wav
from sipp_harness import A, B, X, assert_private, bind, calls, ms, relay_args
from test_softphones import Softphone, sip_port, tone_ms

pytestmark = pytest.mark.integration

EXT, OTHER_EXT, OTHER_B = "1234", "5678", "+8613900007777"
CALLER_HZ, CALLEE_HZ = 440.0, 1000.0
KEY_AFTER_S = 1.5  # the caller starts keying this long into the prompt (barge-in)
DIGIT_GAP_S = 0.3  # between one digit's end and the next one's start
CALLER_TALK_S = 12.0  # the caller's WAV: aufile hangs up at its end (IVR, ringing, talk)


class Netstring:
    """A ctrl_tcp connection: netstring-framed JSON both ways (commands out; responses
    and events in)."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, command: str, params: str = "", token: str = "t") -> None:
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))

    def recv(self) -> dict[str, Any]:
        """The next message (a response or an event)."""
        while True:
            head, colon, rest = self.buf.partition(b":")
            if colon and len(rest) > int(head):
                n = int(head)
                msg, self.buf = rest[:n], rest[n + 1:]
                return dict(json.loads(msg))
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("ctrl_tcp closed")
            self.buf += data

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """Skip messages until an event of `kind` (CALL_ESTABLISHED, ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv()
            if msg.get("event") and msg.get("type") == kind:
                return msg
        raise AssertionError(f"no {kind} event")

    def command(self, command: str, params: str = "") -> dict[str, Any]:
        """Send a command and return its response (events before it are skipped)."""
        self.send(command, params)
        while True:
            msg = self.recv()
            if msg.get("response"):
                return msg

    def close(self) -> None:
        self.sock.close()


class EventLog(threading.Thread):
    """Every event a phone reports on its own ctrl_tcp connection, until it exits."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = Netstring(port)
        self.conn.sock.settimeout(None)
        self.events: list[dict[str, Any]] = []

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # ConnectionError at the phone's exit
            while True:
                msg = self.conn.recv()
                if msg.get("event"):
                    self.events.append(msg)

    def types(self) -> list[str]:
        self.join(5)
        return [str(e.get("type")) for e in self.events]


class ControlledPhone(Softphone):
    """A Softphone with baresip's ctrl_tcp on a free port (`ctrl`)."""

    ctrl = 0

    def _configure(self) -> None:
        super()._configure()
        self.ctrl = sip_port()
        with open(self.dir / "config", "a") as f:
            f.write(f"module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{self.ctrl}\n")


def test_baresip_keys_the_extension_and_the_phones_hear_each_other(
        relay_factory: Any, tmp_path: Path) -> None:
    callee = ControlledPhone(tmp_path, "callee", B,
                       write_tone_wav(tmp_path / "talk-1000.wav", CALLEE_HZ, 30.0))
    caller = ControlledPhone(tmp_path, "caller", A,
                         write_tone_wav(tmp_path / "talk-440.wav", CALLER_HZ, CALLER_TALK_S))
    if not (caller.modules / "ctrl_tcp.so").exists():
        pytest.skip("baresip's ctrl_tcp module is not installed")
    try:
        callee.start()  # first: its port is the relay's outbound trunk
        heard_by_callee = EventLog(callee.ctrl)
        heard_by_callee.start()
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                              relay_args(callee.port, tmp_path))
        caller.relay = callee.relay = relay_sip = f"127.0.0.1:{relay.sip_port}"
        no_a: Any = None  # AXE: anyone may call X
        binding = bind(relay.base, a=no_a, mode="AXE", ext=EXT, record=True)
        bind(relay.base, a=no_a, b=OTHER_B, mode="AXE", ext=OTHER_EXT)
        caller.start()
        ctrl = Netstring(caller.ctrl)
        try:
            assert ctrl.command("dial", f"sip:{X}@{relay_sip}").get("ok"), caller.tail()
            ctrl.wait_event("CALL_ESTABLISHED", 10)  # the relay's own 200
            time.sleep(KEY_AFTER_S)
            for digit in f"{EXT}#":
                assert ctrl.command("sndcode", digit).get("ok"), caller.tail()
                time.sleep(DIGIT_GAP_S)
        finally:
            ctrl.close()
        found = calls(relay.base, want=1, timeout=CALLER_TALK_S + 10)
    finally:
        caller.stop()
        callee.stop()
    assert found, f"no call record\ncaller: {caller.tail()}\ncallee: {callee.tail()}"
    rec = found[0]
    assert (rec["binding"], rec["callee"], rec["ext"], rec["sip_code"]) == (
        binding["id"], B, EXT, 200), f"{rec}\ncaller: {caller.tail()}"
    assert rec["ivr_start_at"] < rec["ivr_end_at"] <= rec["legs"]["callee"]["invite_at"]
    assert rec["released_by"] == "caller", rec  # at the end of its WAV

    # The digits went as RFC 4733 (baresip logs each), never as SIP INFO.
    log = caller.log.read_text(errors="replace")
    sent = re.findall(r"send DTMF digit: '(.)'", log)
    assert "".join(sent) == f"{EXT}#", sent
    assert not any(m.startswith("INFO ") for m in caller.sent())
    # ...and stayed with the relay: B reports every digit it receives as CALL_DTMF_START
    # (seen on a direct call between two such phones).
    events = heard_by_callee.types()
    assert "CALL_ESTABLISHED" in events and "CALL_DTMF_START" not in events, events
    invite = next(m for m in callee.received() if m.startswith("INVITE "))
    assert invite.startswith(f"INVITE sip:{B}@") and re.search(
        rf"^From: *<sip:{re.escape(X)}@", invite, re.M), invite
    assert_private(caller.received(), callee.received(), caller, callee,
                   a=A, b=B)

    # Each phone heard the other's tone once bridged: at least 2 s of it. The callee
    # never heard its own tone (nor the prompt or the caller's digits).
    talk_ms = ms(rec["legs"]["callee"]["end_at"]) - ms(rec["legs"]["callee"]["answer_at"])
    for phone, theirs, mine in ((caller, CALLEE_HZ, CALLER_HZ),
                                (callee, CALLER_HZ, CALLEE_HZ)):
        xs, channels = read_wav(phone.heard())
        assert channels == 1
        heard_ms = tone_ms(xs, theirs, mine)
        assert 2000 <= heard_ms <= talk_ms + 300, (phone.name, heard_ms, talk_ms)
    xs, _ = read_wav(callee.heard())
    assert goertzel(xs, CALLER_HZ) > 1000 * goertzel(xs, CALLEE_HZ)
