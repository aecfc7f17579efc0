"""Call/message records on both real stores, and the writer riding out an outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.records import RecordStore, RecordWriter, open_record_store


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
    else:
        url = request.getfixturevalue("redis_server").url
    s = open_record_store(url)
    await s.open()
    yield s
    await s.close()


def rec(i: int, **kw: Any) -> dict[str, Any]:
    r = {"id": f"call-{i}", "started_at": 1000.0 + i, "x": "+8617000000001" if i % 2 else
         "+8617000000002", "binding": f"b{i % 3}", "sip_code": 200}
    r.update(kw)
    return r


async def test_put_get_and_upsert(store: RecordStore) -> None:
    await store.put("call", rec(1))
    await store.put("call", rec(1, sip_code=487))
    got = await store.get("call", "call-1")
    assert got is not None and got["sip_code"] == 487
    assert await store.get("call", "nope") is None
    assert await store.get("message", "call-1") is None  # kinds are separate


async def test_query_newest_first_with_filters_and_pages(store: RecordStore) -> None:
    await store.put_many("call", [rec(i) for i in range(25)])
    page, nxt = await store.query("call", limit=10)
    assert [r["id"] for r in page] == [f"call-{i}" for i in range(24, 14, -1)]
    seen = [r["id"] for r in page]
    while nxt:
        page, nxt = await store.query("call", limit=10, cursor=nxt)
        seen += [r["id"] for r in page]
    assert seen == [f"call-{i}" for i in range(24, -1, -1)]
    odd, _ = await store.query("call", x="+8617000000001", limit=100)
    assert {r["id"] for r in odd} == {f"call-{i}" for i in range(1, 25, 2)}
    both, _ = await store.query("call", x="+8617000000001", binding="b0", limit=100)
    assert {r["id"] for r in both} == {f"call-{i}" for i in (3, 9, 15, 21)}
    window, _ = await store.query("call", since=1010.0, until=1013.0)
    assert [r["id"] for r in window] == ["call-12", "call-11", "call-10"]
    paged, nxt = await store.query("call", x="+8617000000002", limit=5)
    rest, _ = await store.query("call", x="+8617000000002", limit=50, cursor=nxt)
    assert len(paged) == 5 and len(rest) == 8 and not {r["id"] for r in paged} & {
        r["id"] for r in rest}


async def test_writer_keeps_records_while_redis_is_down(redis_server: Any) -> None:
    store = open_record_store(redis_server.url)
    await store.open()
    writer = RecordWriter(store)
    writer.start()
    writer.submit("call", rec(1))
    for _ in range(100):
        if writer.written == 1:
            break
        await asyncio.sleep(0.02)
    redis_server.stop()
    writer.submit("call", rec(2))
    writer.submit("call", rec(3))
    await asyncio.sleep(0.5)
    assert writer.pending == 2 and writer.failures >= 1
    redis_server.start()
    await writer.stop(timeout=10)
    assert writer.pending == 0
    assert await store.get("call", "call-3") is not None
    await store.close()


async def test_writer_merges_updates_of_one_record(tmp_path: Path) -> None:
    store = open_record_store(f"sqlite:///{tmp_path}/relay.db")
    await store.open()
    writer = RecordWriter(store, linger=0.2)
    writer.start()
    writer.submit("call", rec(1, sip_code=180))
    writer.submit("call", rec(1, sip_code=200))
    writer.submit("call", rec(2))
    assert writer.pending == 2
    await writer.stop()
    got = await store.get("call", "call-1")
    assert got is not None and got["sip_code"] == 200 and writer.written == 2
    await store.close()
