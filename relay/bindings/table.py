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

from dialplan.numbers import to_int

from .model import Binding, Mode, State

__all__ = ["BindingTable", "RouteEntry", "route_record"]

# id, x, a, b, expires_at, created_at, version, max_call_seconds, flags; then a UTF-8
# tail "ext\x1fout_id\x1fpolicy".
_REC = struct.Struct("<QQQQddIIH")
_PAIR_SHIFT = 50
_MODES = (Mode.AXB, Mode.AXN, Mode.AXE)
_STATES = (State.ACTIVE, State.FROZEN, State.RELEASED)
_MODE_BITS = {m: i for i, m in enumerate(_MODES)}
_STATE_BITS = {s: i for i, s in enumerate(_STATES)}
_F_RECORD, _F_VOICE, _F_SMS = 0x10, 0x20, 0x40


_unpack_head = _REC.unpack_from


class RouteEntry:
    """A binding as routing sees it: a view over its packed record.

    Built on every lookup, so it unpacks the fixed fields once (one C call) and makes
    the strings (`id`, numbers, the tail) only when asked.
    """

    __slots__ = ("_f", "_rec", "_tail")

    def __init__(self, rec: bytes) -> None:
        self._rec = rec
        self._f = _unpack_head(rec)
        self._tail: list[str | None] | None = None

    def _t(self, i: int) -> str | None:
        if self._tail is None:
            if len(self._rec) > _REC.size:
                self._tail = [v or None for v in self._rec[_REC.size:].decode().split("\x1f")]
            else:
                self._tail = [None, None, None]
        return self._tail[i]

    @property
    def id(self) -> str:
        return "%016x" % self._f[0]  # noqa: UP031 - measurably faster than format()

    @property
    def mode(self) -> Mode:
        return _MODES[self._f[8] & 3]

    @property
    def state(self) -> State:
        return _STATES[(self._f[8] >> 2) & 3]

    @property
    def x(self) -> str:
        return "+" + str(self._f[1])

    @property
    def a(self) -> str | None:
        return "+" + str(self._f[2]) if self._f[2] else None

    @property
    def b(self) -> str | None:
        return "+" + str(self._f[3]) if self._f[3] else None

    @property
    def expires_at(self) -> float | None:
        return self._f[4] or None

    @property
    def created_at(self) -> float:
        return float(self._f[5])

    @property
    def version(self) -> int:
        return int(self._f[6])

    @property
    def max_call_seconds(self) -> int | None:
        return self._f[7] or None

    @property
    def record(self) -> bool:
        return bool(self._f[8] & _F_RECORD)

    @property
    def voice(self) -> bool:
        return bool(self._f[8] & _F_VOICE)

    @property
    def sms(self) -> bool:
        return bool(self._f[8] & _F_SMS)

    @property
    def ext(self) -> str | None:
        return self._t(0)

    @property
    def out_id(self) -> str | None:
        return self._t(1)

    @property
    def policy(self) -> str | None:
        return self._t(2)

    def effective_state(self, now: float) -> State:
        """Expired counts as frozen at lookup time, whatever the sweeper has done yet."""
        flags, exp = self._f[8], self._f[4]
        if (flags >> 2) & 3 == 0 and exp and exp <= now:
            return State.FROZEN
        return _STATES[(flags >> 2) & 3]

    def as_dict(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in _ENTRY_FIELDS}

    def __repr__(self) -> str:
        return f"RouteEntry({self.as_dict()!r})"


_ENTRY_FIELDS = ("id", "mode", "state", "x", "a", "b", "ext", "expires_at", "record", "voice",
                 "sms", "out_id", "max_call_seconds", "policy", "version", "created_at")


def route_record(b: Binding) -> bytes:
    """The packed form of a binding that the table holds (and stores keep beside it)."""
    return _pack(b)


