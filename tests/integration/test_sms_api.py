"""The SMS HTTP routes in-process: OpenAPI matches the router, input checks, and the
message views per role (records put straight into the node's record store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_check import documented_and_routed

from relay.api.app import build_api
from relay.api.sms import register_routes
from relay.app import Node
from relay.config import Config

ADMIN = {"Authorization": "Bearer adm"}
OPS = {"Authorization": "Bearer ops"}
X, A, B = "+8617000000001", "+8613800000001", "+8613900000002"

Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    node = Node(Config(store=f"sqlite:///{tmp_path}/relay.db",
                       api_tokens={"adm": "admin", "ops": "ops"}))
    await node.store.open()
    await node.records.open()
    app = build_api(node)
    register_routes(app)
    async with TestClient(TestServer(app)) as c:
        c.node = node  # type: ignore[attr-defined]
        yield c
    await node.records.close()
    await node.store.close()


async def test_openapi_matches_the_router_with_sms_routes(client: Client) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    app = client.app
    assert app is not None
    documented, routed = documented_and_routed(doc, app)
    assert documented == routed
    assert ("POST", "/v1/sms") in routed and ("GET", "/v1/messages/{id}") in routed


async def test_post_sms_checks_input_and_needs_the_subsystem(client: Client) -> None:
    for body in ({"from": A, "to": X}, {"from": 1, "to": X, "text": "x"},
                 {"from": A, "to": X, "text": ""}, {"from": A, "to": X, "text": "x" * 20000}):
        r = await client.post("/v1/sms", json=body, headers=ADMIN)
        assert r.status == 422, body
    r = await client.post("/v1/sms", json={"from": A, "to": X, "text": "hi"}, headers=OPS)
    assert r.status == 403  # ops tokens only read
    r = await client.post("/v1/sms", json={"from": A, "to": X, "text": "hi"}, headers=ADMIN)
    assert r.status == 503 and (await r.json())["error"] == "sms_unavailable"


async def test_messages_masked_for_ops(client: Client) -> None:
    node = client.node  # type: ignore[attr-defined]
    await node.records.put("message", {
        "id": "m1", "started_at": 1_800_000_000.0, "received_at": 1_800_000_000.0, "x": X,
        "binding": "b1", "sender": A, "recipient": B, "status": "delivered", "parts": 1,
        "data_coding": 8, "text_sha256": "00" * 32})
    ops = await (await client.get(f"/v1/messages?x={X.replace('+', '%2B')}", headers=OPS)).json()
    (m,) = ops["messages"]
    assert (m["sender"], m["recipient"], m["x"]) == ("+86138****0001", "+86139****0002", X)
    assert m["received_at"] == "2027-01-15T08:00:00.000Z"
    adm = await (await client.get("/v1/messages/m1", headers=ADMIN)).json()
    assert (adm["sender"], adm["recipient"]) == (A, B)
    since = await (await client.get("/v1/messages?since=2027-01-16T00:00:00Z",
                                    headers=ADMIN)).json()
    assert since["messages"] == []
    assert (await client.get("/v1/messages?since=yesterday", headers=ADMIN)).status == 422
    assert (await client.get("/v1/messages/none", headers=ADMIN)).status == 404
