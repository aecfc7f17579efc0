"""Named policies (DESIGN.md "Policies"): the model, its validation and quiet hours.

Pure: no I/O and no clock; time is an argument. Zones come from the IANA database
through `zoneinfo` (read once per zone and cached by the standard library).

Every DESIGN field is enforced. Counting (`max_calls`, `max_sms`) and scoring
(`max_score`) need the relay's shared stores: the decision says which limit applies,
`Limit.over` and `Policy.max_score` judge what the relay found.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DIRECTIONS",
    "MAX_PER",
    "Limit",
    "Policy",
    "PolicyError",
    "QuietHours",
    "counter_key",
    "parse_policy",
    "quiet_until",
]

DIRECTIONS = ("a_to_b", "b_to_a")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_FIELDS = ("quiet_hours", "directions", "ring_timeout", "max_call_seconds", "max_calls",
           "max_sms", "max_score")
MAX_PER = 7 * 86400  # the longest counting window; counters keep this much history
_MAX_COUNT = 10_000
_PER = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_RING = 600  # seconds; longer than any trunk keeps an unanswered INVITE
_MAX_CALL = 86400


class PolicyError(ValueError):
    """A policy that cannot be used; `field` names the offending key (API: 422)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window [start, end) of local wall-clock minutes in IANA zone `tz`;
    end < start crosses midnight."""

    start: int
    end: int
    tz: str

    def as_dict(self) -> dict[str, str]:
        """The API form: {"from": "22:00", "to": "08:00", "tz": ...}."""
        return {"from": _hhmm(self.start), "to": _hhmm(self.end), "tz": self.tz}


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` attempts per caller and binding in any `per` seconds."""

    count: int
    per: int

    def over(self, used: int) -> bool:
        """True when `used` attempts already in the window leave no room for another."""
        return used >= self.count

    def as_dict(self) -> dict[str, int]:
        """The API form: {"count": N, "per": seconds}."""
        return {"count": self.count, "per": self.per}


@dataclass(frozen=True, slots=True)
class Policy:
    """One named policy; a field left out does not apply."""

    name: str
    quiet_hours: QuietHours | None = None
    directions: frozenset[str] | None = None
    ring_timeout: int | None = None
    max_call_seconds: int | None = None
    max_calls: Limit | None = None
    max_sms: Limit | None = None
    max_score: int | None = None  # callers scoring above it (dialplan.score) are refused

    def as_dict(self) -> dict[str, Any]:
        """The API and store form (the input of `parse_policy`, plus the name)."""
        out: dict[str, Any] = {"name": self.name}
        if self.quiet_hours is not None:
            out["quiet_hours"] = self.quiet_hours.as_dict()
        if self.directions is not None:
            out["directions"] = [d for d in DIRECTIONS if d in self.directions]
        if self.ring_timeout is not None:
            out["ring_timeout"] = self.ring_timeout
        if self.max_call_seconds is not None:
            out["max_call_seconds"] = self.max_call_seconds
        if self.max_calls is not None:
            out["max_calls"] = self.max_calls.as_dict()
        if self.max_sms is not None:
            out["max_sms"] = self.max_sms.as_dict()
        if self.max_score is not None:
            out["max_score"] = self.max_score
        return out


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path-like key
        raise PolicyError("quiet_hours.tz", f"unknown IANA time zone {tz!r}") from None


def _clock(raw: Any, field: str) -> int:
    m = _HHMM.fullmatch(raw) if isinstance(raw, str) else None
    if m is None:
        raise PolicyError(field, "expected HH:MM (00:00 to 23:59)")
    return int(m[1]) * 60 + int(m[2])


