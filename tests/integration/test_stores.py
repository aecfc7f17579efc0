"""The binding service over both real stores: the same cases, the same answers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.bindings.model import State
from relay.bindings.pool import NumberPool
from relay.bindings.service import BindingService, Lifecycle
from relay.bindings.store import Store, open_store
from relay.bindings.sync import Follower
from relay.bindings.table import BindingTable
from relay.bindings.validate import parse_create
from relay.errors import Conflict

A, B, C, D = "+8613800000001", "+8613900000001", "+8613700000001", "+8613600000001"
X1, X2 = "+8617000000001", "+8617000000002"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.table = BindingTable()
        self.pool = NumberPool()
        self.follower = Follower(store, self.table, self.pool, block=0.05)
        self.svc = BindingService(store, self.table, self.pool,
                                  Lifecycle(quarantine=100.0, frozen_hold=50.0), clock)

    async def create(self, **body: object):  # type: ignore[no-untyped-def]
        body.setdefault("mode", "AXB")
        return await self.svc.create(parse_create(body, "", self.clock()))


@pytest.fixture(params=["sqlite", "redis"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/relay.db"
    else:
        url = request.getfixturevalue("redis_server").url
    store = open_store(url)
    await store.open()
    e = Env(store, Clock())
    await e.follower.load()
    await e.svc.add_numbers([X1, X2], "0571")
    yield e
    await store.close()


async def test_create_is_idempotent_by_out_id(env: Env) -> None:
    b1, created1 = await env.create(a=A, b=B, ttl=600, out_id="order-1")
    b2, created2 = await env.create(a=A, b=B, ttl=600, out_id="order-1")
    assert created1 and not created2 and b1.id == b2.id
    assert (await env.store.query(out_id="order-1"))[0] == [b1]


async def test_axb_reuses_x_but_never_shares_a_party(env: Env) -> None:
    b1, _ = await env.create(a=A, b=B, x=X1)
    b2, _ = await env.create(a=C, b=D, x=X1)  # one X serves pairs whose parties differ
    assert b2.x == X1
    b3, _ = await env.create(a=A, b=D)  # A and D already hold X1: it must be X2
    assert b3.x == X2
    with pytest.raises(Conflict) as exc:  # A holds both numbers now
        await env.create(a=A, b=C)
    assert exc.value.code == "pool_exhausted"
    live = [b1, b2, b3]
    pairs = [(b.x, p) for b in live for p in (b.a, b.b)]
    assert len(pairs) == len(set(pairs))


async def test_explicit_x_conflict_is_409(env: Env) -> None:
    await env.create(a=A, b=B, x=X1)
    with pytest.raises(Conflict) as exc:
        await env.create(a=A, b=C, x=X1)
    assert exc.value.status == 409 and exc.value.code == "number_busy"


async def test_axn_takes_a_number_alone(env: Env) -> None:
    n1, _ = await env.create(mode="AXN", b=B)
    n2, _ = await env.create(mode="AXN", b=C)
    assert {n1.x, n2.x} == {X1, X2}
    with pytest.raises(Conflict) as exc:
        await env.create(mode="AXN", b=D)
    assert exc.value.code == "pool_exhausted"
    with pytest.raises(Conflict):  # an AXB cannot join a number an AXN holds
        await env.create(a=A, b=D, x=n1.x)


async def test_freeze_release_and_illegal_moves(env: Env) -> None:
    b, _ = await env.create(a=A, b=B, out_id="o")
    f = await env.svc.freeze(b.id)
    assert f.state is State.FROZEN and f.version == 2
    assert (await env.svc.freeze(b.id)).version == 2  # idempotent
    with pytest.raises(Conflict) as exc:
        await env.svc.update(b.id, {"record": False})
    assert exc.value.code == "illegal_transition"
    r = await env.svc.release(b.id)
    assert r.state is State.RELEASED
    with pytest.raises(Conflict):
        await env.svc.freeze(b.id)
    assert env.table.lookup(b.x, A) is None


async def test_quarantine_before_reuse(env: Env) -> None:
    b, _ = await env.create(mode="AXN", b=B, x=X1)
    await env.svc.release(b.id)
    with pytest.raises(Conflict):  # the number waits out its quarantine
        await env.create(mode="AXN", b=C, x=X1)
    env.clock.now += 101
    again, _ = await env.create(mode="AXN", b=C, x=X1)
    assert again.x == X1


async def test_sweeper_freezes_expired_then_releases(env: Env) -> None:
    b, _ = await env.create(a=A, b=B, ttl=10)
    env.clock.now += 11
    assert await env.svc.sweep() == 1
    got = await env.store.get(b.id)
    assert got is not None and got.state is State.FROZEN and got.reason == "expired"
    env.clock.now += 51
    assert await env.svc.sweep() == 1
    got = await env.store.get(b.id)
    assert got is not None and got.state is State.RELEASED


async def test_follower_sees_changes_of_another_writer(env: Env) -> None:
    other = Env(env.store, env.clock)  # a second node on the same store
    await other.follower.load()
    other.follower.start()
    try:
        b, _ = await env.create(a=A, b=B)
        await env.svc.freeze(b.id)
        for _ in range(100):
            e = other.table.lookup(b.x, A)
            if e is not None and e.state is State.FROZEN:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the second node never saw the freeze")
    finally:
        await other.follower.stop()


async def test_patch_b_moves_the_claim(env: Env) -> None:
    b, _ = await env.create(a=A, b=B, x=X1)
    await env.svc.update(b.id, {"b": C})
    assert env.table.lookup(X1, C) is not None and env.table.lookup(X1, B) is None
    with pytest.raises(Conflict):  # B's old pair on X1 sits in quarantine
        await env.create(a=B, b=D, x=X1)
    env.clock.now += 101
    again, _ = await env.create(a=B, b=D, x=X1)
    assert again.x == X1


def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    """Every committed change is on disk when the process dies without warning."""
    db = tmp_path / "relay.db"
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        from relay.bindings.store import open_store
        from relay.bindings.model import Binding, Mode, NumberRecord
        from relay.bindings.claims import ops_for
        async def main():
            s = open_store("sqlite:///{db}")
            await s.open()
            for i in range(200):
                b = Binding(id=f"{{i:016x}}", mode=Mode.AXN, x=f"+861700000{{i:04d}}",
                            b="+8613900000001")
                await s.commit(b, 0, ops_for(None, b), 1.0, 10.0)
                sys.stdout.write(f"{{i}}\\n"); sys.stdout.flush()
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last == 199:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    async def count() -> int:
        s = open_store(f"sqlite:///{db}")
        await s.open()
        snap = await s.snapshot()
        await s.close()
        return len(list(snap.bindings()))
    assert last == 199
    assert asyncio.run(count()) == 200