def _pack(b: Binding) -> bytes:
    flags = _MODE_BITS[b.mode] | (_STATE_BITS[b.state] << 2)
    flags |= (_F_RECORD if b.record else 0) | (_F_VOICE if b.voice else 0)
    flags |= _F_SMS if b.sms else 0
    head = _REC.pack(
        int(b.id, 16), to_int(b.x), to_int(b.a) if b.a else 0, to_int(b.b) if b.b else 0,
        b.expires_at or 0.0, b.created_at, b.version & 0xFFFFFFFF, b.max_call_seconds or 0,
        flags,
    )
    if b.ext is None and b.out_id is None and b.policy is None:
        return head
    tail = "\x1f".join((b.ext or "", b.out_id or "", b.policy or ""))
    return head + tail.encode()


def _unpack(rec: bytes) -> RouteEntry:
    return RouteEntry(rec)


def _order(rec: bytes) -> tuple[float, int, int]:
    """(created_at, id, version): which of two records at one key is newer."""
    bid, _x, _a, _b, _e, created, version = _REC.unpack_from(rec)[:7]
    return created, bid, version


class BindingTable:
    """All live (active or frozen) bindings of the store, in memory.

    `apply()` takes bindings from the store or the change feed in any order and keeps the
    newest; released bindings leave the table.  `lookup()` is the call path.

    A binding's home key never changes (X, A, the mode and the extension are fixed at
    creation; only B may change), so no index by id is needed to find its record.  When
    two different bindings meet at one key (a replay of old changes after a reload), the
    one created later wins: a key is only handed to a new binding after the old one was
    released and its quarantine has passed, which dwarfs any clock skew between nodes.
    """

    def __init__(self) -> None:
        self._routes: dict[int, bytes] = {}
        self._ext: dict[tuple[int, str], bytes] = {}
        self._count = 0
        # x -> [mode, live count]: which numbers are in use and how (allocation, 403s)
        self._usage: dict[int, list[int]] = {}
        self.quarantine: dict[int, float] = {}  # x -> until, learnt from releases

    def __len__(self) -> int:
        return self._count

    # -- changes -------------------------------------------------------------------------

    @staticmethod
    def _home(b: Binding | RouteEntry) -> int | tuple[int, str]:
        x = int(b.x[1:])
        if b.mode is Mode.AXB:
            return (x << _PAIR_SHIFT) | int((b.a or b.b or "+0")[1:])
        if b.mode is Mode.AXN:
            return x
        return (x, b.ext or "")

    def apply(self, b: Binding, quarantine_until: float | None = None) -> bool:
        """Take a binding's newest state. Returns False when it was stale."""
        home = self._home(b)
        old = self._get_key(home)
        if old is not None:
            o_created, o_id, o_version = _order(old)
            if o_id == int(b.id, 16):
                if o_version >= b.version & 0xFFFFFFFF:
                    return False
            elif (o_created, o_id) > (b.created_at, int(b.id, 16)):
                return False  # an older binding's news, replayed after a newer one took over
            self._remove(old, home)
        if b.state is State.RELEASED:
            if quarantine_until is not None and int(b.x[1:]) not in self._usage:
                self.quarantine[int(b.x[1:])] = quarantine_until
            return old is not None
        rec = _pack(b)
        x = int(b.x[1:])
        if b.mode is Mode.AXB:
            for party in (b.a, b.b):
                if party:
                    self._routes[(x << _PAIR_SHIFT) | int(party[1:])] = rec
        elif b.mode is Mode.AXN:
            self._routes[x] = rec
        else:
            self._ext[(x, b.ext or "")] = rec
        self._count += 1
        use = self._usage.get(x)
        if use is None:
            self._usage[x] = [_MODE_BITS[b.mode], 1]
            self.quarantine.pop(x, None)
        else:
            use[1] += 1
        return True

    def load(self, rec: bytes) -> None:
        """Add one live binding from its stored route record during a bulk load (into an
        empty table, so there is nothing older to compare with): no decoding beyond the
        fixed fields, which is what makes a million bindings load in seconds."""
        _bid, x, a, b, _e, _c, _v, _m, flags = _unpack_head(rec)
        mode = flags & 3
        if mode == 0:  # AXB
            if a:
                self._routes[(x << _PAIR_SHIFT) | a] = rec
            if b:
                self._routes[(x << _PAIR_SHIFT) | b] = rec
        elif mode == 1:  # AXN
            self._routes[x] = rec
        else:
            ext = rec[_REC.size:].decode().split("\x1f", 1)[0]
            self._ext[(x, ext)] = rec
        self._count += 1
        use = self._usage.get(x)
        if use is None:
            self._usage[x] = [mode, 1]
        else:
            use[1] += 1

    def _get_key(self, key: int | tuple[int, str]) -> bytes | None:
        if isinstance(key, tuple):
            return self._ext.get(key)
        return self._routes.get(key)

    def _remove(self, old: bytes, home: int | tuple[int, str]) -> None:
        e = _unpack(old)
        x = int(e.x[1:])
        if e.mode is Mode.AXB:
            for party in (e.a, e.b):
                key = (x << _PAIR_SHIFT) | int(party[1:]) if party else -1
                if self._routes.get(key) is old:  # a newer binding may hold B's key now
                    del self._routes[key]
        elif isinstance(home, tuple):
            self._ext.pop(home, None)
        else:
            self._routes.pop(home, None)
        self._count -= 1
        use = self._usage.get(x)
        if use is not None:
            use[1] -= 1
            if use[1] <= 0:
                del self._usage[x]

    def clear(self) -> None:
        self._routes.clear()
        self._ext.clear()
        self._count = 0
        self._usage.clear()
        self.quarantine.clear()

    # -- the call path -------------------------------------------------------------------

    def lookup(self, x: str, caller: str | None, ext: str | None = None) -> RouteEntry | None:
        """The binding that a call from `caller` to `x` (with `ext` for AXE) belongs to.

        AXB pairs win over AXN (a number serves one mode at a time, so at most one hits).
        None means no binding of that caller on X; `in_use(x)` tells a stranger (403) from
        an unknown number (404).
        """
        xi = int(x)  # int() accepts the leading "+": no slice needed on the call path
        routes = self._routes
        if caller:
            rec = routes.get((xi << _PAIR_SHIFT) | int(caller))
            if rec is not None:
                return RouteEntry(rec)
        rec = routes.get(xi)
        if rec is not None:
            return RouteEntry(rec)
        if ext is not None:
            rec = self._ext.get((xi, ext))
            if rec is not None:
                return RouteEntry(rec)
        return None

    def in_use(self, x: str) -> bool:
        """Some live binding holds X."""
        return int(x[1:]) in self._usage

    def shared(self, x: str) -> bool:
        """X serves AXE extensions (a call needs an extension to find its binding)."""
        use = self._usage.get(int(x[1:]))
        return use is not None and _MODES[use[0]] is Mode.AXE

    def usage(self, x: str) -> tuple[Mode, int] | None:
        """(mode, live bindings) on X, or None when X is free."""
        use = self._usage.get(int(x[1:]))
        return None if use is None else (_MODES[use[0]], use[1])

    def pair_taken(self, x: str, party: str) -> bool:
        return ((int(x[1:]) << _PAIR_SHIFT) | int(party[1:])) in self._routes

    def ext_taken(self, x: str, ext: str) -> bool:
        return (int(x[1:]), ext) in self._ext

    def find(self, binding_id: str) -> RouteEntry | None:
        """The live binding with this id, by a scan (no id index: memory matters more).

        Only for the rare path that cannot ask the store (a freeze while it is down);
        it compares the packed id field, so a million bindings take well under a second.
        """
        try:
            want = int(binding_id, 16)
        except ValueError:
            return None
        for rec in (*self._routes.values(), *self._ext.values()):
            if _unpack_head(rec)[0] == want:
                return _unpack(rec)
        return None

    def entries(self) -> Iterator[RouteEntry]:
        """Every live binding once (AXB records sit under two keys: the same object)."""
        seen: set[int] = set()
        for rec in (*self._routes.values(), *self._ext.values()):
            if id(rec) not in seen:
                seen.add(id(rec))
                yield _unpack(rec)
