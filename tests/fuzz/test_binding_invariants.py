"""Property: no sequence of operations yields two live bindings sharing X and a party,
or a route through a frozen or expired binding; the memory table always equals the store."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fuzz_budget import fuzz_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dialplan.route import decide
from relay.bindings.model import Mode, State
from relay.bindings.pool import NumberPool
from relay.bindings.service import BindingService, Lifecycle
from relay.bindings.store import open_store
from relay.bindings.table import BindingTable
from relay.bindings.validate import parse_create
from relay.errors import RelayError

NUMBERS = [f"+861700000000{i}" for i in range(3)]
PEOPLE = [f"+861380000000{i}" for i in range(5)]


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Lifecycles(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.store = open_store(f"sqlite:///{Path(self.dir.name) / 'r.db'}")
        self.table = BindingTable()
        self.pool = NumberPool()
        self.svc = BindingService(self.store, self.table, self.pool,
                                  Lifecycle(quarantine=30.0, frozen_hold=60.0), self.clock)
        self.run(self.store.open())
        self.run(self.svc.add_numbers(NUMBERS, None))
        self.ids: list[str] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.dir.cleanup()

    @rule(mode=st.sampled_from(["AXB", "AXN"]), a=st.sampled_from(PEOPLE),
          b=st.sampled_from(PEOPLE), x=st.none() | st.sampled_from(NUMBERS),
          ttl=st.none() | st.integers(1, 100), out=st.none() | st.sampled_from(["o1", "o2"]))
    def create(self, mode: str, a: str, b: str, x: str | None, ttl: int | None,
               out: str | None) -> None:
        body: dict[str, Any] = {"mode": mode, "a": a, "b": b}
        if x:
            body["x"] = x
        if ttl:
            body["ttl"] = ttl
        if out:
            body["out_id"] = out
        try:
            binding, _ = self.run(self.svc.create(parse_create(body, "", self.clock())))
        except RelayError:
            return
        self.ids.append(binding.id)

    @precondition(lambda self: self.ids)
    @rule(i=st.integers(0, 50), op=st.sampled_from(["freeze", "release", "patch_b", "ttl"]),
          who=st.sampled_from(PEOPLE))
    def change(self, i: int, op: str, who: str) -> None:
        bid = self.ids[i % len(self.ids)]
        try:
            if op == "freeze":
                self.run(self.svc.freeze(bid))
            elif op == "release":
                self.run(self.svc.release(bid))
            elif op == "patch_b":
                self.run(self.svc.update(bid, {"b": who}))
            else:
                self.run(self.svc.update(bid, {"expires_at": self.clock() + 5}))
        except RelayError:
            pass

    @rule(seconds=st.sampled_from([1, 10, 31, 61]))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += seconds

    @rule()
    def sweep(self) -> None:
        self.run(self.svc.sweep())

    def _live(self) -> list[Any]:
        snap = self.run(self.store.snapshot())
        return list(snap.bindings())

    @invariant()
    def no_shared_party_or_number(self) -> None:
        pairs: set[tuple[str, str]] = set()
        axn: set[str] = set()
        modes: dict[str, Mode] = {}
        for b in self._live():
            assert modes.setdefault(b.x, b.mode) is b.mode, "one number, two modes"
            if b.mode is Mode.AXN:
                assert b.x not in axn, "two live AXN bindings on one number"
                axn.add(b.x)
            else:
                for p in (b.a, b.b):
                    assert (b.x, p) not in pairs, "two live bindings share X and a party"
                    pairs.add((b.x, p))

    @invariant()
    def never_routes_through_frozen(self) -> None:
        now = self.clock()
        for b in self._live():
            if b.effective_state(now) is State.ACTIVE:
                continue
            for caller in (b.a, b.b):
                d = decide(self.table.lookup(b.x, caller), self.table.in_use(b.x), caller, now)
                assert d.action == "refuse" and d.code == 410, (b, d)

    @invariant()
    def table_equals_store(self) -> None:
        live = {b.id: b.version for b in self._live()}
        mem = {e.id: e.version for e in self.table.entries()}
        assert mem == live


TestLifecycles = Lifecycles.TestCase
TestLifecycles.settings = fuzz_settings(40, stateful_step_count=25)
