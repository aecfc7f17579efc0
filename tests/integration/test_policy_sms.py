"""Texts obey the binding's policy through `relay serve` (SMPP via smpplib, and HTTP):
quiet hours (temporary refusal, A only; B's text goes through), a one-way binding and
the blocklist."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from sms_helpers import A, B, X, close, connect, http, make_binding, receive, wait_messages
from test_policy_calls import _window_around_now
from test_sms_smpp import read_resps, send

from relay.sms import constants as c

pytestmark = pytest.mark.integration


@pytest.fixture
def relay(relay_factory: Any, tmp_path: Path) -> Any:
    port = free_port()
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "gw1:pw1"], "sms")
    node.smpp_port = port
    return node


def test_texts_under_quiet_hours_and_one_way(relay: Any) -> None:
    base = relay.base
    assert http("PUT", f"{base}/v1/policies/night",
                {"quiet_hours": _window_around_now("Asia/Tokyo")})[0] == 201
    binding = make_binding(base)
    assert http("PATCH", f"{base}/v1/bindings/{binding}", {"policy": "night"})[0] == 200

    rx = connect(relay.smpp_port)
    rx.bind_receiver(system_id="gw1", password="pw1")
    tx = connect(relay.smpp_port)
    tx.bind_transmitter(system_id="gw1", password="pw1")
    send(tx, A, "late delivery?")
    (quiet,) = read_resps(tx, 1)
    assert int(quiet.status) == c.ESME_RX_T_APPN  # temporary: a gateway may retry later
    send(tx, B, "I am awake")  # B's side is never stopped
    (fwd,) = receive(rx, 1)
    assert fwd.destination_addr.decode() == A.lstrip("+")
    (ok,) = read_resps(tx, 1)
    assert int(ok.status) == 0

    req = urllib.request.Request(f"{base}/v1/sms", method="POST",
                                 data=json.dumps({"from": A, "to": X, "text": "hi"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 409 and json.loads(exc.value.read())["error"] == "quiet_hours"
    assert 3500 <= int(exc.value.headers["Retry-After"]) <= 3720

    assert http("PUT", f"{base}/v1/policies/night", {"directions": ["a_to_b"]})[0] == 200
    send(tx, B, "wrong way now")
    (wrong,) = read_resps(tx, 1)
    assert int(wrong.status) == c.ESME_RX_P_APPN
    assert http("PUT", f"{base}/v1/blocklist/{A}", {"reason": "spam", "x": X})[0] == 201
    send(tx, A, "blocked now")
    (blocked,) = read_resps(tx, 1)
    assert int(blocked.status) == c.ESME_RX_P_APPN
    close(tx)
    close(rx)

    recs = wait_messages(base, {"x": X}, 5)
    reasons = sorted(r["policy_reason"] for r in recs if r["status"] == "refused")
    assert reasons == ["blocked", "direction", "quiet_hours", "quiet_hours"]


def test_second_text_over_max_sms_1_is_refused(relay: Any) -> None:
    base = relay.base
    assert http("PUT", f"{base}/v1/policies/one",
                {"max_sms": {"count": 1, "per": "24h"}})[0] == 201
    binding = make_binding(base)
    assert http("PATCH", f"{base}/v1/bindings/{binding}", {"policy": "one"})[0] == 200
    rx = connect(relay.smpp_port)
    rx.bind_receiver(system_id="gw1", password="pw1")
    tx = connect(relay.smpp_port)
    tx.bind_transmitter(system_id="gw1", password="pw1")
    send(tx, A, "first")
    receive(rx, 1)
    (ok,) = read_resps(tx, 1)
    send(tx, A, "second")
    (over,) = read_resps(tx, 1)
    close(tx)
    close(rx)
    assert int(ok.status) == 0 and int(over.status) == c.ESME_RX_P_APPN
    status, body = http("POST", f"{base}/v1/sms", {"from": A, "to": X, "text": "third"})
    assert status == 429 and body["error"] == "frequency"
    recs = wait_messages(base, {"x": X}, 3)
    assert sorted(str(r["policy_reason"]) for r in recs) == ["None", "frequency", "frequency"]