def _seconds(raw: Any, field: str, limit: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= limit:
        raise PolicyError(field, f"expected a whole number of seconds, 1 to {limit}")
    return raw


def _limit(raw: Any, field: str) -> Limit:
    """{"count": N, "per": seconds or "30m"/"24h"/"7d"}."""
    if not isinstance(raw, dict) or set(raw) != {"count", "per"}:
        raise PolicyError(field, 'expected {"count": N, "per": seconds or "24h"}')
    count, per = raw["count"], raw["per"]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_COUNT:
        raise PolicyError(f"{field}.count", f"expected a whole number, 1 to {_MAX_COUNT}")
    if isinstance(per, str) and (m := _PER.fullmatch(per)):
        per = int(m[1]) * _UNIT[m[2]]
    if isinstance(per, bool) or not isinstance(per, int) or not 1 <= per <= MAX_PER:
        raise PolicyError(f"{field}.per", f"expected seconds (or 30m, 24h, 7d), at most "
                                          f"{MAX_PER}")
    return Limit(count, per)


def _quiet(raw: Any) -> QuietHours:
    if not isinstance(raw, dict) or set(raw) != {"from", "to", "tz"}:
        raise PolicyError("quiet_hours", 'expected {"from": "HH:MM", "to": "HH:MM", "tz"}')
    start = _clock(raw["from"], "quiet_hours.from")
    end = _clock(raw["to"], "quiet_hours.to")
    if start == end:  # empty, or the whole day: either way not what anyone meant
        raise PolicyError("quiet_hours", "from and to are the same time")
    if not isinstance(raw["tz"], str):
        raise PolicyError("quiet_hours.tz", "expected an IANA zone name")
    _zone(raw["tz"])
    return QuietHours(start, end, raw["tz"])


def parse_policy(name: str, body: Any) -> Policy:
    """Check a policy document (the body of `PUT /v1/policies/{name}`); raise PolicyError."""
    if not NAME.fullmatch(name):
        raise PolicyError("name", "1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(body, dict):
        raise PolicyError("policy", "expected a JSON object")
    fields = {k: v for k, v in body.items() if k != "name"}
    if body.get("name", name) != name:
        raise PolicyError("name", "the body names another policy than the path")
    for key in fields:
        if key not in _FIELDS:
            raise PolicyError(key, "unknown field")
    directions = None
    if "directions" in fields:
        raw = fields["directions"]
        if (not isinstance(raw, list) or not raw
                or not all(isinstance(d, str) and d in DIRECTIONS for d in raw)):
            raise PolicyError("directions", f"a non-empty list of {', '.join(DIRECTIONS)}")
        directions = frozenset(raw)
    return Policy(
        name=name,
        quiet_hours=_quiet(fields["quiet_hours"]) if "quiet_hours" in fields else None,
        directions=directions,
        ring_timeout=(_seconds(fields["ring_timeout"], "ring_timeout", _MAX_RING)
                      if "ring_timeout" in fields else None),
        max_call_seconds=(_seconds(fields["max_call_seconds"], "max_call_seconds", _MAX_CALL)
                          if "max_call_seconds" in fields else None),
        max_calls=_limit(fields["max_calls"], "max_calls") if "max_calls" in fields else None,
        max_sms=_limit(fields["max_sms"], "max_sms") if "max_sms" in fields else None,
        max_score=_score(fields["max_score"]) if "max_score" in fields else None,
    )


def _score(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 100:
        raise PolicyError("max_score", "expected a whole number, 0 to 100")
    return raw


def quiet_until(q: QuietHours, now: float) -> float | None:
    """When the quiet window that holds `now` (UNIX seconds) ends, or None outside it.

    Wall-clock times are read in the zone, so the window follows DST. An end that falls
    in a spring-forward gap resolves as `fold=0` does (its pre-transition offset: one
    hour after the gap's start); an end that occurs twice ends at its first occurrence,
    or at the second one when `now` is already past the first (inside the repeated hour).
    """
    zone = _zone(q.tz)
    local = datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    if q.start < q.end:
        if not q.start <= minute < q.end:
            return None
        day = local.date()
    elif minute >= q.start:  # across midnight, evening part: ends tomorrow
        day = local.date() + timedelta(days=1)
    elif minute < q.end:  # across midnight, morning part: ends today
        day = local.date()
    else:
        return None
    end = datetime.combine(day, time(q.end // 60, q.end % 60), tzinfo=zone)
    for fold in (0, 1):
        at = end.replace(fold=fold).timestamp()
        if at > now:
            return at
    return None


def counter_key(kind: str, binding: str | None, caller: str | None) -> str:
    """The shared counter of `caller`'s calls ("call") or texts ("sms") to one binding."""
    return f"{kind}:{binding}:{caller or 'anonymous'}"


def retry_after(until: float, now: float) -> int:
    """Whole seconds for a Retry-After header (RFC 3261 §20.33), at least 1."""
    return max(1, math.ceil(until - now))
