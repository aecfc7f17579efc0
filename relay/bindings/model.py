"""The binding: who a virtual number X joins, and its lifecycle.

A binding moves active -> frozen -> released and never back (DESIGN.md "Binding model").
The transition table below is the only place that says which moves are legal.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack

__all__ = [
    "Binding",
    "IllegalTransition",
    "Mode",
    "NumberRecord",
    "State",
    "new_binding_id",
    "transition",
]


class Mode(StrEnum):
    AXB = "AXB"  # X joins exactly A and B, both directions
    AXN = "AXN"  # anyone calling X reaches B; B calling X reaches A if set
    AXE = "AXE"  # X is shared; an extension selects B


class State(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    RELEASED = "released"


class IllegalTransition(Exception):
    """A lifecycle move the table does not allow (e.g. un-freezing)."""

    def __init__(self, state: State, event: str) -> None:
        super().__init__(f"cannot {event} a binding that is {state.value}")
        self.state = state
        self.event = event


# (state, event) -> next state.  Anything missing is illegal.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.ACTIVE, "update"): State.ACTIVE,
    (State.ACTIVE, "freeze"): State.FROZEN,
    (State.ACTIVE, "expire"): State.FROZEN,
    (State.ACTIVE, "release"): State.RELEASED,
    (State.FROZEN, "freeze"): State.FROZEN,  # idempotent: platforms retry
    (State.FROZEN, "release"): State.RELEASED,
    (State.RELEASED, "release"): State.RELEASED,  # idempotent
}


def transition(state: State, event: str) -> State:
    """The state after `event`, or IllegalTransition naming both."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def new_binding_id() -> str:
    """An opaque id: 16 hex digits of a random 63-bit integer (kept as an int in memory)."""
    return f"{secrets.randbits(63):016x}"


@dataclass(frozen=True, slots=True)
class Binding:
    """One binding as the stores and the API see it. Numbers are E.164 strings."""

    id: str
    mode: Mode
    x: str
    b: str | None
    a: str | None = None
    ext: str | None = None
    state: State = State.ACTIVE
    expires_at: float | None = None
    record: bool = True
    voice: bool = True
    sms: bool = True
    out_id: str | None = None
    max_call_seconds: int | None = None
    policy: str | None = None
    area: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    frozen_at: float | None = None
    released_at: float | None = None
    reason: str | None = None  # why it was frozen or released
    version: int = 1

    @property
    def live(self) -> bool:
        """Active or frozen: it still holds its number and answers (or refuses) calls."""
        return self.state is not State.RELEASED

    def expired(self, now: float) -> bool:
        return self.state is State.ACTIVE and self.expires_at is not None and self.expires_at <= now

    def effective_state(self, now: float) -> State:
        """Expiry freezes a binding at lookup time, before any sweeper gets to it."""
        return State.FROZEN if self.expired(now) else self.state

    def replace(self, **changes: Any) -> Binding:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["mode"] = self.mode.value
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Binding:
        names = _FIELD_NAMES
        kw = {k: v for k, v in d.items() if k in names}
        kw["mode"] = Mode(kw["mode"])
        kw["state"] = State(kw.get("state", "active"))
        return cls(**kw)

    def pack(self) -> bytes:
        """The store encoding: msgpack of a field array (compact, and fast to load)."""
        return msgpack.packb(
            [getattr(self, n) if n not in ("mode", "state") else getattr(self, n).value
             for n in _FIELD_ORDER],
            use_bin_type=True,
        )

    @classmethod
    def unpack(cls, blob: bytes) -> Binding:
        values = msgpack.unpackb(blob, raw=False)
        kw = dict(zip(_FIELD_ORDER, values, strict=False))
        kw["mode"] = Mode(kw["mode"])
        kw["state"] = State(kw["state"])
        return cls(**kw)


_FIELD_ORDER: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Binding))
_FIELD_NAMES = frozenset(_FIELD_ORDER)


@dataclass(frozen=True, slots=True)
class NumberRecord:
    """A virtual number in the pool."""

    number: str
    area: str | None = None
    added_at: float = 0.0

    def pack(self) -> bytes:
        return msgpack.packb([self.number, self.area, self.added_at], use_bin_type=True)

    @classmethod
    def unpack(cls, blob: bytes) -> NumberRecord:
        number, area, added_at = msgpack.unpackb(blob, raw=False)[:3]
        return cls(number, area, added_at)
