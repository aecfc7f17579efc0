"""Calls in progress through `relay serve` and SIPp: `GET /v1/calls/live` shows a call
while it is up (masked for ops), `DELETE /v1/calls/live/{id}` ends it with BYE to both
legs and the record says `end_reason: operator`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sipp_harness import A, B, X, bind, callee, caller, calls, relay_args, udp_port

TOKENS = {"RELAY_API_TOKENS": "adm:admin,opstok:ops"}


def request(base: str, method: str, path: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_live(base: str, phase: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = request(base, "GET", "/v1/calls/live", "adm")[1]["calls"]
        if found and found[0]["phase"] == phase:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no live call in phase {phase}: {found}")


def test_live_call_is_listed_and_hung_up_by_an_operator(relay_factory: Any,
                                                        tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path),
                          env=TOKENS)
    bind(relay.base, token="adm", out_id="order-7")
    uas = callee(tmp_path, out, "uas.xml", number=B, extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, "uac_wait_bye.xml", number=A, x=X,
                 extra=["-m", "1"])
    uas.start()
    uac.start()
    try:
        live = wait_live(relay.base, "connected")
        assert live["x"] == X and live["caller"] == A and live["callee"] == B
        assert live["out_id"] == "order-7" and live["node"]
        assert live["started_at"].endswith("Z") and live["answered_at"].endswith("Z")
        assert live["legs"]["callee"]["answer_at"] is not None

        _valid(relay.base, live, "LiveCall")
        status, ops = request(relay.base, "GET", "/v1/calls/live", "opstok")
        assert status == 200
        assert ops["calls"][0]["caller"] == "+86138****2222"
        assert A[1:] not in json.dumps(ops) and B[1:] not in json.dumps(ops)

        # The live route is not taken for a call id, nor the other way round.
        assert request(relay.base, "GET", f"/v1/calls/{live['id']}", "adm")[0] == 404
        # Read-only tokens cannot hang up; an unknown call is a 404.
        assert request(relay.base, "DELETE", f"/v1/calls/live/{live['id']}", "opstok")[0] == 403
        assert request(relay.base, "DELETE", "/v1/calls/live/nope", "adm")[0] == 404

        status, body = request(relay.base, "DELETE", f"/v1/calls/live/{live['id']}", "adm")
        assert status == 200 and body["end_reason"] == "operator"
        assert uac.wait(30) == 0, uac.tail()
        assert uas.wait(30) == 0, uas.tail()
    finally:
        uac.stop()
        uas.stop()
    assert any(m.startswith("BYE") for m in uac.received())
    assert any(m.startswith("BYE") for m in uas.received())
    rec = calls(relay.base, token="adm")[0]
    assert rec["id"] == live["id"] and rec["end_reason"] == "operator"
    assert rec["released_by"] == "relay" and rec["outcome"] == "answered"
    _valid(relay.base, rec, "Call")
    assert request(relay.base, "GET", "/v1/calls/live", "adm")[1]["calls"] == []
    assert request(relay.base, "DELETE", f"/v1/calls/live/{live['id']}", "adm")[0] == 404


def test_list_filters_and_unknown_parameters(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path),
                          env=TOKENS)
    bind(relay.base, token="adm")
    uas = callee(tmp_path, out, "uas.xml", number=B, extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, "uac.xml", number=A, x=X, extra=["-m", "1"])
    uas.start()
    uac.start()
    assert uac.wait(30) == 0, uac.tail()
    assert uas.wait(30) == 0, uas.tail()
    # A refused one: a stranger to an unbound X.
    stranger = caller(tmp_path, relay.sip_port, "", number="+8613000000009",
                      x="+8617099999999", extra=["-m", "1"], name="stranger",
                      scenario_path=_refused(tmp_path))
    stranger.start()
    assert stranger.wait(30) == 0, stranger.tail()
    both = calls(relay.base, token="adm", want=2)
    assert {c["outcome"] for c in both} == {"answered", "refused"}

    def ids(query: str, token: str = "adm") -> list[str]:
        status, body = request(relay.base, "GET", "/v1/calls" + query, token)
        assert status == 200, body
        return [c["outcome"] for c in body["calls"]]

    assert ids("?outcome=refused") == ["refused"]
    assert ids("?outcome=answered") == ["answered"]
    assert ids(f"?party=%2B{A[1:]}") == ["answered"]
    assert ids(f"?party=%2B{A[1:]}&outcome=refused") == []
    status, body = request(relay.base, "GET", f"/v1/calls?party=%2B{A[1:]}", "opstok")
    assert status == 403  # ops may not search by a real number
    status, body = request(relay.base, "GET", "/v1/calls?outcome=maybe", "adm")
    assert status == 422
    for path in ("/v1/calls?staus=1&x=1", "/v1/bindings?stat=frozen", "/v1/messages?sender=1",
                 "/v1/numbers?zone=1", "/v1/calls/live?x=1", "/v1/policies?name=a",
                 "/v1/blocklist?number=1"):
        status, body = request(relay.base, "GET", path, "adm")
        assert status == 400 and body["error"] == "unknown_parameter", (path, body)
    status, body = request(relay.base, "GET", "/v1/calls?staus=1&xx=2", "adm")
    assert "staus" in body["detail"] and "xx" in body["detail"]


def _valid(base: str, instance: Any, schema: str) -> None:
    """The running node's OpenAPI document is valid OpenAPI 3.1, and `instance` is valid
    against its component `schema`."""
    import jsonschema
    from openapi_spec_validator import validate

    doc = request(base, "GET", "/v1/openapi.json", "adm")[1]
    validate(doc)
    for name in ("Call", "LiveCall", "Message", "Links", "Policy", "Binding"):
        assert name in doc["components"]["schemas"], name
    assert "delete" in doc["paths"]["/v1/calls/live/{id}"]
    jsonschema.validate(instance, {"$ref": f"#/components/schemas/{schema}",
                                   "components": doc["components"]})


def _refused(tmp_path: Path) -> Path:
    from sipp_harness import refused_scenario

    return refused_scenario(tmp_path, 404)
