"""The in-memory binding table every node keeps: all live bindings, looked up without I/O.

Memory matters (a node holds millions of bindings), so each binding is one immutable
packed record (`struct` bytes) referenced from a dict keyed by a single int:

* AXB: `(x << 50) | party` for each of A and B (E.164 needs at most 50 bits);
* AXN: `x` alone (always < 2**50, so it cannot collide with a pair key);
* AXE: `(x, ext)` in a dict of its own (extensions keep their leading zeros).

A change replaces the record; nothing is mutated in place, so a reader never sees half
an update.  Versions make replays from the change feed idempotent.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from dialplan.numbers import from_int, to_int

from .model import Binding, Mode, State

__all__ = ["BindingTable", "RouteEntry"]

# id, x, a, b, expires_at, version, max_call_seconds, flags; then a UTF-8 tail
# "ext\x1fout_id\x1fpolicy".
_REC = struct.Struct("<QQQQdIIH")
_PAIR_SHIFT = 50
_MODES = (Mode.AXB, Mode.AXN, Mode.AXE)
_STATES = (State.ACTIVE, State.FROZEN, State.RELEASED)
_MODE_BITS = {m: i for i, m in enumerate(_MODES)}
_STATE_BITS = {s: i for i, s in enumerate(_STATES)}
_F_RECORD, _F_VOICE, _F_SMS = 0x10, 0x20, 0x40


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """What routing needs of a binding, decoded from its packed record."""

    id: str
    mode: Mode
    state: State
    x: str
    a: str | None
    b: str | None
    ext: str | None
    expires_at: float | None
    record: bool
    voice: bool
    sms: bool
    out_id: str | None
    max_call_seconds: int | None
    policy: str | None
    version: int

    def effective_state(self, now: float) -> State:
        """Expired counts as frozen at lookup time, whatever the sweeper has done yet."""
        if self.state is State.ACTIVE and self.expires_at is not None and self.expires_at <= now:
            return State.FROZEN
        return self.state


def _pack(b: Binding) -> bytes:
    flags = _MODE_BITS[b.mode] | (_STATE_BITS[b.state] << 2)
    flags |= (_F_RECORD if b.record else 0) | (_F_VOICE if b.voice else 0)
    flags |= _F_SMS if b.sms else 0
    head = _REC.pack(
        int(b.id, 16), to_int(b.x), to_int(b.a) if b.a else 0, to_int(b.b) if b.b else 0,
        b.expires_at or 0.0, b.version & 0xFFFFFFFF, b.max_call_seconds or 0, flags,
    )
    if b.ext is None and b.out_id is None and b.policy is None:
        return head
    tail = "\x1f".join((b.ext or "", b.out_id or "", b.policy or ""))
    return head + tail.encode()


def _unpack(rec: bytes) -> RouteEntry:
    bid, x, a, b, exp, version, mcs, flags = _REC.unpack_from(rec)
    ext = out_id = policy = None
    if len(rec) > _REC.size:
        e, o, p = rec[_REC.size:].decode().split("\x1f")
        ext, out_id, policy = e or None, o or None, p or None
    return RouteEntry(
        id=f"{bid:016x}", mode=_MODES[flags & 3], state=_STATES[(flags >> 2) & 3],
        x=from_int(x), a=from_int(a) if a else None, b=from_int(b) if b else None, ext=ext,
        expires_at=exp or None, record=bool(flags & _F_RECORD), voice=bool(flags & _F_VOICE),
        sms=bool(flags & _F_SMS), out_id=out_id, max_call_seconds=mcs or None, policy=policy,
        version=version,
    )


def _version(rec: bytes) -> int:
    return int(_REC.unpack_from(rec)[5])


class BindingTable:
    """All live (active or frozen) bindings of the store, in memory.

    `apply()` takes bindings from the store or the change feed in any order and keeps the
    newest version; released bindings leave the table.  `lookup()` is the call path.
    """

    def __init__(self) -> None:
        self._routes: dict[int, bytes] = {}
        self._ext: dict[tuple[int, str], bytes] = {}
        self._by_id: dict[int, int | tuple[int, str]] = {}  # id -> one of its keys
        # x -> [mode, live count]: which numbers are in use and how (for allocation and 403s)
        self._usage: dict[int, list[int]] = {}
        self.quarantine: dict[int, float] = {}  # x -> until, learnt from releases

    def __len__(self) -> int:
        return len(self._by_id)

    # -- changes -------------------------------------------------------------------------

    def apply(self, b: Binding, quarantine_until: float | None = None) -> bool:
        """Take a binding's newest state. Returns False when it was stale (older version)."""
        bid = int(b.id, 16)
        old_key = self._by_id.get(bid)
        old = self._get_key(old_key) if old_key is not None else None
        if old is not None and _version(old) >= b.version & 0xFFFFFFFF:
            return False
        if old is not None:
            self._remove(_unpack(old), old_key)
        if b.state is State.RELEASED:
            if quarantine_until is not None and to_int(b.x) not in self._usage:
                self.quarantine[to_int(b.x)] = quarantine_until
            return True
        rec = _pack(b)
        x = to_int(b.x)
        if b.mode is Mode.AXB:
            keys: list[int] = []
            for party in (b.a, b.b):
                if party:
                    k = (x << _PAIR_SHIFT) | to_int(party)
                    self._routes[k] = rec
                    keys.append(k)
            self._by_id[bid] = keys[0]
        elif b.mode is Mode.AXN:
            self._routes[x] = rec
            self._by_id[bid] = x
        else:
            ek = (x, b.ext or "")
            self._ext[ek] = rec
            self._by_id[bid] = ek
        use = self._usage.get(x)
        if use is None:
            self._usage[x] = [_MODE_BITS[b.mode], 1]
            self.quarantine.pop(x, None)
        else:
            use[1] += 1
        return True

    def _get_key(self, key: int | tuple[int, str]) -> bytes | None:
        if isinstance(key, tuple):
            return self._ext.get(key)
        return self._routes.get(key)

    def _remove(self, e: RouteEntry, key: int | tuple[int, str]) -> None:
        x = to_int(e.x)
        if e.mode is Mode.AXB:
            for party in (e.a, e.b):
                if party:
                    self._routes.pop((x << _PAIR_SHIFT) | to_int(party), None)
        elif isinstance(key, tuple):
            self._ext.pop(key, None)
        else:
            self._routes.pop(key, None)
        del self._by_id[int(e.id, 16)]
        use = self._usage.get(x)
        if use is not None:
            use[1] -= 1
            if use[1] <= 0:
                del self._usage[x]

    def clear(self) -> None:
        self._routes.clear()
        self._ext.clear()
        self._by_id.clear()
        self._usage.clear()
        self.quarantine.clear()

    # -- the call path -------------------------------------------------------------------

    def lookup(self, x: str, caller: str | None, ext: str | None = None) -> RouteEntry | None:
        """The binding that a call from `caller` to `x` (with `ext` for AXE) belongs to.

        AXB pairs win over AXN (a number serves one mode at a time, so at most one hits).
        None means no binding of that caller on X; `in_use(x)` tells a stranger (403) from
        an unknown number (404).
        """
        xi = int(x[1:])
        if caller:
            rec = self._routes.get((xi << _PAIR_SHIFT) | int(caller[1:]))
            if rec is not None:
                return _unpack(rec)
        rec = self._routes.get(xi)
        if rec is not None:
            return _unpack(rec)
        if ext is not None:
            rec = self._ext.get((xi, ext))
            if rec is not None:
                return _unpack(rec)
        return None

    def in_use(self, x: str) -> bool:
        """Some live binding holds X."""
        return int(x[1:]) in self._usage

    def usage(self, x: str) -> tuple[Mode, int] | None:
        """(mode, live bindings) on X, or None when X is free."""
        use = self._usage.get(int(x[1:]))
        return None if use is None else (_MODES[use[0]], use[1])

    def pair_taken(self, x: str, party: str) -> bool:
        return ((int(x[1:]) << _PAIR_SHIFT) | int(party[1:])) in self._routes

    def ext_taken(self, x: str, ext: str) -> bool:
        return (int(x[1:]), ext) in self._ext

    def get(self, binding_id: str) -> RouteEntry | None:
        try:
            key = self._by_id.get(int(binding_id, 16))
        except ValueError:
            return None
        rec = self._get_key(key) if key is not None else None
        return _unpack(rec) if rec is not None else None

    def entries(self) -> Iterator[RouteEntry]:
        for key in list(self._by_id.values()):
            rec = self._get_key(key)
            if rec is not None:
                yield _unpack(rec)
