"""Issue 13 over real loopback HTTP (aiohttp's test server, a real SQLite file): hostile
JSON is a 4xx that touches nothing, per-token rate limits, the ops role cannot tell a real
party from a guess through the route dry run, and one filter masks any real number in an
answer for ops whichever handler produced it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.api.app import build_api
from relay.app import Node
from relay.config import Config

A, B, B2 = "+8613800000001", "+8613900000001", "+8613900000077"
X1, X2, X3 = "+8617000000001", "+8617000000002", "+8617000000003"
ADMIN = {"Authorization": "Bearer adm-token"}
OPS = {"Authorization": "Bearer ops-token"}
Client = TestClient  # type: ignore[type-arg]


async def _node(tmp_path: Path, **cfg: Any) -> Node:
    n = Node(Config(store=f"sqlite:///{tmp_path}/relay.db",
                    api_tokens={"adm-token": "admin", "ops-token": "ops"}, **cfg))
    await n.store.open()
    await n.follower.load()
    return n


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await _node(tmp_path, api_rates={"admin": 0.0, "ops": 0.0})
    yield n
    await n.store.close()


async def _leak(request: web.Request) -> web.Response:
    """A careless handler (test-only) that puts B's real number in its answer."""
    return web.json_response({"note": f"forwarded to {B} (tel:{B};ok)", "x": X1,
                              "nested": [{"who": B2}], "size": 123456789012,
                              "link": "/v1/r?expires=1796673706&sig=ab12"})


@pytest.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    app = build_api(node)
    app.router.add_get("/v1/test-leak", _leak)
    async with TestClient(TestServer(app)) as c:
        r = await c.post("/v1/numbers", json={"numbers": [X1, X2, X3]}, headers=ADMIN)
        assert r.status == 201
        for body in ({"mode": "AXB", "x": X1, "a": A, "b": B, "ttl": 3600},
                     {"mode": "AXN", "x": X2, "b": B2, "a": A, "ttl": 3600}):
            assert (await c.post("/v1/bindings", json=body, headers=ADMIN)).status == 201
        r = await c.post("/v1/bindings", json={"mode": "AXB", "x": X3, "a": A, "b": B,
                                               "ttl": 3600}, headers=ADMIN)
        bid = (await r.json())["id"]
        assert (await c.post(f"/v1/bindings/{bid}/freeze", headers=ADMIN)).status == 200
        yield c


async def _state(node: Node) -> tuple[str, list[Any]]:
    snap = await node.store.snapshot()
    return snap.offset, sorted(b.id for b in (await node.store.query(limit=1000))[0])


