"""The events journal (relay.events.journal) with a real SQLite record store: what a
run journaled and never committed comes back at the next start, a record only where the
store lacks it, a line cut short by the kill is ignored, and committed segments go."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.events.journal import EventJournal
from relay.events.model import make_event
from relay.records import RecordWriter, SqliteRecordStore

T0 = 1_800_000_000.0


def _rec(i: int, state: str) -> dict[str, object]:
    return {"id": f"c{i}", "started_at": T0 + i, "x": "+1", "state": state}


async def _until(cond: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_killed_run_is_replayed_and_then_forgotten(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    first = EventJournal(jdir)
    await first.replay(RecordWriter(SqliteRecordStore(str(tmp_path / "x.db"))),
                       SqliteRecordStore(str(tmp_path / "x.db")))
    first.start()
    events = [make_event("call.ended", f"c{i}", T0 + i, {"call_id": f"c{i}"})
              for i in range(3)]
    for i, e in enumerate(events):
        first.append([e], "call", _rec(i, "ended"))
    await _until(lambda: first.written == 3)
    # The "kill": the task dies with nothing committed; a torn line follows.
    first._task.cancel()  # type: ignore[union-attr]
    (seg,) = jdir.glob("events-*.jnl")
    with seg.open("ab") as f:
        f.write(b'{"k":"call","r":{"id":"c9"')

    store = SqliteRecordStore(str(tmp_path / "relay.db"))
    await store.open()
    await store.put("call", _rec(1, "newer"))  # c1 is already there: not overwritten
    writer = RecordWriter(store, linger=0.01)
    writer.start()
    again = EventJournal(jdir)
    writer.on_commit.append(again.committed)
    assert await again.replay(writer, store) == 3
    again.start()
    try:
        await _until(lambda: not list(jdir.glob("events-*.jnl")))  # committed: deleted
        assert (await store.get("call", "c0"))["state"] == "ended"  # type: ignore[index]
        assert (await store.get("call", "c1"))["state"] == "newer"  # type: ignore[index]
        assert await store.get("call", "c9") is None
        ids = {r[0] for r in store._conn().execute("SELECT id FROM outbox").fetchall()}
        assert ids == {e.id for e in events}
    finally:
        await again.stop()
        await writer.stop()
        await store.close()
