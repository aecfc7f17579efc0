"""End to end: SIPp caller -> `relay serve` -> SIPp callee on loopback.

Each test starts its own relay (SQLite store, outbound trunk = the callee SIPp) and
checks what each SIPp received: the call flow, the codes, and that nothing of one
party reached the other.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import (
    A,
    B,
    X,
    api,
    assert_private,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
    write_config,
)

pytestmark = pytest.mark.integration


def _relay(relay_factory: Any, tmp_path: Path, outbound: int, *more: str) -> Any:
    return relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(outbound, tmp_path, *more))


def _run(uas: Any, uac: Any, timeout: float = 60) -> None:
    uas.start()
    uac.start()
    rc = uac.wait(timeout)
    assert rc == 0, f"caller rc={rc} {uac.tail()}"
    rc = uas.wait(timeout)
    assert rc == 0, f"callee rc={rc} {uas.tail()}"


def test_bridged_call_both_directions_is_private_and_recorded(relay_factory: Any,
                                                                tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    binding = bind(relay.base, out_id="order-42")
    # A calls X and reaches B.
    uas = callee(tmp_path, out, number=B, name="callee1", extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, number=A, extra=["-m", "1", "-d", "300"],
                 name="caller1")
    _run(uas, uac)
    assert_private(uac.received(), uas.received(), uac, uas, A, B)
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert invite.startswith(f"INVITE sip:{B}@")
    assert f"From: <sip:{X}@" in invite and f"P-Asserted-Identity: <sip:{X}@" in invite
    # B calls X back and reaches A (AXB both directions).
    uas2 = callee(tmp_path, out, number=A, name="callee2", extra=["-m", "1"])
    uac2 = caller(tmp_path, relay.sip_port, number=B, extra=["-m", "1", "-d", "300"],
                  name="caller2")
    _run(uas2, uac2)
    assert_private(uac2.received(), uas2.received(), uac2, uas2, B, A)
    assert next(m for m in uas2.received() if m.startswith("INVITE")).startswith(
        f"INVITE sip:{A}@")

    found = calls(relay.base, f"?binding={binding['id']}", want=2)
    assert len(found) == 2
    back, first = found  # newest first
    assert first["direction"] == "a_to_b" and back["direction"] == "b_to_a"
    assert first["caller"] == A and first["callee"] == B and first["x"] == X
    assert first["out_id"] == "order-42"
    assert first["sip_code"] == 200 and first["released_by"] == "caller"
    assert first["unconnected_cause"] == "none"
    for leg in ("caller", "callee"):
        t = first["legs"][leg]
        assert t["invite_at"] <= t["answer_at"] <= t["end_at"]
        assert t["sip_code"] == 200
    assert first["duration_ms"] >= 250
    assert set(first["recording"]) == {"caller", "callee", "mix"}
    one = api(relay.base, "GET", f"/v1/calls/{first['id']}")
    assert one["id"] == first["id"]


def test_call_from_a_tcp_trunk(relay_factory: Any, tmp_path: Path) -> None:
    """RFC 3261 §18: the caller's trunk speaks TCP (responses and the BYE's 200 go back on
    its connection); the relay places the callee leg over UDP as configured."""
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uas = callee(tmp_path, out, name="callee-udp", extra=["-m", "3"])
    uac = caller(tmp_path, relay.sip_port, name="caller-tcp",
                 extra=["-t", "t1", "-m", "3", "-d", "200"])
    _run(uas, uac)
    to_caller, to_callee = uac.received(), uas.received()
    assert_private(to_caller, to_callee, uac, uas, A, B)
    assert sum(m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m for m in to_caller) == 3
    assert all("Via: SIP/2.0/TCP" in m for m in to_caller if m.startswith("SIP/2.0"))
    invites = [m for m in to_callee if m.startswith("INVITE")]
    assert len(invites) == 3 and all("Via: SIP/2.0/UDP" in m for m in invites)
    found = calls(relay.base, want=3)
    assert [c["sip_code"] for c in found] == [200, 200, 200]
    assert {c["released_by"] for c in found} == {"caller"}


def test_refusals_on_the_wire(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    frozen = bind(relay.base, x="+8617000000002")
    api(relay.base, "POST", f"/v1/bindings/{frozen['id']}/freeze")
    cases = [  # (X dialled, caller, expected code, Max-Forwards)
        ("+8617000000099", A, 404, 70),  # unknown X
        ("+8617000000002", A, 410, 70),  # frozen
        (X, "+8613700000077", 403, 70),  # stranger
        (X, "anonymous", 403, 70),  # unparsable caller = stranger
        (X, A, 483, 0),  # Max-Forwards exhausted
    ]
    for i, (x, who, code, mf) in enumerate(cases):
        uac = caller(tmp_path, relay.sip_port, number=who, x=x,
                     scenario_path=refused_scenario(tmp_path, code, mf),
                     extra=["-m", "1"], name=f"refused{i}")
        uac.start()
        assert uac.wait(30) == 0, f"{code}: {uac.tail()}"
        final = [m for m in uac.received() if m.startswith(f"SIP/2.0 {code}")]
        assert final, code
        if code == 404:
            assert "Reason: Q.850;cause=1" in final[0]
    # OPTIONS keepalive and a malformed request, from a raw socket.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        opts = (f"OPTIONS sip:{X}@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKopt1\r\n"
                "From: <sip:ping@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
                "Call-ID: opt1@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n")
        s.sendto(opts.encode(), ("127.0.0.1", relay.sip_port))
        assert s.recv(4096).startswith(b"SIP/2.0 200")
        bad = opts.replace("branch=z9hG4bKopt1", "branch=z9hG4bKopt2").replace(
            "CSeq: 1 OPTIONS", "CSeq: one OPTIONS")
        s.sendto(bad.encode(), ("127.0.0.1", relay.sip_port))
        assert s.recv(4096).startswith(b"SIP/2.0 400")
    # The same OPTIONS over TCP (RFC 3261 §18.3 framing), when the TCP port was free.
    try:
        t = socket.create_connection(("127.0.0.1", relay.sip_port), timeout=5)
    except OSError:
        pass
    else:
        with t:
            t.sendall(opts.replace("UDP", "TCP").replace("z9hG4bKopt1", "z9hG4bKtcp").encode())
            assert t.recv(4096).startswith(b"SIP/2.0 200")
    found = calls(relay.base, want=len(cases))
    causes = sorted(r["unconnected_cause"] for r in found)
    assert causes == sorted(["no_binding", "frozen", "stranger", "stranger", "error"])


def test_untrusted_source_gets_403_and_no_lookup(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          ["--outbound", f"127.0.0.1:{out}", "--trunk", "192.0.2.0/24",
                           "--log-level", "WARNING"])
    bind(relay.base)
    uac = caller(tmp_path, relay.sip_port, scenario_path=refused_scenario(tmp_path, 403),
                 extra=["-m", "1"])
    uac.start()
    assert uac.wait(30) == 0, uac.tail()
    metrics = _metrics(relay.base)
    assert "relay_sip_untrusted_total 1" in metrics
    assert "relay_sip_invites_total 0" in metrics  # never reached routing
    assert calls(relay.base)[0]["unconnected_cause"] == "untrusted"


def _metrics(base: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        return r.read().decode()


def _pair(tmp_path: Path, relay: Any, out: int, uac_scn: str, uas_scn: str,
          uac_extra: list[str] | None = None, uas_extra: list[str] | None = None
          ) -> tuple[Any, Any]:
    uas = callee(tmp_path, out, uas_scn, extra=uas_extra)
    uac = caller(tmp_path, relay.sip_port, uac_scn, extra=uac_extra)
    return uac, uas


def test_caller_cancel(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_cancel.xml", "uas_ring.xml",
                     ["-m", "1"], ["-m", "1"])
    _run(uas, uac)
    assert any(m.startswith("CANCEL") for m in uas.received())
    assert_private(uac.received(), uas.received(), uac, uas)
    rec = calls(relay.base)[0]
    assert rec["sip_code"] == 487 and rec["released_by"] == "caller"
    assert rec["legs"]["callee"]["sip_code"] == 487


def test_callee_busy(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "", "uas_busy.xml", ["-m", "1"], ["-m", "1"])
    uac.args[uac.args.index("-sf") + 1] = str(refused_scenario(tmp_path, 486))
    _run(uas, uac)
    assert_private(uac.received(), uas.received(), uac, uas)
    rec = calls(relay.base)[0]
    assert rec["sip_code"] == 486 and rec["cause"] == 17 and rec["released_by"] == "callee"


def test_callee_hangs_up(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_wait_bye.xml", "uas_bye.xml",
                     ["-m", "1"], ["-m", "1", "-d", "300"])
    _run(uas, uac)
    assert any(m.startswith("BYE") for m in uac.received())
    assert_private(uac.received(), uas.received(), uac, uas)
    assert calls(relay.base)[0]["released_by"] == "callee"


def test_no_answer_times_out_with_480(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    cfg = write_config(tmp_path / "cfg", {"ring_timeout": 1.5})
    relay = _relay(relay_factory, tmp_path, out, "--config", str(cfg))
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "", "uas_ring.xml", ["-m", "1"], ["-m", "1"])
    uac.args[uac.args.index("-sf") + 1] = str(refused_scenario(tmp_path, 480))
    _run(uas, uac)
    assert any(m.startswith("CANCEL") for m in uas.received())
    rec = calls(relay.base)[0]
    assert rec["sip_code"] == 480 and rec["released_by"] == "relay" and rec["cause"] == 19


def test_reinvite_is_relayed_through_the_media_backend(relay_factory: Any,
                                                        tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_reinvite.xml", "uas_reinvite.xml",
                     ["-m", "1", "-d", "200"], ["-m", "1"])
    _run(uas, uac)
    reinvites = [m for m in uas.received() if m.startswith("INVITE")]
    assert len(reinvites) == 2 and "application/sdp" in reinvites[1]
    assert_private(uac.received(), uas.received(), uac, uas)


def test_retransmissions_under_loss(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    # SIPp -lost drops that percentage of what it receives; the relay's transaction
    # timers (and SIPp's retrans) must recover every call.
    # One retry: when SIPp drops the relay's ACK-triggering 200 retransmission at the
    # wrong moment, SIPp's linear caller script can take the INVITE's retransmitted 200
    # for the BYE's and count a failed call although every SIP exchange was right.
    for attempt in (1, 2):
        uac, uas = _pair(tmp_path, relay, out, "uac.xml", "uas.xml",
                         ["-m", "20", "-r", "10", "-d", "100", "-lost", "5"],
                         ["-m", "20", "-lost", "5"])
        try:
            _run(uas, uac, timeout=120)
            break
        except AssertionError:
            uac.stop()
            uas.stop()
            if attempt == 2:
                raise
    assert len(calls(relay.base, "?limit=100", want=20 * attempt)) >= 20


def test_1000_calls_at_50_per_second(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac.xml", "uas.xml",
                     ["-m", "1000", "-r", "50", "-d", "50"], ["-m", "1000"])
    started = time.monotonic()
    _run(uas, uac, timeout=90)
    assert time.monotonic() - started < 90
    found = calls(relay.base, "?limit=1000", want=1000, timeout=20)
    assert len(found) == 1000
    assert all(r["sip_code"] == 200 for r in found)


def test_drain_refuses_new_calls_and_ends_live_ones(relay_factory: Any,
                                                   tmp_path: Path) -> None:
    out = udp_port()
    cfg = write_config(tmp_path / "cfg", {"drain_seconds": 1.0})
    relay = _relay(relay_factory, tmp_path, out, "--config", str(cfg))
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_wait_bye.xml", "uas.xml", ["-m", "1"],
                     ["-m", "1"])
    uas.start()
    uac.start()
    time.sleep(1.0)  # the call is up
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = caller(tmp_path, relay.sip_port, scenario_path=refused_scenario(tmp_path, 503),
                  extra=["-m", "1"], name="late")
    late.start()
    assert late.wait(30) == 0, late.tail()
    assert uac.wait(30) == 0, uac.tail()  # it got the relay's BYE and answered it
    assert uas.wait(30) == 0, uas.tail()
    relay.proc.wait(timeout=20)


def test_calls_cli(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac = caller(tmp_path, relay.sip_port, x="+8617000000055",
                 scenario_path=refused_scenario(tmp_path, 404), extra=["-m", "1"])
    uac.start()
    assert uac.wait(30) == 0
    calls(relay.base)
    relay.stop()
    cli = [sys.executable, "-m", "relay", "calls", "--store", f"sqlite:///{tmp_path}/relay.db"]
    table = subprocess.run([*cli, "--role", "ops"], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert "no_binding" in table.stdout and A not in table.stdout
    js = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=30)
    assert js.returncode == 0 and f'"{A}"' in js.stdout


def test_late_offer_invite_without_sdp(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_late.xml", "uas.xml", ["-m", "1", "-d", "200"],
                     ["-m", "1"])
    _run(uas, uac)
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert "Content-Length: 0" in invite
    ack = next(m for m in uas.received() if m.startswith("ACK"))
    assert "m=audio" in ack and "application/sdp" in ack  # the answer, rewritten
    assert_private(uac.received(), uas.received(), uac, uas)


def test_info_is_relayed(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_info.xml", "uas.xml", ["-m", "1", "-d", "200"],
                     ["-m", "1", "-aa"])  # -aa: the callee answers INFO with 200
    _run(uas, uac)
    info = next(m for m in uas.received() if m.startswith("INFO"))
    assert "Signal=5" in info and "application/dtmf-relay" in info
    assert_private(uac.received(), uas.received(), uac, uas)


def _relay_ends_call(relay_factory: Any, tmp_path: Path, sip: dict[str, Any],
                     **sections: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """One call that the relay ends, configured by `sip`/`sections`: each side waits for
    the relay's BYE and answers it. Returns the call record and the callee SIPp."""
    out = udp_port()
    cfg = write_config(tmp_path / "cfg", sip, **sections)
    relay = _relay(relay_factory, tmp_path, out, "--config", str(cfg))
    bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_wait_bye.xml", "uas.xml", ["-m", "1"],
                     ["-m", "1"])
    _run(uas, uac)
    return calls(relay.base)[0], uas