HOSTILE: list[tuple[str, bytes]] = [
    ("nested", b'{"mode": "AXB", "a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    ("nested_shallow", b'{"mode": "AXB", "policy": ' + b"[" * 40 + b"]" * 40 + b"}"),
    ("ttl_1e400", json.dumps({"mode": "AXB", "a": A, "b": "+8613900000002",
                              "ttl": 1}).replace("1}", "1e400}").encode()),
    ("ttl_huge_int", b'{"mode": "AXB", "a": "+8613800000002", "b": "+8613900000002", '
                     b'"ttl": ' + b"9" * 400 + b"}"),
    ("nan", b'{"mode": "AXB", "a": "+8613800000002", "b": "+8613900000002", "ttl": NaN}'),
    ("not_utf8", b'{"mode": "\xff\xfe"}'),
]


@pytest.mark.parametrize("name", [h[0] for h in HOSTILE])
async def test_hostile_json_is_a_json_4xx_and_the_store_is_untouched(
        client: Client, node: Node, name: str) -> None:
    body = dict(HOSTILE)[name]
    before = await _state(node)
    targets = [("POST", "/v1/bindings"), ("POST", "/v1/numbers"),
               ("PUT", "/v1/policies/p1")]
    for method, path in targets:
        r = await client.request(method, path, data=body, headers=ADMIN)
        assert 400 <= r.status < 500, (name, path, r.status, await r.text())
        err = await r.json()
        assert set(err) == {"error", "detail"} and err["error"] == "invalid_json", err
    assert await _state(node) == before
    assert (await client.get("/v1/policies", headers=ADMIN)).status == 200
    assert "p1" not in {p["name"] for p in
                        (await (await client.get("/v1/policies", headers=ADMIN)).json())
                        ["policies"]}


async def test_huge_body_is_413_json_and_touches_nothing(client: Client, node: Node) -> None:
    before = await _state(node)
    big = b'{"numbers": ["' + b"1" * (9 * 1024 * 1024) + b'"]}'
    r = await client.post("/v1/numbers", data=big, headers=ADMIN)
    assert r.status == 413
    err = await r.json()
    assert err["error"] and err["detail"]
    assert await _state(node) == before


async def _route(c: Client, who: dict[str, str], caller: str, x: str) -> tuple[int, bytes]:
    r = await c.get("/v1/route", params={"from": caller, "to": x}, headers=who)
    return r.status, await r.read()


async def test_ops_cannot_tell_a_real_party_from_a_guess(client: Client) -> None:
    guesses = [A[:-4] + f"{i:04d}" for i in range(0, 10_000, 997)]  # A itself is 0001
    guesses.append(A)
    for x in (X1, X2, X3):
        answers = {await _route(client, OPS, g, x) for g in guesses}
        assert len(answers) == 1, (x, answers)  # the real A answers like every guess
        status, body = answers.pop()
        view = json.loads(body)
        assert status == 200 and view["caller_considered"] is False
        assert B[5:-4] not in body.decode() and B2[5:-4] not in body.decode()
    # Control: admin does see the difference (so the check above could have failed).
    real = await _route(client, ADMIN, A, X1)
    guess = await _route(client, ADMIN, guesses[0], X1)
    assert json.loads(real[1])["action"] == "bridge" and json.loads(guess[1])["action"] \
        == "refuse" and json.loads(real[1])["to"] == B
    # What depends on X alone is still ops' to see: the AXN X2 bridges to a masked B.
    axn = json.loads((await _route(client, OPS, A, X2))[1])
    assert axn["action"] == "bridge" and axn["to"] == "+86139****0077"
    # A caller's statistics would be the same oracle: admin only.
    r = await client.get(f"/v1/callers/{A}", headers=OPS)
    assert r.status == 403 and (await r.json())["error"] == "forbidden"


async def test_one_filter_masks_real_numbers_in_any_ops_answer(client: Client,
                                                               node: Node) -> None:
    r = await client.get("/v1/test-leak", headers=OPS)
    text = await r.text()
    assert r.status == 200 and B not in text and B2 not in text, text
    got = json.loads(text)
    assert got["x"] == X1  # the relay's own number is never masked
    # Times and sizes are not phone numbers, in JSON numbers or in strings.
    assert got["size"] == 123456789012 and got["link"].endswith("expires=1796673706&sig=ab12")
    assert got["note"] == "forwarded to +86139****0001 (tel:+86139****0001;ok)"
    assert got["nested"][0]["who"] == "+86139****0077"
    assert 'relay_api_numbers_masked_total 3' in node.metrics.render()
    admin = await (await client.get("/v1/test-leak", headers=ADMIN)).json()
    assert B in admin["note"]
    # Every ops answer of the real handlers carries no real number either.
    for path in ("/v1/bindings", "/v1/route?to=" + X2, "/v1/numbers", "/healthz"):
        body = await (await client.get(path, headers=OPS)).text()
        assert A not in body and B not in body and B2 not in body, (path, body)


async def test_per_token_rate_limit_is_429_json_with_retry_after(tmp_path: Path) -> None:
    node = await _node(tmp_path, api_rates={"admin": 0.0, "ops": 2.0}, api_burst=2.0)
    try:
        async with TestClient(TestServer(build_api(node))) as c:
            statuses = []
            for _ in range(12):
                r = await c.get("/v1/bindings", headers=OPS)
                statuses.append(r.status)
                if r.status == 429:
                    err = await r.json()
                    assert err["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
            # A burst of 4 (2/s x 2 s) passes; the rest of a fast dozen is limited.
            assert statuses.count(200) >= 4 and statuses.count(429) >= 4, statuses
            # Another token (admin, unlimited here) is not held back by ops' bucket.
            assert all([(await c.get("/v1/bindings", headers=ADMIN)).status == 200
                        for _ in range(20)])
            assert "relay_api_rate_limited_total" in node.metrics.render()
    finally:
        await node.store.close()
