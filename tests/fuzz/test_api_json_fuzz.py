"""The HTTP API's JSON inputs (relay/api/app.py on a real SQLite file, over aiohttp's
loopback test server): any body, however nested or odd its numbers, on every endpoint
that reads one, gets a JSON answer below 500; bad input is refused, never a crash."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from fuzz_budget import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from relay.api.app import build_api
from relay.app import Node
from relay.config import Config

ADMIN = {"Authorization": "Bearer adm", "Content-Type": "application/json"}
KEYS = ["mode", "a", "b", "x", "ext", "ttl", "expires_at", "record", "out_id", "area",
        "numbers", "policy", "max_call_seconds", "quiet_hours", "from", "to", "tz",
        "max_calls", "count", "per", "directions", "reason", "until", "voice", "sms"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.sampled_from([1e400, -1e400, 10**400, 2**63, -1, 0, "1e400", "NaN", "AXB", "AXN", "AXE",
                     "+8613800000001", "+8617000000001", "0571", "22:00", "Asia/Shanghai",
                     "2026-12-07T10:00:00Z", "", "\x00", "\ud800"]),
    st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), kids, max_size=6)),
    max_leaves=20)
BODIES = st.one_of(
    VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=64))
ENDPOINTS = [("POST", "/v1/bindings"), ("PATCH", "/v1/bindings/b1"),
             ("POST", "/v1/numbers"), ("PUT", "/v1/policies/p1"),
             ("PUT", "/v1/blocklist/+8613800000009"), ("POST", "/v1/bindings/b1/freeze")]


def test_api_answers_every_body_below_500(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    node = Node(Config(store=f"sqlite:///{tmp_path}/relay.db", api_tokens={"adm": "admin"}))

    async def start() -> TestClient:  # type: ignore[type-arg]
        await node.store.open()
        await node.policy_store.open()
        await node.follower.load()
        client = TestClient(TestServer(build_api(node)))
        await client.start_server()
        r = await client.post("/v1/numbers", headers=ADMIN,
                              json={"numbers": ["+8617000000001", "+8617000000002"]})
        assert r.status == 201
        return client

    client = loop.run_until_complete(start())

    async def send(method: str, path: str, body: bytes) -> tuple[int, Any]:
        async with client.request(method, path, data=body, headers=ADMIN) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json"
                              else text)

    @fuzz_settings(150)
    @given(st.sampled_from(ENDPOINTS), BODIES)
    def one(endpoint: tuple[str, str], body: bytes) -> None:
        status, doc = loop.run_until_complete(send(*endpoint, body))
        assert status < 500, (endpoint, body[:200], status, doc)
        if status >= 400:
            assert isinstance(doc, dict) and "error" in doc, doc

    try:
        one()
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(node.policy_store.close())
        loop.run_until_complete(node.store.close())
        loop.close()
