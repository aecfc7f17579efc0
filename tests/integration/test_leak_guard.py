"""The egress leak guard end to end: a planted leak (the test-only hook
RELAY_TEST_PLANT_LEAK copies the other party's real number into an X-Leak-Test header
of every SIP message toward one side) never reaches a real SIPp peer; the call fails
safe (500 to the caller, CANCEL to the callee), is counted and recorded."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import (
    A,
    B,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
)

from relay.guard import PLANT_ENV, needles_for, scan

pytestmark = pytest.mark.integration


def _metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _leaks(messages: list[str], number: str, visible: list[str]) -> list[str]:
    needles = needles_for([number], visible)
    return [m for m in messages if scan(m.encode(), needles) or "X-Leak-Test" in m]


def test_planted_leak_toward_the_caller_is_blocked(relay_factory: Any,
                                                   tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path),
                          env={PLANT_ENV: "caller"})
    binding = bind(relay.base)
    uas = callee(tmp_path, out, "uas_ring.xml", extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, scenario_path=refused_scenario(tmp_path, 500),
                 extra=["-m", "1"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()  # it rang, was CANCELled, answered 487
    to_caller = uac.received()
    assert any(m.startswith("SIP/2.0 500") for m in to_caller)
    assert not any(m.startswith("SIP/2.0 180") for m in to_caller)  # the leaky 180
    assert _leaks(to_caller, B, [A, binding["x"]]) == []
    assert any(m.startswith("CANCEL ") for m in uas.received())
    assert _metric(relay.base, "relay_leaks_blocked_sip_total") == 1
    rec, = calls(relay.base, f"?binding={binding['id']}")
    assert rec["end_reason"] == "leak_blocked" and rec["sip_code"] == 500
    log = relay.log.read_text()
    assert "leak blocked" in log and B not in log and B[1:] not in log  # masked


def test_planted_leak_toward_the_callee_never_leaves(relay_factory: Any,
                                                     tmp_path: Path) -> None:
    """The INVITE toward B would carry A's number: it is never sent (a socket on the
    outbound trunk's port hears nothing) and the caller gets 500."""
    trunk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trunk.bind(("127.0.0.1", 0))
    trunk.settimeout(0.2)
    try:
        out = trunk.getsockname()[1]
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path),
                              env={PLANT_ENV: "callee"})
        bind(relay.base)
        uac = caller(tmp_path, relay.sip_port, scenario_path=refused_scenario(tmp_path, 500),
                     extra=["-m", "1"])
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        heard: list[bytes] = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                heard.append(trunk.recv(65535))
            except TimeoutError:
                continue
        assert heard == []
        assert _metric(relay.base, "relay_leaks_blocked_sip_total") == 1
    finally:
        trunk.close()


def test_clean_call_is_untouched(relay_factory: Any, tmp_path: Path) -> None:
    """Without a plant the same flow completes: the guard scans and lets it pass."""
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)
    uas = callee(tmp_path, out, extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()
    assert _metric(relay.base, "relay_leaks_blocked_sip_total") == 0
    assert _metric(relay.base, "relay_leak_checks_total") >= 5


def test_sms_holding_the_senders_number_is_refused(relay_factory: Any,
                                                   tmp_path: Path) -> None:
    """A courier texts its own number to the customer (in any writing): the relay refuses
    it (ESME_RX_P_APPN), the receiver bind gets nothing of it, and the next clean text
    goes through; the refusal is recorded and counted."""
    import smpplib.gsm
    from conftest import free_port
    from sms_helpers import A as SA
    from sms_helpers import X as SX
    from sms_helpers import close, connect, digits, make_binding, receive, wait_messages

    port = free_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "gw1:pw1"], "sms")
    binding = make_binding(relay.base)
    rx = connect(port)
    rx.bind_receiver(system_id="gw1", password="pw1")
    tx = connect(port)
    tx.bind_transmitter(system_id="gw1", password="pw1")
    national = SA[3:6] + " " + SA[6:10] + "-" + SA[10:]  # "138 1111-2222"
    for text in (f"call me on {national} at the gate", "I am at the north gate"):
        parts, coding, esm = smpplib.gsm.make_parts(text)
        tx.send_message(source_addr_ton=1, source_addr_npi=1, source_addr=digits(SA),
                        dest_addr_ton=1, dest_addr_npi=1, destination_addr=digits(SX),
                        short_message=parts[0], data_coding=coding, esm_class=esm)
        if "call me" in text:
            assert int(tx.read_pdu().status) == 0x65  # ESME_RX_P_APPN: permanent
    (delivered,) = receive(rx, 1)
    assert delivered.short_message == b"I am at the north gate"
    assert int(tx.read_pdu().status) == 0
    close(tx)
    close(rx)
    recs = wait_messages(relay.base, {"binding": binding}, 2)
    assert sorted(r.get("reason") or r["status"] for r in recs) == ["delivered", "leak_blocked"]
    assert _metric(relay.base, "relay_leaks_blocked_sms_total") == 1


def test_a_blocked_leak_is_an_event(relay_factory: Any, tmp_path: Path) -> None:
    """With [events] set, the block reaches the webhook as a signed `leak.blocked` event
    naming the call, with the parties masked, before the call's own call.ended."""
    from conftest import free_port
    from event_receiver import Receiver

    secret = "hook-secret-0123456789"
    receiver = Receiver(free_port(), secret)
    receiver.start()
    try:
        out = udp_port()
        conf = tmp_path / "relay.toml"
        conf.write_text(f'[events]\nurl = "{receiver.url}"\nsecret = "{secret}"\n'
                        "backoff = 0.1\nbackoff_max = 0.5\n")
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                              relay_args(out, tmp_path, "--config", str(conf)),
                              env={PLANT_ENV: "caller"})
        binding = bind(relay.base)
        uas = callee(tmp_path, out, "uas_ring.xml", extra=["-m", "1"])
        uac = caller(tmp_path, relay.sip_port, scenario_path=refused_scenario(tmp_path, 500),
                     extra=["-m", "1"])
        uas.start()
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
        got = receiver.wait_for(lambda g: any(e["type"] == "call.ended" for e in g))
        receiver.check()
        leak, = [e for e in got if e["type"] == "leak.blocked"]
        assert leak["channel"] == "sip" and leak["toward"] == "caller" and leak["what"] == "180"
        assert leak["binding"] == binding["id"]
        assert leak["caller"] == "+86138****2222" and leak["callee"] == "+86139****4444"
        ended = next(e for e in got if e["type"] == "call.ended")
        assert ended["call_id"] == leak["call_id"]
        assert got.index(leak) < got.index(ended)  # in order per call
        assert A not in json.dumps(got) and B not in json.dumps(got)
    finally:
        receiver.stop()
