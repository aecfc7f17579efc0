"""The HTTP API over real loopback HTTP (aiohttp's test server) on a real SQLite file."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_check import documented_and_routed

from relay.api.app import build_api
from relay.app import Node
from relay.config import Config, ConfigError, load_config

A, B, C = "+8613800000001", "+8613900000001", "+8613700000001"
X1, X2 = "+8617000000001", "+8617000000002"
ADMIN = {"Authorization": "Bearer adm-token"}
OPS = {"Authorization": "Bearer ops-token"}

Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    cfg = Config(store=f"sqlite:///{tmp_path}/relay.db",
                 api_tokens={"adm-token": "admin", "ops-token": "ops"})
    n = Node(cfg)
    await n.store.open()
    await n.follower.load()
    yield n
    await n.store.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_api(node))) as c:
        r = await c.post("/v1/numbers", json={"numbers": [X1, X2], "area": "0571"},
                         headers=ADMIN)
        assert r.status == 201
        yield c


async def changes(node: Node) -> str:
    return (await node.store.snapshot()).offset


async def test_create_get_list_freeze_release(client: Client, node: Node) -> None:
    r = await client.post("/v1/bindings", headers=ADMIN,
                          json={"mode": "AXB", "a": A, "b": B, "ttl": 600, "out_id": "o-1"})
    assert r.status == 201
    b = await r.json()
    assert {"id", "mode", "x", "state", "expires_at"} <= b.keys()
    assert b["state"] == "active" and b["x"] in (X1, X2) and b["a"] == A
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", b["expires_at"])

    again = await client.post("/v1/bindings", headers=ADMIN,
                              json={"mode": "AXB", "a": A, "b": B, "ttl": 600, "out_id": "o-1"})
    assert again.status == 200 and (await again.json())["id"] == b["id"]

    got = await (await client.get(f"/v1/bindings/{b['id']}", headers=ADMIN)).json()
    assert got == b
    listed = await (await client.get("/v1/bindings?out_id=o-1", headers=ADMIN)).json()
    assert [x["id"] for x in listed["bindings"]] == [b["id"]]

    route = await (await client.get("/v1/route", params={"from": A, "to": b["x"]},
                                    headers=ADMIN)).json()
    assert route == {"action": "bridge", "to": B, "binding": b["id"], "direction": "a_to_b"}

    r = await client.post(f"/v1/bindings/{b['id']}/freeze", headers=ADMIN)
    assert r.status == 200 and (await r.json())["state"] == "frozen"
    route = await (await client.get("/v1/route", params={"from": A, "to": b["x"]},
                                    headers=ADMIN)).json()
    assert route["action"] == "refuse" and route["code"] == 410 and route["reason"] == "frozen"

    r = await client.delete(f"/v1/bindings/{b['id']}", headers=ADMIN)
    assert r.status == 200 and (await r.json())["state"] == "released"
    route = await (await client.get("/v1/route", params={"from": A, "to": b["x"]},
                                    headers=ADMIN)).json()
    assert route["code"] == 404


async def test_pagination(client: Client) -> None:
    for i in range(5):
        r = await client.post("/v1/bindings", headers=ADMIN,
                              json={"mode": "AXB", "a": f"+861380000010{i}", "b": B[:-1] + str(i)})
        assert r.status == 201
    seen: list[str] = []
    url = "/v1/bindings?limit=2"
    while True:
        page = await (await client.get(url, headers=ADMIN)).json()
        seen += [b["id"] for b in page["bindings"]]
        if "next" not in page:
            break
        url = f"/v1/bindings?limit=2&cursor={page['next']}"
    assert len(seen) == len(set(seen)) == 5


async def test_patch(client: Client) -> None:
    b = await (await client.post("/v1/bindings", headers=ADMIN,
                                 json={"mode": "AXB", "a": A, "b": B, "x": X1})).json()
    r = await client.patch(f"/v1/bindings/{b['id']}", headers=ADMIN,
                           json={"b": C, "record": False, "ttl": 60})
    assert r.status == 200
    p = await r.json()
    assert p["b"] == C and p["record"] is False and p["expires_at"] and p["version"] == 2
    route = await (await client.get("/v1/route", params={"from": C, "to": X1},
                                    headers=ADMIN)).json()
    assert route["to"] == A


async def test_route_for_axe_agrees_with_the_switch(client: Client) -> None:
    """GET /v1/route answers as the call controller routes: the extension picks B, no
    extension means the relay collects one, a wrong one is refused no_extension."""
    made = []
    for ext, b in (("101", B), ("0202", C)):
        r = await client.post("/v1/bindings", headers=ADMIN,
                              json={"mode": "AXE", "x": X2, "b": b, "ext": ext})
        assert r.status == 201, await r.text()
        made.append(await r.json())

    async def route(**params: str) -> dict[str, Any]:
        r = await client.get("/v1/route", params={"from": A, "to": X2, **params},
                             headers=ADMIN)
        assert r.status == 200
        return dict(await r.json())

    assert await route(ext="0202") == {"action": "bridge", "to": C, "binding": made[1]["id"],
                                       "direction": "a_to_b"}
    assert (await route(ext="101"))["to"] == B
    assert await route() == {"action": "collect"}
    wrong = await route(ext="999")
    assert wrong["action"] == "refuse" and wrong["code"] == 404
    assert wrong["reason"] == "no_extension"
    ops = await (await client.get("/v1/route", params={"from": A, "to": X2, "ext": "101"},
                                  headers=OPS)).json()
    assert ops["to"] != B and "****" in ops["to"]  # the ops role sees B masked


BAD: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/v1/bindings", b"{not json", 400, "invalid_json"),
    ("POST", "/v1/bindings", b"", 400, "invalid_json"),
    ("POST", "/v1/bindings", [], 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXQ", "b": B}, 422, "invalid_mode"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": "+86139abc"}, 422, "invalid_number"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": 8613900000001}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": A}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "ttl": "1h"}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "ttl": -5}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "record": "yes"}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "colour": 1}, 422, "invalid"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "x": "+8617999999999"}, 422,
     "number_not_in_pool"),
    ("POST", "/v1/bindings", {"mode": "AXB", "a": A, "b": B, "ext": "12"}, 422, "invalid"),
    ("GET", "/v1/bindings/ffffffffffffffff", None, 404, "not_found"),
    ("PATCH", "/v1/bindings/ffffffffffffffff", {"record": False}, 404, "not_found"),
    ("POST", "/v1/bindings/ffffffffffffffff/freeze", None, 404, "not_found"),
    ("DELETE", "/v1/bindings/ffffffffffffffff", None, 404, "not_found"),
    ("GET", "/v1/bindings?state=gone", None, 422, "invalid"),
    ("GET", "/v1/bindings?limit=0", None, 422, "invalid"),
    ("GET", "/v1/route?from=x", None, 422, "invalid"),
    ("POST", "/v1/numbers", {"numbers": ["+86170abc"]}, 422, "invalid_number"),
    ("POST", "/v1/numbers", {"numbers": []}, 422, "invalid"),
    ("GET", "/v1/nothing", None, 404, "not_found"),
    ("PUT", "/v1/bindings", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD)
async def test_bad_requests_get_json_errors_and_touch_nothing(
        client: Client, node: Node, method: str, path: str, body: Any, status: int,
        code: str) -> None:
    before = await changes(node)
    kw: dict[str, Any] = {"headers": ADMIN}
    if isinstance(body, bytes):
        kw["data"] = body
    elif body is not None:
        kw["json"] = body
    r = await client.request(method, path, **kw)
    assert r.status == status
    err = await r.json()
    assert err["error"] == code and err["detail"]
    assert await changes(node) == before


async def test_unfreeze_is_illegal(client: Client, node: Node) -> None:
    b = await (await client.post("/v1/bindings", headers=ADMIN,
                                 json={"mode": "AXN", "b": B})).json()
    await client.post(f"/v1/bindings/{b['id']}/freeze", headers=ADMIN)
    before = await changes(node)
    r = await client.patch(f"/v1/bindings/{b['id']}", headers=ADMIN, json={"ttl": 600})
    assert r.status == 409 and (await r.json())["error"] == "illegal_transition"
    assert await changes(node) == before


async def test_pool_exhausted_is_409(client: Client) -> None:
    for b in (B, C):
        assert (await client.post("/v1/bindings", headers=ADMIN,
                                  json={"mode": "AXN", "b": b})).status == 201
    r = await client.post("/v1/bindings", headers=ADMIN, json={"mode": "AXN", "b": A})
    assert r.status == 409 and (await r.json())["error"] == "pool_exhausted"
    stats = (await (await client.get("/v1/numbers", headers=ADMIN)).json())["stats"]
    assert stats["total"] == 2 and stats["in_use"] == 2 and stats["free"] == 0


async def test_roles_mask_and_restrict(client: Client) -> None:
    b = await (await client.post("/v1/bindings", headers=ADMIN,
                                 json={"mode": "AXB", "a": A, "b": B})).json()
    seen = await (await client.get(f"/v1/bindings/{b['id']}", headers=OPS)).json()
    assert seen["a"] == "+86138****0001" and seen["b"] == "+86139****0001"
    body = await (await client.get("/v1/bindings", headers=OPS)).text()
    route = await (await client.get("/v1/route", params={"from": A, "to": b["x"]},
                                    headers=OPS)).text()
    for text in (body, route):
        assert "13800000001" not in text and "13900000001" not in text
    r = await client.post(f"/v1/bindings/{b['id']}/freeze", headers=OPS)
    assert r.status == 403 and (await r.json())["error"] == "forbidden"
    r = await client.get("/v1/bindings")
    assert r.status == 401 and (await r.json())["error"] == "unauthorized"
    r = await client.get("/v1/bindings", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    assert (await client.get("/healthz")).status == 200


async def test_openapi_matches_the_router(client: Client, node: Node) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app = client.server.app
    assert app is not None
    documented, routed = documented_and_routed(doc, app)
    assert documented == routed


async def test_health_metrics_and_page(client: Client) -> None:
    h = await (await client.get("/healthz")).json()
    assert h["status"] == "ok" and h["numbers"] == 2
    m = await (await client.get("/metrics")).text()
    assert "relay_bindings 0" in m and "relay_store_degraded 0" in m
    assert "# TYPE relay_bindings gauge" in m
    assert "# TYPE relay_feed_reloads_total counter" in m  # only grows: a counter
    page = await client.get("/")
    assert page.status == 200 and "relay ops" in await page.text()


def test_no_tokens_means_loopback_only() -> None:
    with pytest.raises(ConfigError, match="without tokens"):
        Config(http=("0.0.0.0", 8080)).check()
    Config(http=("0.0.0.0", 8080), api_tokens={"t": "admin"}).check()
    Config(http=("127.0.0.1", 8080)).check()
    cfg = load_config(None, env={"RELAY_API_TOKENS": "a:admin,b:ops"})
    assert cfg.api_tokens == {"a": "admin", "b": "ops"}
    with pytest.raises(ConfigError):
        load_config(None, env={"RELAY_API_TOKENS": "a:root"})


Check = Callable[[], Awaitable[None]]
