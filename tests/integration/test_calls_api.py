"""The call routes in-process: OpenAPI matches the router, filters, paging, masking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_check import documented_and_routed

from relay.api.app import build_api
from relay.api.calls import add_call_routes
from relay.app import Node
from relay.b2bua.cdr import CallTimes, build_record
from relay.config import Config

ADMIN = {"Authorization": "Bearer adm"}
OPS = {"Authorization": "Bearer ops"}
X, A, B = "+8617055556666", "+8613811112222", "+8613933334444"

Client = TestClient  # type: ignore[type-arg]


def _record(i: int, x: str = X, binding: str = "b1") -> dict[str, Any]:
    t = CallTimes()
    t.stamp("caller", "invite_at", 1000.0 + i)
    t.stamp("caller", "end_at", 1001.0 + i)
    return build_record(call_id=f"call{i:03d}", started_at=1000.0 + i, x=x, caller=A,
                        callee=B, binding=binding, out_id=f"o{i}", direction="a_to_b",
                        times=t, sip_code=486, cause=17, released_by="callee",
                        unconnected="none", recording=None)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    node = Node(Config(store=f"sqlite:///{tmp_path}/relay.db",
                       api_tokens={"adm": "admin", "ops": "ops"}))
    await node.store.open()
    await node.records.open()
    for i in range(5):
        await node.records.put("call", _record(i))
    await node.records.put("call", _record(9, x="+8617000000777", binding="b2"))
    app = build_api(node)
    add_call_routes(app)
    async with TestClient(TestServer(app)) as c:
        yield c
    await node.records.close()
    await node.store.close()


async def test_openapi_matches_the_router_with_call_routes(client: Client) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    app = client.app
    assert app is not None
    documented, routed = documented_and_routed(doc, app)
    assert documented == routed
    assert ("GET", "/v1/calls/{id}") in routed


async def test_list_filter_page_and_mask(client: Client) -> None:
    r = await (await client.get(f"/v1/calls?x=%2B{X[1:]}&limit=3", headers=ADMIN)).json()
    assert [c["id"] for c in r["calls"]] == ["call004", "call003", "call002"]
    assert r["calls"][0]["caller"] == A and r["next"]
    r2 = await (await client.get(f"/v1/calls?x=%2B{X[1:]}&limit=3&cursor={r['next']}",
                                 headers=ADMIN)).json()
    assert [c["id"] for c in r2["calls"]] == ["call001", "call000"]
    ops = await (await client.get("/v1/calls?binding=b2", headers=OPS)).json()
    (only,) = ops["calls"]
    assert only["x"] == "+8617000000777" and only["caller"] == "+86138****2222"
    assert A not in str(ops) and B not in str(ops)
    since = await (await client.get("/v1/calls?since=1003", headers=ADMIN)).json()
    assert {c["id"] for c in since["calls"]} == {"call003", "call004", "call009"}
    iso = await (await client.get("/v1/calls?since=1970-01-01T00:16:43Z",
                                  headers=ADMIN)).json()
    assert len(iso["calls"]) == 3
    # The one time format: an age works too (these records are from 1970).
    aged = await (await client.get("/v1/calls?since=24h", headers=ADMIN)).json()
    assert aged["calls"] == []
    old = await (await client.get("/v1/calls?until=24h&limit=2", headers=ADMIN)).json()
    assert len(old["calls"]) == 2


async def test_one_call_and_errors(client: Client) -> None:
    one = await client.get("/v1/calls/call002", headers=OPS)
    body = await one.json()
    assert one.status == 200
    assert body["legs"]["caller"]["invite_at"] == "1970-01-01T00:16:42.000Z"  # ISO, ms
    assert body["started_at"] == "1970-01-01T00:16:42.000Z"
    assert body["callee"] == "+86139****4444"
    assert (await client.get("/v1/calls/nope", headers=ADMIN)).status == 404
    assert (await client.get("/v1/calls?x=abc", headers=ADMIN)).status == 422
    assert (await client.get("/v1/calls?since=yesterday", headers=ADMIN)).status == 422
    assert (await client.get("/v1/calls?limit=0", headers=ADMIN)).status == 422
