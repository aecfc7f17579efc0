"""Turning untrusted request bodies into checked requests (shared by the API and the CLI).

Every check happens here, before anything reaches the store, so a bad request can never
leave a half-written binding behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dialplan.numbers import InvalidNumber, normalise, normalise_ext

from ..errors import BadRequest
from .model import Mode

__all__ = ["CreateRequest", "UpdateRequest", "parse_create", "parse_numbers", "parse_update"]

MAX_TTL = 400 * 86400  # a binding outliving an order by more than a year is a bug upstream
_CREATE_FIELDS = {"mode", "a", "b", "x", "ext", "ttl", "expires_at", "record", "voice", "sms",
                  "out_id", "max_call_seconds", "policy", "area"}
_UPDATE_FIELDS = {"ttl", "expires_at", "record", "voice", "sms", "b", "max_call_seconds",
                  "policy"}


@dataclass(frozen=True, slots=True)
class CreateRequest:
    mode: Mode
    b: str
    a: str | None = None
    x: str | None = None
    ext: str | None = None
    expires_at: float | None = None
    record: bool = True
    voice: bool = True
    sms: bool = True
    out_id: str | None = None
    max_call_seconds: int | None = None
    policy: str | None = None
    area: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    changes: dict[str, Any]


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _number(body: dict[str, Any], name: str, default_cc: str, required: bool) -> str | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"{name} must be a string")
    try:
        return normalise(raw, default_cc)
    except InvalidNumber as exc:
        raise BadRequest(f"{name}: {exc}", "invalid_number") from None


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    v = body.get(name, default)
    if not isinstance(v, bool):
        raise BadRequest(f"{name} must be true or false")
    return v


def _short_str(body: dict[str, Any], name: str, limit: int = 128) -> str | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > limit or "\x1f" in v or "\x00" in v:
        raise BadRequest(f"{name} must be a non-empty string of at most {limit} characters")
    return v


def _expiry(body: dict[str, Any], now: float) -> float | None:
    ttl, at = body.get("ttl"), body.get("expires_at")
    if ttl is not None and at is not None:
        raise BadRequest("give ttl or expires_at, not both")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
            raise BadRequest("ttl must be a number of seconds")
        if not 0 < ttl <= MAX_TTL:
            raise BadRequest(f"ttl must be between 1 and {MAX_TTL} seconds")
        return round(now + float(ttl), 3)
    if at is not None:
        if isinstance(at, str):
            at = _iso_seconds(at)
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise BadRequest("expires_at must be a UNIX time in seconds or an ISO 8601 time")
        if at <= now:
            raise BadRequest("expires_at is in the past")
        if at > now + MAX_TTL:
            raise BadRequest("expires_at is too far in the future")
        return round(float(at), 3)
    return None


def _iso_seconds(text: str) -> float:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest("expires_at is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise BadRequest("expires_at needs a time zone (e.g. Z)")
    return dt.timestamp()


def _max_call(body: dict[str, Any]) -> int | None:
    v = body.get("max_call_seconds")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 86400:
        raise BadRequest("max_call_seconds must be an integer from 1 to 86400")
    return v


def parse_create(body: Any, default_cc: str, now: float) -> CreateRequest:
    """A checked CreateRequest, or BadRequest naming the first problem."""
    body = _obj(body)
    unknown = set(body) - _CREATE_FIELDS
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        mode = Mode(body.get("mode"))
    except ValueError:
        raise BadRequest("mode must be one of AXB, AXN, AXE", "invalid_mode") from None
    a = _number(body, "a", default_cc, required=mode is Mode.AXB)
    b = _number(body, "b", default_cc, required=True)
    x = _number(body, "x", default_cc, required=False)
    assert b is not None
    if a is not None and a == b:
        raise BadRequest("a and b must differ")
    if x is not None and x in (a, b):
        raise BadRequest("x must not be one of the parties")
    ext = body.get("ext")
    if ext is not None:
        if mode is not Mode.AXE:
            raise BadRequest("ext is only for AXE bindings")
        try:
            ext = normalise_ext(ext)
        except InvalidNumber as exc:
            raise BadRequest(str(exc)) from None
    area = _short_str(body, "area", 16)
    return CreateRequest(
        mode=mode, a=a, b=b, x=x, ext=ext, expires_at=_expiry(body, now),
        record=_bool(body, "record", True), voice=_bool(body, "voice", True),
        sms=_bool(body, "sms", True), out_id=_short_str(body, "out_id"),
        max_call_seconds=_max_call(body), policy=_short_str(body, "policy", 64), area=area,
    )


def parse_update(body: Any, default_cc: str, now: float) -> UpdateRequest:
    """A checked PATCH: only the fields that may change on an active binding."""
    body = _obj(body)
    unknown = set(body) - _UPDATE_FIELDS
    if unknown:
        raise BadRequest(f"field(s) that cannot be changed: {', '.join(sorted(unknown))}")
    if not body:
        raise BadRequest("nothing to change")
    changes: dict[str, Any] = {}
    if "ttl" in body or "expires_at" in body:
        changes["expires_at"] = _expiry(body, now)
    for name in ("record", "voice", "sms"):
        if name in body:
            changes[name] = _bool(body, name, True)
    if "b" in body:
        changes["b"] = _number(body, "b", default_cc, required=True)
    if "max_call_seconds" in body:
        changes["max_call_seconds"] = _max_call(body)
    if "policy" in body:
        changes["policy"] = _short_str(body, "policy", 64)
    return UpdateRequest(changes)


def parse_numbers(body: Any, default_cc: str) -> tuple[list[str], str | None]:
    """`{"numbers": [...], "area": "0571"}` -> normalised numbers (deduplicated), area."""
    body = _obj(body)
    unknown = set(body) - {"numbers", "area"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    raw = body.get("numbers")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("numbers must be a non-empty list")
    if len(raw) > 100_000:
        raise BadRequest("at most 100000 numbers per request")
    out: dict[str, None] = {}
    for i, n in enumerate(raw):
        if not isinstance(n, str):
            raise BadRequest(f"numbers[{i}] must be a string")
        try:
            out[normalise(n, default_cc)] = None
        except InvalidNumber as exc:
            raise BadRequest(f"numbers[{i}]: {exc}", "invalid_number") from None
    return list(out), _short_str(body, "area", 16)
