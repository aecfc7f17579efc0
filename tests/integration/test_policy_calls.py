"""End to end: named policies on SIPp calls through `relay serve` (DESIGN.md "Policies").

Quiet hours around the current time in a non-UTC zone: A's call gets 480 with
Retry-After to the window's end and `Reason: ...;text="quiet_hours"`, while B calling
back goes through; a one-way binding refuses the other way with 403; the records say
`unconnected_cause: policy` and `policy_reason`. A blocked caller gets 603 on every X.
Two nodes on one Redis share the `max_calls` counter.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sipp_harness import (
    A,
    B,
    X,
    api,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
)
from test_sip_calls import _relay, _run

pytestmark = pytest.mark.integration
X2 = "+8617055557777"


def _window_around_now(tz: str) -> dict[str, str]:
    """A quiet window from an hour ago to an hour and a minute from now, local to `tz`."""
    now = datetime.now(ZoneInfo(tz))
    return {"from": (now - timedelta(hours=1)).strftime("%H:%M"),
            "to": (now + timedelta(hours=1, minutes=1)).strftime("%H:%M"), "tz": tz}


def _refused(tmp_path: Path, port: int, code: int, who: str, x: str, name: str) -> str:
    uac = caller(tmp_path, port, number=who, x=x, scenario_path=refused_scenario(tmp_path, code),
                 extra=["-m", "1"], name=name)
    uac.start()
    assert uac.wait(30) == 0, f"{code}: {uac.tail()}"
    (final,) = [m for m in uac.received() if m.startswith(f"SIP/2.0 {code}")][:1]
    return final


def test_quiet_hours_and_one_way_on_the_wire(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    api(relay.base, "PUT", "/v1/policies/night",
        {"quiet_hours": _window_around_now("America/New_York")})
    api(relay.base, "PUT", "/v1/policies/one-way", {"directions": ["a_to_b"]})
    night = bind(relay.base, policy="night")
    one_way = bind(relay.base, x=X2, policy="one-way")

    final = _refused(tmp_path, relay.sip_port, 480, A, X, "quiet")
    assert 'Reason: Q.850;cause=21;text="quiet_hours"' in final
    m = re.search(r"^Retry-After: (\d+)", final, re.M)
    assert m is not None and 3600 - 60 <= int(m[1]) <= 3660 + 60, final

    uas = callee(tmp_path, out, number=A, name="callee-back", extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, number=B, extra=["-m", "1", "-d", "200"],
                 name="caller-back")
    _run(uas, uac)  # B calling back is never stopped
    assert next(m for m in uas.received() if m.startswith("INVITE")).startswith(
        f"INVITE sip:{A}@")

    final = _refused(tmp_path, relay.sip_port, 403, B, X2, "one-way")
    assert 'Reason: Q.850;cause=21;text="direction"' in final

    found = calls(relay.base, want=3)
    by_binding = {(r["binding"], r["sip_code"]): r for r in found}
    quiet = by_binding[(night["id"], 480)]
    assert quiet["unconnected_cause"] == "policy" and quiet["policy_reason"] == "quiet_hours"
    back = by_binding[(night["id"], 200)]
    assert back["direction"] == "b_to_a" and back["policy_reason"] is None
    wrong_way = by_binding[(one_way["id"], 403)]
    assert wrong_way["policy_reason"] == "direction"


def test_blocked_caller_603_on_every_x_then_through_after_delete(relay_factory: Any,
                                                                  tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    bind(relay.base)
    bind(relay.base, x=X2)
    api(relay.base, "PUT", f"/v1/blocklist/{A}", {"reason": "harassment"})
    for i, x in enumerate((X, X2)):
        final = _refused(tmp_path, relay.sip_port, 603, A, x, f"blocked{i}")
        assert 'Reason: Q.850;cause=21;text="blocked"' in final
    api(relay.base, "DELETE", f"/v1/blocklist/{A}")
    uas = callee(tmp_path, out, number=B, name="callee-unblocked", extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, number=A, extra=["-m", "1", "-d", "200"],
                 name="caller-unblocked")
    _run(uas, uac)
    found = calls(relay.base, want=3)
    assert sorted((r["sip_code"], r["policy_reason"]) for r in found) == [
        (200, None), (603, "blocked"), (603, "blocked")]


def test_two_nodes_on_one_redis_share_the_frequency_counter(redis_server: Any,
                                                            relay_factory: Any,
                                                            tmp_path: Path) -> None:
    out = udp_port()
    n1 = relay_factory(redis_server.url, relay_args(out, tmp_path / "n1"), "n1")
    n2 = relay_factory(redis_server.url, relay_args(out, tmp_path / "n2"), "n2")
    api(n1.base, "PUT", "/v1/policies/two", {"max_calls": {"count": 2, "per": "1h"}})
    bind(n1.base, policy="two")
    deadline = time.monotonic() + 5
    while api(n2.base, "GET", f"/v1/route?from=%2B{A[1:]}&to=%2B{X[1:]}")["action"] != "bridge":
        assert time.monotonic() < deadline, "node 2 never saw the binding and policy"
        time.sleep(0.05)
    uas = callee(tmp_path, out, number=B, name="callee-n1", extra=["-m", "2"])
    uac = caller(tmp_path, n1.sip_port, number=A, extra=["-m", "2", "-d", "100"],
                 name="caller-n1")
    _run(uas, uac)
    final = _refused(tmp_path, n2.sip_port, 603, A, X, "third-on-n2")
    assert 'Reason: Q.850;cause=21;text="frequency"' in final
    assert api(n2.base, "GET", f"/v1/route?from=%2B{A[1:]}&to=%2B{X[1:]}")["reason"] \
        == "frequency"


def test_declined_calls_raise_the_score_and_max_score_refuses(relay_factory: Any,
                                                               tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    b = bind(relay.base)
    uas = callee(tmp_path, out, "uas_busy.xml", number=B, name="busy", extra=["-m", "4"])
    uac = caller(tmp_path, relay.sip_port, number=A, name="pest", extra=["-m", "4"],
                 scenario_path=refused_scenario(tmp_path, 486))
    _run(uas, uac)
    # Contacts reach the store in batches: wait for all four, not only for the score.
    deadline = time.monotonic() + 10
    while ((card := api(relay.base, "GET", f"/v1/callers/%2B{A[1:]}"))["score"] < 6
           or card["inputs"]["attempts_24h"] < 4):
        assert time.monotonic() < deadline, card
        time.sleep(0.1)
    assert card["inputs"]["refused_7d"] == 4 and card["inputs"]["attempts_24h"] == 4
    api(relay.base, "PUT", "/v1/policies/strict", {"max_score": 5})
    api(relay.base, "PATCH", f"/v1/bindings/{b['id']}", {"policy": "strict"})
    final = _refused(tmp_path, relay.sip_port, 603, A, X, "scored")
    assert 'Reason: Q.850;cause=21;text="score"' in final
