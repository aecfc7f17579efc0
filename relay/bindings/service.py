"""Binding lifecycle operations: create (with number allocation), update, freeze, release
and the expiry sweep, over any store, keeping this node's table current as it goes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, Conflict, NotFound
from .claims import ClaimConflict, ops_for
from .model import Binding, IllegalTransition, Mode, NumberRecord, State, new_binding_id
from .model import transition as next_state
from .pending import PendingJournal
from .pool import NumberPool
from .store import Store, StoreUnavailable, VersionConflict
from .table import BindingTable
from .validate import CreateRequest

if TYPE_CHECKING:
    from relay.events.model import Event

__all__ = ["BindingService", "Lifecycle"]

log = logging.getLogger("relay.bindings")

_MAX_ALLOCATION_TRIES = 16
_MAX_CAS_TRIES = 5


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Lifecycle settings (config `[bindings]`)."""

    default_cc: str = ""
    quarantine: float = 86400.0  # a released number or pair waits this long before reuse
    frozen_hold: float = 7 * 86400.0  # a frozen binding refuses calls this long, then releases
    ext_digits: int = 4  # allocated AXE extensions


class BindingService:
    """The one place that changes bindings; the API and the CLI both go through it."""

    def __init__(self, store: Store, table: BindingTable, pool: NumberPool,
                 lifecycle: Lifecycle, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.table = table
        self.pool = pool
        self.lifecycle = lifecycle
        self.clock = clock
        #: Set by the events subsystem: the events a change makes (binding.frozen), which
        #: the store commits in the change's own transaction.
        self.events_for: Callable[[Binding, Binding, float], Sequence[Event]] | None = None
        #: Set by the node (issue 13): freezes that cannot reach the store are kept here
        #: and take effect in this node's table at once; `store_down` says not to try.
        self.pending: PendingJournal | None = None
        self.store_down: Callable[[], bool] = lambda: False
        self.store_timeout = 1.0

    # -- create --------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> tuple[Binding, bool]:
        """A new active binding, or the live one with the same out_id (created=False)."""
        now = self.clock()
        if req.out_id:
            existing = await self._active_by_out_id(req.out_id)
            if existing is not None:
                return existing, False
        if req.x is not None:
            if req.x not in self.pool:
                raise BadRequest(f"{req.x} is not in the number pool", "number_not_in_pool")
            candidates: Any = iter([req.x])
        else:
            parties = tuple(p for p in (req.a, req.b) if p and req.mode is Mode.AXB)
            candidates = self.pool.candidates(self.table, req.mode, now, area=req.area,
                                              parties=parties)
        last: ClaimConflict | None = None
        for _ in range(_MAX_ALLOCATION_TRIES):
            x = next(candidates, None)
            if x is None:
                break
            ext = req.ext
            if req.mode is Mode.AXE and ext is None:
                ext = self._free_ext(x)
            binding = Binding(
                id=new_binding_id(), mode=req.mode, x=x, a=req.a, b=req.b, ext=ext,
                expires_at=req.expires_at, record=req.record, voice=req.voice, sms=req.sms,
                out_id=req.out_id, max_call_seconds=req.max_call_seconds, policy=req.policy,
                area=self.pool.numbers[x].area, created_at=now, updated_at=now, version=1,
            )
            try:
                await self.store.commit(binding, 0, ops_for(None, binding), now,
                                        self.lifecycle.quarantine)
            except ClaimConflict as exc:
                last = exc
                if exc.key.startswith("o:"):  # a concurrent create for the same order won
                    existing = await self._active_by_out_id(req.out_id or "")
                    if existing is not None:
                        return existing, False
                continue
            self.table.apply(binding)
            return binding, True
        if req.x is not None and last is not None:
            raise Conflict(f"{req.x} cannot take this binding now ({last.holder})",
                           "number_busy")
        raise Conflict("no number in the pool can take this binding", "pool_exhausted")

    async def _active_by_out_id(self, out_id: str) -> Binding | None:
        holder = await self.store.claim(f"o:{out_id}")
        if holder is None or holder.startswith("q:"):
            return None
        b = await self.store.get(holder)
        return b if b is not None and b.state is State.ACTIVE else None

    def _free_ext(self, x: str) -> str:
        digits = self.lifecycle.ext_digits
        for _ in range(64):
            ext = f"{random.randrange(10 ** digits):0{digits}d}"
            if not self.table.ext_taken(x, ext):
                return ext
        raise Conflict(f"no free extension left on {x}", "pool_exhausted")

    # -- changes -------------------------------------------------------------------------

    async def get(self, binding_id: str) -> Binding:
        b = await self.store.get(binding_id)
        if b is None:
            raise NotFound(f"no binding {binding_id}")
        return b

    async def update(self, binding_id: str, changes: dict[str, Any]) -> Binding:
        def change(b: Binding, now: float) -> Binding:
            if b.expired(now):
                raise IllegalTransition(State.FROZEN, "update")
            next_state(b.state, "update")
            if "b" in changes and changes["b"] in (b.a, b.x):
                raise BadRequest("b must differ from a and x")
            return b.replace(**changes)
        return await self._mutate(binding_id, change)

    async def freeze(self, binding_id: str, reason: str = "api",
                     at: float | None = None) -> Binding:
        def change(b: Binding, now: float) -> Binding:
            if b.state is State.FROZEN:
                return b
            next_state(b.state, "freeze")
            return b.replace(state=State.FROZEN, frozen_at=at or now, reason=reason)
        return await self._mutate(binding_id, change)

    async def release(self, binding_id: str, reason: str = "api",
                      at: float | None = None) -> Binding:
        def change(b: Binding, now: float) -> Binding:
            if b.state is State.RELEASED:
                return b
            next_state(b.state, "release")
            return b.replace(state=State.RELEASED, released_at=at or now, reason=reason,
                             frozen_at=b.frozen_at or at or now)
        return await self._mutate(binding_id, change)

    # -- freezes never wait (issue 13) ---------------------------------------------------

    async def stop_now(self, binding_id: str, op: str, reason: str = "api"
                       ) -> tuple[Binding, bool]:
        """Freeze (`op` "freeze") or release a binding even while the store is down.

        Returns the binding and whether the store has it yet. When the store cannot be
        reached (known down, an error, or no answer within `store_timeout`) the binding
        is frozen in this node's table at once and the change waits in the pending
        journal for `replay_pending`; a release waiting there refuses calls as frozen.
        """
        apply = self.freeze if op == "freeze" else self.release
        if self.pending is None:
            return await apply(binding_id, reason), True
        if not self.store_down():
            try:
                return await asyncio.wait_for(apply(binding_id, reason),
                                              self.store_timeout), True
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("store unavailable for %s of %s; applied locally: %s", op,
                            binding_id, exc or "timeout")
        entry = self.table.find(binding_id)
        if entry is None:
            raise StoreUnavailable(f"the store is down and binding {binding_id} is not "
                                   "live in this node's table")
        now = self.clock()
        old = Binding(**entry.as_dict())  # type: ignore[arg-type]
        if old.state is not State.FROZEN:
            new = old.replace(state=State.FROZEN, frozen_at=now, reason=reason,
                              updated_at=now, version=old.version + 1)
            self.table.apply(new)
        else:
            new = old
        self.pending.add(op, binding_id, reason, now)
        return new, False

    def overlay_pending(self) -> None:
        """Re-apply waiting freezes to the table (after a load from a store that has
        not taken them yet: a restart while it was down)."""
        if not self.pending:
            return
        for ch in self.pending.entries():
            entry = self.table.find(ch.binding)
            if entry is not None and entry.state is not State.FROZEN:
                old = Binding(**entry.as_dict())  # type: ignore[arg-type]
                self.table.apply(old.replace(state=State.FROZEN, frozen_at=ch.at,
                                             reason=ch.reason, version=old.version + 1))

    async def replay_pending(self) -> int:
        """Write waiting freezes and releases to the store, oldest first; each is
        forgotten once written (or once the store says it cannot apply). Returns how
        many were written; StoreUnavailable leaves the rest for the next try."""
        if not self.pending:
            return 0
        done = 0
        for ch in self.pending.entries():
            apply = self.freeze if ch.op == "freeze" else self.release
            try:
                b = await apply(ch.binding, ch.reason, at=ch.at)
                if b.state is State.RELEASED:
                    # The local freeze took the version the store's release now has:
                    # one above it makes this node's table let go of the binding too.
                    self.table.apply(b.replace(version=b.version + 1),
                                     self.clock() + self.lifecycle.quarantine)
                done += 1
            except (NotFound, Conflict) as exc:  # released meanwhile, or gone
                log.warning("pending %s of %s dropped: %s", ch.op, ch.binding, exc.detail)
            self.pending.done(ch.seq)
        return done

    async def _mutate(self, binding_id: str,
                      change: Callable[[Binding, float], Binding]) -> Binding:
        for _ in range(_MAX_CAS_TRIES):
            old = await self.get(binding_id)
            now = self.clock()
            try:
                new = change(old, now)
            except IllegalTransition as exc:
                raise Conflict(str(exc), "illegal_transition") from None
            if new is old:
                return old
            new = new.replace(updated_at=now, version=old.version + 1)
            events = self.events_for(old, new, now) if self.events_for is not None else ()
            try:
                await self.store.commit(new, old.version, ops_for(old, new), now,
                                        self.lifecycle.quarantine, events)
            except VersionConflict:
                continue
            except ClaimConflict as exc:
                raise Conflict(f"cannot apply the change: {exc.key.split(':')[0]} claim is "
                               "held by another binding", "number_busy") from None
            q_until = now + self.lifecycle.quarantine if new.state is State.RELEASED else None
            self.table.apply(new, q_until)
            return new
        raise Conflict("the binding keeps changing under us; try again", "busy")

    # -- pool ----------------------------------------------------------------------------

    async def add_numbers(self, numbers: list[str], area: str | None) -> int:
        now = self.clock()
        recs = [NumberRecord(n, area, now) for n in numbers]
        added = await self.store.add_numbers(recs)
        for r in recs:
            self.pool.add(r)
        return added

    # -- the sweeper ---------------------------------------------------------------------

    async def sweep(self, limit: int = 500) -> int:
        """Freeze what expired and release what has been frozen long enough."""
        now = self.clock()
        done = 0
        for b in await self.store.due(now, self.lifecycle.frozen_hold, limit):
            try:
                if b.state is State.ACTIVE and b.expired(now):
                    await self.freeze(b.id, "expired")
                    done += 1
                elif (b.state is State.FROZEN and b.frozen_at is not None
                      and b.frozen_at + self.lifecycle.frozen_hold <= now):
                    await self.release(b.id, "frozen_hold")
                    done += 1
            except (Conflict, NotFound) as exc:  # another node got there first
                log.debug("sweep %s: %s", b.id, exc)
        return done