def test_max_call_duration_byes_both_sides(relay_factory: Any, tmp_path: Path) -> None:
    rec, _ = _relay_ends_call(relay_factory, tmp_path, {"max_call_seconds": 1.0})
    assert rec["released_by"] == "relay" and 900 <= rec["duration_ms"] <= 3000


def test_media_timeout_byes_both_sides(relay_factory: Any, tmp_path: Path) -> None:
    """Issue 4: an answered call with no RTP either way for [media] timeout seconds is
    ended by the relay (SIPp here sends signalling only), with a recorded cause."""
    rec, uas = _relay_ends_call(relay_factory, tmp_path, {}, media={"timeout": 1.5})
    assert rec["released_by"] == "relay" and rec["end_reason"] == "media_timeout"
    assert rec["cause"] == 41 and rec["sip_code"] == 200
    assert 1400 <= rec["duration_ms"] <= 4500
    bye = next(m for m in uas.received() if m.startswith("BYE"))
    assert "Reason: Q.850;cause=41" in bye


def test_freeze_during_a_call_hangs_up_when_configured(relay_factory: Any,
                                                       tmp_path: Path) -> None:
    out = udp_port()
    cfg = write_config(tmp_path / "cfg", {"hangup_on_freeze": True})
    relay = _relay(relay_factory, tmp_path, out, "--config", str(cfg))
    binding = bind(relay.base)
    uac, uas = _pair(tmp_path, relay, out, "uac_wait_bye.xml", "uas.xml", ["-m", "1"],
                     ["-m", "1"])
    uas.start()
    uac.start()
    time.sleep(1.0)
    api(relay.base, "POST", f"/v1/bindings/{binding['id']}/freeze")
    assert uac.wait(30) == 0, uac.tail()
    assert uas.wait(30) == 0, uas.tail()
    rec = calls(relay.base)[0]
    assert rec["released_by"] == "relay" and rec["cause"] == 22


def test_axn_anyone_reaches_b(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base, mode="AXN", a=None)
    stranger = "+8613755557777"
    uas = callee(tmp_path, out, extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, number=stranger, extra=["-m", "1", "-d", "100"])
    _run(uas, uac)
    assert_private(uac.received(), uas.received(), uac, uas, stranger, B)
    assert calls(relay.base)[0]["direction"] == "a_to_b"
