"""How records look on the API, per role: `admin` sees real numbers, `ops` sees them masked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dialplan.numbers import mask
from dialplan.route import Collect, Decision, Refuse

from ..bindings.model import Binding

__all__ = ["binding_view", "iso", "route_view"]

ROLES = ("admin", "ops")


def iso(ts: float | None) -> str | None:
    """UNIX seconds -> ISO 8601 UTC with milliseconds (`2026-11-22T13:05:42.123Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _num(n: str | None, role: str) -> str | None:
    return n if role == "admin" else mask(n)


def binding_view(b: Binding, role: str, now: float) -> dict[str, Any]:
    """The API form of a binding. X is the relay's own number and is never masked."""
    return {
        "id": b.id,
        "mode": b.mode.value,
        "x": b.x,
        "a": _num(b.a, role),
        "b": _num(b.b, role),
        "ext": b.ext,
        "state": b.effective_state(now).value,
        "expires_at": iso(b.expires_at),
        "record": b.record,
        "voice": b.voice,
        "sms": b.sms,
        "out_id": b.out_id,
        "max_call_seconds": b.max_call_seconds,
        "policy": b.policy,
        "area": b.area,
        "created_at": iso(b.created_at),
        "updated_at": iso(b.updated_at),
        "frozen_at": iso(b.frozen_at if b.frozen_at is not None else
                         (b.expires_at if b.expired(now) else None)),
        "released_at": iso(b.released_at),
        "reason": b.reason if not b.expired(now) else "expired",
        "version": b.version,
    }


def route_view(d: Decision, role: str) -> dict[str, Any]:
    if isinstance(d, Collect):
        return {"action": "collect"}
    if isinstance(d, Refuse):
        out: dict[str, Any] = {"action": "refuse", "code": d.code, "reason": d.reason,
                               "cause": d.cause, "binding": d.binding}
        if d.retry_after is not None:
            out["retry_after"] = d.retry_after
        return out
    out = {"action": "bridge", "to": _num(d.to, role), "binding": d.binding,
           "direction": d.direction}
    if d.ring_timeout is not None:
        out["ring_timeout"] = d.ring_timeout
    if d.max_call_seconds is not None:
        out["max_call_seconds"] = d.max_call_seconds
    return out
