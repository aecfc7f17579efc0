"""Many outbound trunks through `relay serve` (issue 18 point 3): SIPp trunks on
loopback. The first trunk answers 503 and then disappears: the call fails over to the
second, and the next call goes straight there. A dead trunk found by OPTIONS probes is
skipped before any call tries it."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dns_server import Dnsmasq, dnsmasq_exe
from sipp_harness import SCENARIOS, bind, callee, caller, calls, media_range, udp_port

pytestmark = pytest.mark.integration


def _config(path: Path, first: int, second: int, **sip: object) -> Path:
    lines = ["[sip]"] + [f"{k} = {v}" for k, v in sip.items()]
    for name, port, prio in (("first", first, 1), ("second", second, 2)):
        lines += ["[[sip.trunk]]", f'name = "{name}"', 'host = "127.0.0.1"',
                  f"port = {port}", f"priority = {prio}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _relay(relay_factory: Any, tmp_path: Path, cfg: Path) -> Any:
    return relay_factory(f"sqlite:///{tmp_path}/relay.db", [
        "--outbound", "127.0.0.1:9", "--trunk", "127.0.0.0/8", "--media-ports", media_range(),
        "--recordings", str(tmp_path / "rec"), "--log-level", "WARNING", "--config", str(cfg)])


def _trunk_peers(tmp_path: Path, p1: int, p2: int, calls_on_second: int) -> tuple[Any, Any]:
    """Two SIPp trunks, started: on `p1` one that answers its one INVITE 503, on `p2`
    one that answers `calls_on_second` calls."""
    busy = tmp_path / "uas_503.xml"
    busy.write_text((SCENARIOS / "uas_busy.xml").read_text()
                    .replace("486 Busy Here", "503 Service Unavailable"))
    first = callee(tmp_path, p1, extra=["-m", "1"], name="first")
    first.args[first.args.index("-sf") + 1] = str(busy)
    second = callee(tmp_path, p2, extra=["-m", str(calls_on_second)], name="second")
    first.start()
    second.start()
    return first, second


def _metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        m = re.search(rf"^{name} (\S+)$", r.read().decode(), re.M)
    assert m, name
    return float(m.group(1))


def test_a_trunk_that_answers_503_and_then_disappears(relay_factory: Any,
                                                       tmp_path: Path) -> None:
    p1, p2 = udp_port(), udp_port()
    relay = _relay(relay_factory, tmp_path, _config(tmp_path / "relay.toml", p1, p2,
                                                    probe_interval=0))
    bind(relay.base)
    first, second = _trunk_peers(tmp_path, p1, p2, calls_on_second=2)
    uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"], name="call1")
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert first.wait(30) == 0, first.tail()  # it answered 503 once, and is gone now
    uac2 = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"], name="call2")
    uac2.start()
    assert uac2.wait(60) == 0, uac2.tail()
    assert second.wait(30) == 0, second.tail()
    recs = calls(relay.base, want=2)
    later, earlier = recs  # newest first
    assert earlier["sip_code"] == 200 and earlier["trunk"] == "second"
    assert earlier["failovers"] == 1
    assert later["sip_code"] == 200 and later["trunk"] == "second"
    assert "failovers" not in later  # the first trunk was down: not tried again
    assert not any(m.startswith("SIP/2.0 503") for m in uac.received())
    assert _metric(relay.base, "relay_trunk_failovers_total") == 1


def test_probes_find_a_dead_trunk_before_a_call_does(relay_factory: Any,
                                                     tmp_path: Path) -> None:
    dead, p2 = udp_port(), udp_port()  # nothing listens on `dead`
    relay = _relay(relay_factory, tmp_path, _config(tmp_path / "relay.toml", dead, p2,
                                                    probe_interval=1, t1=0.1))
    bind(relay.base)
    # -aa: SIPp answers OPTIONS 200 itself (and counts each as a call: no -m here).
    second = callee(tmp_path, p2, extra=["-aa"], name="second")
    second.start()
    deadline = time.monotonic() + 30
    while _metric(relay.base, "relay_trunks_up") != 1 and time.monotonic() < deadline:
        time.sleep(0.3)  # Timer F for the dead trunk's OPTIONS: 64*T1 = 6.4 s
    assert _metric(relay.base, "relay_trunks_up") == 1
    with urllib.request.urlopen(relay.base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert f'relay_trunk_target_up{{trunk="first",target="127.0.0.1:{dead}"}} 0' in text
    assert f'relay_trunk_target_up{{trunk="second",target="127.0.0.1:{p2}"}} 1' in text
    assert re.search(rf"trunk first target 127.0.0.1:{dead} is down: OPTIONS timeout",
                     relay.log.read_text())
    uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"], name="call")
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    second.stop()
    (rec,) = calls(relay.base)
    assert rec["trunk"] == "second" and "failovers" not in rec
    assert any(m.startswith("OPTIONS") for m in second.received())


def test_a_trunk_named_by_dns_fails_over_along_its_srv_targets(relay_factory: Any,
                                                               tmp_path: Path) -> None:
    """RFC 3263 against a real dnsmasq: _sip._udp.carrier.test has two SRV targets
    (priority 10 answers 503 once and is gone, priority 20 answers); the relay resolves
    the name before the first call and moves to the second target on the 503. The
    failed target, not the trunk, is marked down: the next call goes straight to the
    second target (no wait for the dead one's Timer B)."""
    p1, p2 = udp_port(), udp_port()
    dns = Dnsmasq(tmp_path, [
        f"--srv-host=_sip._udp.carrier.test,a.carrier.test,{p1},10,10",
        f"--srv-host=_sip._udp.carrier.test,b.carrier.test,{p2},20,10",
        "--host-record=a.carrier.test,127.0.0.1", "--host-record=b.carrier.test,127.0.0.1"])
    dns.start(dnsmasq_exe())
    try:
        cfg = tmp_path / "relay.toml"
        cfg.write_text("[sip]\nprobe_interval = 0\n"
                       f'dns_servers = ["127.0.0.1:{dns.port}"]\n'
                       '[[sip.trunk]]\nname = "carrier"\nhost = "carrier.test"\n')
        relay = _relay(relay_factory, tmp_path, cfg)
        bind(relay.base)
        first, second = _trunk_peers(tmp_path, p1, p2, calls_on_second=2)
        uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"])
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert first.wait(30) == 0, first.tail()  # it answered 503 once, and is gone now
        (rec,) = calls(relay.base)
        assert rec["trunk"] == "carrier" and rec["failovers"] == 1 and rec["sip_code"] == 200
        assert dns.queries() >= 1
        started = time.monotonic()
        uac2 = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "200"], name="call2")
        uac2.start()
        assert uac2.wait(60) == 0, uac2.tail()
        assert time.monotonic() - started < 15  # Timer B on the dead target is 32 s
        assert second.wait(30) == 0, second.tail()
        later, _earlier = calls(relay.base, want=2)
        assert later["trunk"] == "carrier" and later["sip_code"] == 200
        assert "failovers" not in later
        invite = next(m for m in second.received() if m.startswith("INVITE"))
        assert invite.split("\r\n")[0].split(" ")[1].endswith("@carrier.test")
    finally:
        dns.stop()
