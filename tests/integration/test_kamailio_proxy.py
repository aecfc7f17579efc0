"""End to end through a real Kamailio 5.6 on both legs (issue 18).

SIPp caller -> Kamailio -> `relay serve` -> Kamailio -> SIPp callee, with a stock-style
configuration (``kamailio/relay-proxy.cfg``): record_route() on initial INVITEs,
loose_route() in dialogs, route-less in-dialog requests dropped (ACK) or answered 404.
Each test checks the call flow each SIPp saw, that every in-dialog request went through
the proxy with its Route (Kamailio's log and the SIPp traces), that the relay's 18x/2xx
carried the Record-Route, that nothing of one side reached the other, and that the
relay's transactions all end within RFC 3261's timers once the calls are over.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kamailio_proxy import KamailioProxy, need_kamailio, quiet_media_range
from sipp_harness import (
    Sipp,
    assert_private,
    bind,
    callee,
    caller,
    calls,
    relay_args,
    udp_port,
    write_config,
)

pytestmark = pytest.mark.integration

T1 = 0.1  # RFC 3261 T1 for the relay: its longest lingering timer is 64*T1 = 6.4 s
# Kamailio's script log: "req METHOD in=PORT from=... ci=CALLID cs=CSEQ route=[...] ...
# totag=TAG" and "loose-routed METHOD from=SOURCE ci=CALLID cs=CSEQ ...": a request is
# (method, source, Call-ID, CSeq); its retransmissions repeat all four.
_REQ = re.compile(r"^req (\S+) in=(\d+) from=(\S+) ruri=\S+ ci=(\S+) cs=(\d+) route=\[(.*?)\] "
                  r"rr=\[.*?\] totag=(\S+)$")
_LOOSE = re.compile(r"^loose-routed (\S+) from=(\S+) ci=(\S+) cs=(\d+) ")


@dataclass
class Setup:
    """The relay, the proxy in front of it, and where the callee SIPp must listen."""

    relay: Any
    kam: KamailioProxy
    callee_port: int
    workdir: Path


@pytest.fixture
def proxied(relay_factory: Any, tmp_path: Path) -> Iterator[Setup]:
    """A relay whose trunk and outbound both go through one Kamailio (two listeners)."""
    need_kamailio()
    kam = KamailioProxy(tmp_path)
    callee_port = udp_port()
    cfg = write_config(tmp_path / "cfg", {"t1": T1})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(kam.callee_port, tmp_path, "--config", str(cfg),
                                     "--media-ports", quiet_media_range()))
    kam.start(relay.sip_port, callee_port)
    bind(relay.base)
    try:
        yield Setup(relay, kam, callee_port, tmp_path)
    finally:
        kam.stop()


def _run(s: Setup, uac_scn: str, uas_scn: str, uac_extra: list[str],
         uas_extra: list[str], timeout: float = 60) -> tuple[Sipp, Sipp]:
    uas = callee(s.workdir, s.callee_port, uas_scn, extra=uas_extra)
    uac = caller(s.workdir, s.kam.caller_port, uac_scn, extra=uac_extra)
    uas.start()
    uac.start()
    try:
        rc = uac.wait(timeout)
        assert rc == 0, f"caller rc={rc} {uac.tail()}\n{s.kam.tail()}"
        rc = uas.wait(timeout)
        assert rc == 0, f"callee rc={rc} {uas.tail()}\n{s.kam.tail()}"
    finally:
        uac.stop()
        uas.stop()
    return uac, uas


def _in_dialog(kam: KamailioProxy) -> list[tuple[str, int, str, str]]:
    """(method, listener port, Call-ID, Route) of every in-dialog request Kamailio got,
    once each: a retransmission (same method, sender, Call-ID and CSeq: a BYE resent
    at T1 while the machine is loaded, say) is the same request."""
    found = []
    seen = set()
    for line in kam.lines():
        m = _REQ.match(line)
        if m and m.group(7) != "<null>":
            key = (m.group(1), m.group(3), m.group(4), m.group(5))
            if key not in seen:
                seen.add(key)
                found.append((m.group(1), int(m.group(2)), m.group(4), m.group(6)))
    return found


def _keys(kam: KamailioProxy) -> set[tuple[str, ...]]:
    """(method, sender, Call-ID, CSeq) of every in-dialog request Kamailio got."""
    return {(m.group(1), m.group(3), m.group(4), m.group(5)) for line in kam.lines()
            if (m := _REQ.match(line)) and m.group(7) != "<null>"}


def assert_loose_routed(kam: KamailioProxy, expected: dict[int, list[str]]) -> None:
    """Every in-dialog request reached Kamailio with a Route to the listener it came in
    on and was loose-routed; none was dropped or refused for lack of one.

    ``expected`` maps each listener port to the sorted in-dialog methods it must see.
    """
    lines = kam.lines()
    assert not [x for x in lines if "route-less" in x], "\n".join(lines)
    seen = _in_dialog(kam)
    for method, port, _cid, route in seen:
        assert f"sip:127.0.0.1:{port};lr" in route, (method, port, route)
    got = {port: sorted(m for m, p, _, _ in seen if p == port) for port in expected}
    assert got == {p: sorted(ms) for p, ms in expected.items()}, got
    routed = {found.groups() for x in lines if (found := _LOOSE.match(x))}
    assert routed == _keys(kam), (routed, seen)


def assert_record_routed(kam: KamailioProxy, uac: Sipp, uas: Sipp, answered: bool) -> None:
    """The relay's 18x/2xx to the caller echoed Kamailio's caller-side Record-Route, its
    INVITE to the callee was record-routed on the callee side, and the SIPps used them."""
    rr_caller = f"Record-Route: <sip:127.0.0.1:{kam.caller_port};lr"
    route_caller = f"Route: <sip:127.0.0.1:{kam.caller_port};lr"
    rr_callee = f"Record-Route: <sip:127.0.0.1:{kam.callee_port};lr"
    to_caller = uac.received()
    provisional = [m for m in to_caller if re.match(r"SIP/2\.0 18\d", m)]
    assert provisional and all(rr_caller in m for m in provisional), provisional
    invites = [m for m in uas.received() if m.startswith("INVITE")]
    assert invites and rr_callee in invites[0]
    if answered:
        oks = [m for m in to_caller if m.startswith("SIP/2.0 200") and "CSeq: 1 INVITE" in m]
        assert oks and all(rr_caller in m for m in oks), oks
        replies = [x for x in kam.lines() if x.startswith("reply 200 ")
                   and f" in={kam.caller_port} " in x and " cseq=1 INVITE " in x]
        assert replies and all(f"rr=[<sip:127.0.0.1:{kam.caller_port};lr" in x
                               for x in replies), replies
        sent = [m for m in uac.sent() if m.startswith(("ACK", "BYE"))]
        assert sent and all(route_caller in m for m in sent), sent


def assert_private_through_proxy(kam: KamailioProxy, uac: Sipp, uas: Sipp) -> None:
    """DESIGN.md privacy, plus: neither side sees the other side's proxy hop."""
    to_caller, to_callee = uac.received(), uas.received()
    assert_private(to_caller, to_callee, uac, uas)
    for msg in to_callee:
        assert f"127.0.0.1:{kam.caller_port}" not in msg, msg
    for msg in to_caller:
        assert f"127.0.0.1:{kam.callee_port}" not in msg, msg


