"""Named policies over the HTTP API on a real SQLite file: PUT/GET/DELETE, 422s that
change nothing, `/v1/route` under a policy, `[dialplan] default_policy`, and a second
node that sees the edit after one refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialplan.policy import Limit
from relay.api.app import build_api
from relay.app import Node
from relay.config import Config, ConfigError, load_config

A, B = "+8613800000001", "+8613900000001"
X1 = "+8617000000001"
ADMIN = {"Authorization": "Bearer adm-token"}
OPS = {"Authorization": "Bearer ops-token"}
T0 = 1_800_000_000.0  # 2027-01-15 16:00 in Asia/Shanghai
QUIET = {"quiet_hours": {"from": "15:00", "to": "17:00", "tz": "Asia/Shanghai"}}

Client = TestClient  # type: ignore[type-arg]


def make_node(tmp_path: Path, default: str | None = None) -> Node:
    cfg = Config(store=f"sqlite:///{tmp_path}/relay.db", default_policy=default,
                 api_tokens={"adm-token": "admin", "ops-token": "ops"})
    return Node(cfg, clock=lambda: T0)


async def opened(n: Node) -> Node:
    await n.store.open()
    await n.policy_store.open()
    await n.counters.open()
    await n.contacts.open()
    await n.follower.load()
    n.policies.replace(await n.policy_store.all())
    return n


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await opened(make_node(tmp_path))
    yield n
    await n.policy_store.close()
    await n.counters.close()
    await n.contacts.close()
    await n.store.close()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_api(node))) as c:
        r = await c.post("/v1/numbers", json={"numbers": [X1]}, headers=ADMIN)
        assert r.status == 201
        yield c


async def bind(client: Client, **kw: object) -> dict[str, object]:
    r = await client.post("/v1/bindings", headers=ADMIN,
                          json={"mode": "AXB", "a": A, "b": B, "ttl": 86400, **kw})
    assert r.status == 201
    return dict(await r.json())


async def route(client: Client, caller: str, service: str = "voice") -> dict[str, object]:
    r = await client.get("/v1/route", params={"from": caller, "to": X1, "service": service},
                         headers=ADMIN)
    return dict(await r.json())


async def test_put_get_list_delete(client: Client, node: Node) -> None:
    r = await client.put("/v1/policies/night", headers=ADMIN,
                         json={**QUIET, "ring_timeout": 30})
    assert r.status == 201
    doc = await r.json()
    assert doc == {"name": "night", **QUIET, "ring_timeout": 30}
    r = await client.put("/v1/policies/night", headers=ADMIN, json=QUIET)
    assert r.status == 200 and "ring_timeout" not in await r.json()
    assert await (await client.get("/v1/policies/night", headers=OPS)).json() == {
        "name": "night", **QUIET}
    listed = await (await client.get("/v1/policies", headers=OPS)).json()
    assert listed == {"policies": [{"name": "night", **QUIET}], "default_policy": None}
    assert (await client.put("/v1/policies/x", headers=OPS, json={})).status == 403
    assert set(await node.policy_store.all()) == {"night"}
    assert (await client.delete("/v1/policies/night", headers=ADMIN)).status == 200
    assert (await client.get("/v1/policies/night", headers=ADMIN)).status == 404
    assert (await client.delete("/v1/policies/night", headers=ADMIN)).status == 404
    assert await node.policy_store.all() == {}


@pytest.mark.parametrize("body", [
    {"quiet_hours": {"from": "22:00", "to": "24:00", "tz": "Asia/Shanghai"}},
    {"quiet_hours": {"from": "22:00", "to": "08:00", "tz": "Nowhere/Special"}},
    {"ring_timeout": -5},
    {"max_calls": {"count": -1, "per": 60}},
    {"directions": ["sideways"]},
])
async def test_invalid_policy_is_422_and_changes_nothing(client: Client, node: Node,
                                                         body: dict[str, object]) -> None:
    assert (await client.put("/v1/policies/p", headers=ADMIN, json=QUIET)).status == 201
    r = await client.put("/v1/policies/p", headers=ADMIN, json=body)
    assert r.status == 422 and (await r.json())["error"] == "invalid_policy"
    assert await (await client.get("/v1/policies/p", headers=ADMIN)).json() == {
        "name": "p", **QUIET}
    assert (await node.policy_store.all())["p"] == {"name": "p", **QUIET}
    assert (await client.put("/v1/policies/bad%20name", headers=ADMIN, json={})).status == 422


async def test_route_dry_run_under_a_policy(client: Client) -> None:
    await client.put("/v1/policies/night", headers=ADMIN, json={**QUIET, "max_call_seconds": 90})
    b = await bind(client, policy="night")
    assert await route(client, A) == {"action": "refuse", "code": 480, "reason": "quiet_hours",
                                      "cause": 21, "binding": b["id"], "retry_after": 3600}
    sms = await route(client, A, "sms")
    assert sms["reason"] == "quiet_hours"
    assert await route(client, B) == {"action": "bridge", "to": A, "binding": b["id"],
                                      "direction": "b_to_a", "max_call_seconds": 90}
    await client.put("/v1/policies/night", headers=ADMIN, json={"directions": ["a_to_b"]})
    assert (await route(client, B))["reason"] == "direction"
    assert (await route(client, A))["action"] == "bridge"


async def test_default_policy_and_a_second_node(client: Client, node: Node,
                                                tmp_path: Path) -> None:
    await bind(client)  # names no policy
    other = await opened(make_node(tmp_path, default="house"))
    try:
        async with TestClient(TestServer(build_api(other))) as c2:
            assert (await route(c2, A))["action"] == "bridge"
            assert (await client.put("/v1/policies/house", headers=ADMIN,
                                     json=QUIET)).status == 201
            other.policies.replace(await other.policy_store.all())  # one refresh
            assert (await route(c2, A))["reason"] == "quiet_hours"
            assert (await route(client, A))["action"] == "bridge"  # no default here
    finally:
        await other.policy_store.close()
        await other.store.close()


def test_dialplan_config(tmp_path: Path) -> None:
    f = tmp_path / "relay.toml"
    f.write_text('[dialplan]\ndefault_policy = "house"\npolicy_refresh = 2\n')
    cfg = load_config(str(f), env={})
    assert cfg.default_policy == "house" and cfg.policy_refresh == 2.0
    assert cfg.sections.dialplan.default_policy == "house"
    f.write_text('[dialplan]\ndefault_polcy = "house"\n')
    with pytest.raises(ConfigError):
        load_config(str(f), env={})


def test_cli_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from relay.cli import main

    store = ["--store", f"sqlite:///{tmp_path}/relay.db"]
    assert main(["policies", *store, "set", "night", json.dumps(QUIET)]) == 0
    assert main(["policies", *store, "set", "bad", '{"ring_timeout": -1}']) == 1
    assert "invalid_policy" in capsys.readouterr().err
    assert main(["policies", *store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policies"] == [{"name": "night", **QUIET}]
    assert main(["policies", *store, "rm", "night"]) == 0
    assert main(["policies", *store, "show", "night"]) == 1


async def test_blocklist_api(client: Client, node: Node) -> None:
    b = await bind(client)
    r = await client.put(f"/v1/blocklist/{A}", headers=ADMIN, json={"reason": "harassment"})
    assert r.status == 201
    assert (await r.json())["number"] == A and (await r.json())["x"] is None
    assert await route(client, A) == {"action": "refuse", "code": 603, "reason": "blocked",
                                      "cause": 21, "binding": b["id"]}
    assert (await route(client, A, "sms"))["reason"] == "blocked"
    assert (await route(client, B))["action"] == "bridge"
    listed = await (await client.get("/v1/blocklist", headers=OPS)).json()
    assert [e["number"] for e in listed["blocklist"]] == ["+86138****0001"]
    assert (await client.put(f"/v1/blocklist/{B}", headers=OPS,
                             json={"reason": "r"})).status == 403
    for bad in ({}, {"reason": "r", "until": T0 - 1}, {"reason": "r", "colour": 1}):
        r = await client.put(f"/v1/blocklist/{B}", headers=ADMIN, json=bad)
        assert r.status == 422, bad
    assert (await client.put("/v1/blocklist/nonsense", headers=ADMIN,
                             json={"reason": "r"})).status == 422
    assert len(await node.policy_store.blocks()) == 1
    # Per X, with an expiry: B is blocked on X1 only until T0 + 60.
    r = await client.put(f"/v1/blocklist/{B}", headers=ADMIN,
                         json={"reason": "ex", "x": X1, "until": T0 + 60})
    assert r.status == 201 and (await r.json())["x"] == X1
    assert (await route(client, B))["reason"] == "blocked"
    assert (await client.delete(f"/v1/blocklist/{B}", headers=ADMIN)).status == 404  # global
    assert (await client.delete(f"/v1/blocklist/{B}", params={"x": X1},
                                headers=ADMIN)).status == 200
    assert (await client.delete(f"/v1/blocklist/{A}", headers=ADMIN)).status == 200
    assert (await route(client, A))["action"] == "bridge"
    assert await node.policy_store.blocks() == []


def test_cli_blocklist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from relay.cli import main

    store = ["--store", f"sqlite:///{tmp_path}/relay.db"]
    assert main(["blocklist", *store, "add", A, "--reason", "spam"]) == 0
    assert main(["blocklist", *store, "add", B, "--reason", "ex", "--x", X1,
                 "--until", "2099-01-01T00:00:00Z"]) == 0
    capsys.readouterr()
    assert main(["blocklist", *store, "--json", "--role", "ops"]) == 0
    rows = json.loads(capsys.readouterr().out)["blocklist"]
    assert [(r["number"], r["x"]) for r in rows] == [("+86138****0001", None),
                                                     ("+86139****0001", X1)]
    assert main(["blocklist", *store, "rm", B]) == 1  # only the X1 entry exists
    assert main(["blocklist", *store, "rm", B, "--x", X1]) == 0
    assert main(["blocklist", *store, "add", A, "--reason", "r", "--until", "1"]) == 1


async def test_callers_score_and_max_score_in_the_dry_run(client: Client, node: Node) -> None:
    from dialplan.score import Contact

    await client.put("/v1/policies/strict", headers=ADMIN,
                     json={"max_score": 5, "max_calls": {"count": 1, "per": "1h"}})
    b = await bind(client, policy="strict")
    # Four calls B declined in the last day: refused_7d 4, 2 beyond the free 2 -> 6 points.
    await node.contacts.add([(A, Contact(T0 - 60 * i, str(b["id"]), "call", refused=True))
                             for i in range(4)])
    got = await (await client.get(f"/v1/callers/{A}", headers=ADMIN)).json()
    assert got["number"] == A and got["score"] == 6 and got["blocked"] is False
    assert got["inputs"]["refused_7d"] == 4 and got["points"]["refused_7d"] == 6.0
    # Issue 13: a number's history would tell ops whether it is a party: admin only.
    assert (await client.get(f"/v1/callers/{A}", headers=OPS)).status == 403
    assert (await client.get("/v1/callers/nonsense", headers=ADMIN)).status == 422
    assert (await route(client, A))["reason"] == "score"
    # B has no history: the counter decides, and a dry run does not count.
    assert (await route(client, B))["action"] == "bridge"
    assert (await route(client, B))["action"] == "bridge"
    await node.counters.take(f"call:{b['id']}:{B}", T0, Limit(1, 3600))
    assert (await route(client, B))["reason"] == "frequency"
