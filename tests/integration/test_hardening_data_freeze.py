"""Issue 13, "freezes never wait": two `relay serve` nodes on one real Redis; Redis is
stopped, a freeze and a release are made on node 1: 202 at once, X refused on node 1 at
once (SIPp gets 410), /readyz says 503; when Redis returns the changes are written, the
second node refuses X too, and /readyz is 200 again."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import A, B, X, api, bind, caller, refused_scenario, relay_args, udp_port

pytestmark = pytest.mark.integration

X2, B2 = "+8617000000099", "+8613900000099"


def _req(base: str, method: str, path: str) -> tuple[int, dict[str, Any], float]:
    """Status, JSON body and seconds taken (errors included)."""
    started = time.monotonic()
    req = urllib.request.Request(base + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), time.monotonic() - started


def _route(base: str, x: str, caller_: str) -> dict[str, Any]:
    return dict(api(base, "GET", f"/v1/route?from=%2B{caller_[1:]}&to=%2B{x[1:]}"))


def _until(what: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _refused_410(tmp_path: Path, port: int, name: str, number: str, x: str) -> None:
    uac = caller(tmp_path, port, number=number, x=x, extra=["-m", "1"], name=name,
                 scenario_path=refused_scenario(tmp_path, 410))
    uac.start()
    assert uac.wait(60) == 0, uac.tail()


def test_freeze_while_redis_is_down(redis_server: Any, relay_factory: Any,
                                    tmp_path: Path) -> None:
    out = udp_port()
    n1 = relay_factory(redis_server.url, relay_args(out, tmp_path), name="one")
    n2 = relay_factory(redis_server.url, relay_args(out, tmp_path), name="two")
    axb = bind(n1.base)
    axn = bind(n1.base, x=X2, a=None, b=B2, mode="AXN")
    for n in (n1, n2):
        _until(lambda n=n: _route(n.base, X, A)["action"] == "bridge"
               and _route(n.base, X2, A)["action"] == "bridge")
    assert _req(n1.base, "GET", "/readyz")[0] == 200

    redis_server.stop()
    status, body, took = _req(n1.base, "POST", f"/v1/bindings/{axb['id']}/freeze")
    assert status == 202 and body["pending"] is True and body["state"] == "frozen", body
    assert took < 5.0  # bounded by the store timeout, not by Redis coming back
    status, body, _ = _req(n1.base, "DELETE", f"/v1/bindings/{axn['id']}")
    assert status == 202 and body["pending"] is True, body
    # In force on node 1 at once: the dry run and a real INVITE are refused.
    assert _route(n1.base, X, A)["code"] == 410 and _route(n1.base, X2, A)["code"] == 410
    _refused_410(tmp_path, n1.sip_port, "n1_frozen", A, X)
    status, ready, _ = _req(n1.base, "GET", "/readyz")
    assert status == 503 and ready["pending_changes"] == 2, ready
    health = _req(n1.base, "GET", "/healthz")
    assert health[0] == 200 and health[1]["pending_changes"] == 2
    # Node 2 cannot know yet (nothing to learn it from): it still bridges.
    assert _route(n2.base, X, A)["action"] == "bridge"

    redis_server.start()  # same port and append-only file: the data is back
    _until(lambda: _req(n1.base, "GET", "/readyz")[0] == 200, 60)
    assert api(n1.base, "GET", f"/v1/bindings/{axb['id']}")["state"] == "frozen"
    assert api(n1.base, "GET", f"/v1/bindings/{axn['id']}")["state"] == "released"
    _until(lambda: _route(n2.base, X, A).get("code") == 410, 60)
    _refused_410(tmp_path, n2.sip_port, "n2_frozen", B, X)
    assert _route(n1.base, X, A)["code"] == 410  # and still on node 1
    assert _route(n2.base, X2, A)["code"] == 404  # released: X2 is unknown everywhere


def test_a_pending_freeze_survives_kill_9(redis_server: Any, relay_factory: Any,
                                          tmp_path: Path) -> None:
    """The journal is on disk before the 202: a node killed while Redis is down writes
    the freeze at its next start, and the other node learns it."""
    import signal

    out = udp_port()
    n1 = relay_factory(redis_server.url, relay_args(out, tmp_path), name="one")
    n2 = relay_factory(redis_server.url, relay_args(out, tmp_path), name="two")
    axb = bind(n1.base)
    _until(lambda: _route(n2.base, X, A)["action"] == "bridge")
    redis_server.stop()
    status, body, _ = _req(n1.base, "POST", f"/v1/bindings/{axb['id']}/freeze")
    assert status == 202 and body["pending"] is True
    assert n1.proc is not None
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait(10)
    redis_server.start()
    # Nothing wrote it yet: the store and node 2 still say active.
    _until(lambda: _req(n2.base, "GET", "/readyz")[0] == 200, 60)
    assert api(n2.base, "GET", f"/v1/bindings/{axb['id']}")["state"] == "active"
    n1.start(timeout=60)  # same folder: same journal
    _until(lambda: _route(n2.base, X, A).get("code") == 410, 60)
    frozen = api(n2.base, "GET", f"/v1/bindings/{axb['id']}")
    assert frozen["state"] == "frozen" and frozen["reason"] == "api"
    # frozen_at is when the freeze was asked for, not when the store took it.
    assert frozen["frozen_at"] == body["frozen_at"]
    _until(lambda: _req(n1.base, "GET", "/readyz")[0] == 200, 60)