def _gauges(base: str) -> dict[str, int]:
    """The relay's SIP state gauges that must return to zero once calls are over."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    found = {}
    for name in ("relay_sip_transactions", "relay_sip_dialogs", "relay_calls_live"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        assert m, f"{name} missing from /metrics"
        found[name] = int(float(m.group(1)))
    return found


def assert_no_lingering_transactions(base: str) -> float:
    """The relay's live transactions, dialogs and calls drop to 0 within its longest
    timer (64*T1, RFC 3261 §17: Timers D, H, J, L, M; K is T4), with a little slack.
    Returns the seconds taken."""
    started = time.monotonic()
    deadline = started + 64 * T1 + 3.0
    counts = _gauges(base)
    while any(counts.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = _gauges(base)
    assert not any(counts.values()), f"still live {64 * T1 + 3:.1f} s after the calls: {counts}"
    return time.monotonic() - started


def test_caller_hangs_up_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed.xml", "uas_routed.xml",
                    ["-m", "1", "-d", "300"], ["-m", "1"])
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=True)
    assert_loose_routed(kam, {kam.caller_port: ["ACK", "BYE"],
                              kam.callee_port: ["ACK", "BYE"]})
    assert_private_through_proxy(kam, uac, uas)
    rec = calls(proxied.relay.base)[0]
    assert rec["sip_code"] == 200 and rec["released_by"] == "caller"
    assert rec["duration_ms"] >= 250
    assert_no_lingering_transactions(proxied.relay.base)


def test_callee_hangs_up_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed_wait_bye.xml", "uas_routed_bye.xml",
                    ["-m", "1"], ["-m", "1", "-d", "300"])
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=True)
    # The callee's BYE comes in on its side; the relay's BYE to the caller on the other.
    assert_loose_routed(kam, {kam.caller_port: ["ACK", "BYE"],
                              kam.callee_port: ["ACK", "BYE"]})
    assert any(m.startswith("BYE") for m in uac.received())
    assert_private_through_proxy(kam, uac, uas)
    rec = calls(proxied.relay.base)[0]
    assert rec["sip_code"] == 200 and rec["released_by"] == "callee"
    assert_no_lingering_transactions(proxied.relay.base)


def test_caller_cancels_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed_cancel.xml", "uas_routed_ring.xml", ["-m", "1"],
                    ["-m", "1"])
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=False)
    assert any(m.startswith("CANCEL") for m in uas.received())
    assert any(m.startswith("SIP/2.0 487") for m in uac.received())
    assert not [x for x in kam.lines() if "route-less" in x]
    # Only the hop-by-hop ACKs for the 487s are in-dialog here (RFC 3261 §17.1.1.3).
    assert {m for m, _, _, _ in _in_dialog(kam)} == {"ACK"}
    assert_private_through_proxy(kam, uac, uas)
    rec = calls(proxied.relay.base)[0]
    assert rec["sip_code"] == 487 and rec["released_by"] == "caller"
    assert rec["legs"]["callee"]["sip_code"] == 487
    assert_no_lingering_transactions(proxied.relay.base)


def test_caller_reinvite_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed_reinvite.xml", "uas_routed_reinvite.xml",
                    ["-m", "1", "-d", "200"], ["-m", "1"])
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=True)
    both = ["ACK", "ACK", "BYE", "INVITE"]
    assert_loose_routed(kam, {kam.caller_port: both, kam.callee_port: both})
    reinvites = [m for m in uas.received() if m.startswith("INVITE")]
    assert len(reinvites) == 2 and "application/sdp" in reinvites[1]
    assert_private_through_proxy(kam, uac, uas)
    assert calls(proxied.relay.base)[0]["released_by"] == "caller"
    assert_no_lingering_transactions(proxied.relay.base)


def test_callee_reinvite_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed_answer_reinvite.xml", "uas_routed_send_reinvite.xml",
                    ["-m", "1", "-d", "300"], ["-m", "1"])
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=True)
    both = ["ACK", "ACK", "BYE", "INVITE"]
    assert_loose_routed(kam, {kam.caller_port: both, kam.callee_port: both})
    reinvite = [m for m in uac.received() if m.startswith("INVITE")]
    assert len(reinvite) == 1 and "application/sdp" in reinvite[0]
    assert_private_through_proxy(kam, uac, uas)
    assert calls(proxied.relay.base)[0]["released_by"] == "caller"
    assert_no_lingering_transactions(proxied.relay.base)


def test_20_calls_at_5_per_second_through_the_proxy(proxied: Setup) -> None:
    uac, uas = _run(proxied, "uac_routed.xml", "uas_routed.xml",
                    ["-m", "20", "-r", "5", "-d", "200"], ["-m", "20"], timeout=90)
    kam = proxied.kam
    assert_record_routed(kam, uac, uas, answered=True)
    assert_loose_routed(kam, {kam.caller_port: ["ACK", "BYE"] * 20,
                              kam.callee_port: ["ACK", "BYE"] * 20})
    # Every caller-side Call-ID had its ACK and its BYE loose-routed.
    caller_ids = {m.group(1) for m in (re.search(r"^Call-ID: (\S+)", x, re.M)
                                       for x in uac.sent()) if m}
    assert len(caller_ids) == 20
    routed = [(meth, cid) for meth, port, cid, _ in _in_dialog(kam) if port == kam.caller_port]
    assert sorted(routed) == sorted((m, c) for c in caller_ids for m in ("ACK", "BYE"))
    assert_private_through_proxy(kam, uac, uas)
    found = calls(proxied.relay.base, "?limit=100", want=20)
    assert len(found) == 20
    assert all(r["sip_code"] == 200 and r["released_by"] == "caller" for r in found)
    assert_no_lingering_transactions(proxied.relay.base)


def test_unmatchable_487_behind_the_proxy_leaves_no_transaction(proxied: Setup) -> None:
    """Issue 18's lingering ``relay_sip_transactions``: uas_ring.xml answers the INVITE
    with the Via of the CANCEL, which Kamailio sent hop by hop with its own Via only, so
    the 487 it relays to the relay has no Via left (malformed, dropped). The relay's
    INVITE to the callee then gets no final response; RFC 3261 §9.1 ends it 64*T1 after
    the CANCEL instead of leaving it in Proceeding for ever."""
    uac, _uas = _run(proxied, "uac_routed_cancel.xml", "uas_ring.xml", ["-m", "1"],
                     ["-m", "1"])
    assert any(m.startswith("SIP/2.0 487") for m in uac.received())
    with urllib.request.urlopen(proxied.relay.base + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert re.search(r"^relay_sip_malformed_total [1-9]", metrics, re.M), metrics
    assert_no_lingering_transactions(proxied.relay.base)
