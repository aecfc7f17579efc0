"""Two `relay serve` processes on one real Redis: freezes propagate, Redis outages degrade."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from relay.bindings.pool import NumberPool
from relay.bindings.service import BindingService, Lifecycle
from relay.bindings.store import open_store
from relay.bindings.table import BindingTable

X = [f"+861700000000{i}" for i in range(1, 8)]
A = [f"+861380000000{i}" for i in range(1, 8)]
B = [f"+861390000000{i}" for i in range(1, 8)]

pytestmark = pytest.mark.integration


async def wait_for(check: Any, timeout: float, step: float = 0.002) -> float:
    """Poll `check()` until true; returns the seconds it took."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if await check():
            return time.perf_counter() - t0
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


async def test_freeze_propagates_and_outage_degrades(redis_server: Any,
                                                     relay_factory: Any) -> None:
    n1 = relay_factory(redis_server.url, name="n1")
    n2 = relay_factory(redis_server.url, name="n2")
    async with aiohttp.ClientSession() as http:
        async def post(node: Any, path: str, body: Any = None) -> Any:
            async with http.post(node.base + path, json=body) as r:
                return r.status, await r.json()

        async def route(node: Any, caller: str, x: str) -> dict[str, Any]:
            async with http.get(node.base + "/v1/route", params={"from": caller, "to": x}) as r:
                return dict(await r.json())

        async def health(node: Any) -> str:
            async with http.get(node.base + "/healthz") as r:
                return str((await r.json())["status"])

        status, _ = await post(n1, "/v1/numbers", {"numbers": X})
        assert status == 201
        ids = []
        for i in range(6):
            status, b = await post(n1, "/v1/bindings",
                                   {"mode": "AXB", "a": A[i], "b": B[i], "x": X[i]})
            assert status == 201
            ids.append(b["id"])

        async def n2_bridges() -> bool:
            answers = [await route(n2, A[i], X[i]) for i in range(6)]
            return all(r["action"] == "bridge" for r in answers)
        await wait_for(n2_bridges, 5.0)

        # A freeze through node 1 reaches node 2's in-memory table.
        delays = []
        for i in range(5):
            status, _ = await post(n1, f"/v1/bindings/{ids[i]}/freeze")
            assert status == 200
            t0 = time.perf_counter()

            async def refused(i: int = i) -> bool:
                r = await route(n2, A[i], X[i])
                return r["action"] == "refuse" and r["code"] == 410
            await wait_for(refused, 5.0)
            delays.append(time.perf_counter() - t0)
        assert max(delays) < 0.100, delays  # measured: ~1-3 ms each on loopback

        # Redis goes away: both nodes keep routing from memory and say degraded.
        redis_server.stop()

        async def both_degraded() -> bool:
            return await health(n1) == "degraded" and await health(n2) == "degraded"
        await wait_for(both_degraded, 10.0, 0.05)
        for node in (n1, n2):
            assert (await route(node, A[5], X[5]))["action"] == "bridge"
            assert (await route(node, A[0], X[0]))["code"] == 410
        status, err = await post(n1, "/v1/bindings", {"mode": "AXB", "a": A[6], "b": B[6]})
        assert status == 503 and err["error"] == "store_unavailable"

        # Redis returns; a change is made at once, likely before the nodes reconnect.
        redis_server.start()
        store = open_store(redis_server.url)
        await store.open()
        table, pool = BindingTable(), NumberPool()
        svc = BindingService(store, table, pool, Lifecycle())
        await svc.freeze(ids[5], "ops")
        await store.close()

        async def both_caught_up() -> bool:
            return (await health(n1) == "ok" and await health(n2) == "ok"
                    and (await route(n1, A[5], X[5])).get("code") == 410
                    and (await route(n2, A[5], X[5])).get("code") == 410)
        await wait_for(both_caught_up, 15.0, 0.05)
