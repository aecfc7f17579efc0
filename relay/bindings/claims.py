"""Claims: the uniqueness rules of bindings, as keys a store sets atomically.

A live binding holds claims that no other binding may hold at the same time:

* `p:X:PARTY` for AXB, one per party: one (X, party) pair at a time (DESIGN.md);
* `x:X` for AXN: the number is this binding's alone;
* `e:X:EXT` for AXE: one binding per extension;
* `o:OUT_ID` while active: a retried create returns the same binding;
* `u:X`, the usage of a number: `MODE,COUNT,UNTIL`; a number serves one mode at a time
  and, once its last binding is released, waits out the quarantine before changing mode.

Released claims are not deleted but quarantined (`q:UNTIL`), so a released number or pair
is not handed to someone new before the quarantine ends.  Both stores execute the same
operations (`take`, `drop`, `quar`, `use`, `unuse`): SQLite in a transaction, Redis in
one Lua script.  The rules live here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Binding, Mode, State

__all__ = ["ClaimConflict", "Op", "apply_op", "claims_of", "ops_for"]


class ClaimConflict(Exception):
    """Another binding holds a claim this change needs."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"claim {key} is held by {holder}")
        self.key = key
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Op:
    kind: str  # take | drop | quar | use | unuse
    key: str
    arg: str = ""  # the mode for `use`


def claims_of(b: Binding) -> list[str]:
    """The exclusive claims a live binding holds (out_id aside)."""
    if b.mode is Mode.AXB:
        return [f"p:{b.x}:{p}" for p in (b.a, b.b) if p]
    if b.mode is Mode.AXN:
        return [f"x:{b.x}"]
    return [f"e:{b.x}:{b.ext}"]


def ops_for(old: Binding | None, new: Binding) -> list[Op]:
    """The claim operations that take the store from `old` to `new`."""
    ops: list[Op] = []
    old_live = old is not None and old.live
    new_claims = claims_of(new) if new.live else []
    old_claims = claims_of(old) if old is not None and old_live else []
    for key in old_claims:
        if key not in new_claims:
            ops.append(Op("quar", key))
    for key in new_claims:
        if key not in old_claims:
            ops.append(Op("take", key))
    if not old_live and new.live:
        ops.append(Op("use", f"u:{new.x}", new.mode.value))
    elif old_live and not new.live:
        ops.append(Op("unuse", f"u:{new.x}"))
    old_out = old.out_id if old is not None and old.state is State.ACTIVE else None
    new_out = new.out_id if new.state is State.ACTIVE else None
    if old_out and old_out != new_out:
        ops.append(Op("drop", f"o:{old_out}"))
    if new_out and new_out != old_out:
        ops.append(Op("take", f"o:{new_out}"))
    return ops


def apply_op(current: str | None, op: Op, binding_id: str, now: float,
             quarantine: float) -> str | None:
    """The claim's value after `op`, or ClaimConflict. None deletes the claim.

    The Lua script in redis_store.py implements exactly this function; the tests run both
    stores through the same cases.
    """
    if op.kind == "take":
        if current is None or current == binding_id:
            return binding_id
        if current.startswith("q:") and float(current[2:]) <= now:
            return binding_id
        raise ClaimConflict(op.key, current)
    if op.kind == "drop":
        return None if current == binding_id else current
    if op.kind == "quar":
        if current == binding_id:
            return f"q:{now + quarantine:.3f}"
        return current
    mode, count, until = _usage(current)
    if op.kind == "use":
        if count > 0 and mode != op.arg:
            raise ClaimConflict(op.key, f"{mode} bindings")
        if count == 0 and mode != op.arg and until > now:
            raise ClaimConflict(op.key, "quarantine")
        return f"{op.arg},{count + 1},{until:.3f}"
    if op.kind == "unuse":
        count = max(0, count - 1)
        if count == 0:
            until = now + quarantine
        return f"{mode},{count},{until:.3f}"
    raise ValueError(f"unknown claim op {op.kind}")


def _usage(value: str | None) -> tuple[str, int, float]:
    if not value:
        return "", 0, 0.0
    mode, count, until = value.split(",")
    return mode, int(count), float(until)

