"""The blocklist (DESIGN.md "Policies": a blocked caller gets 603): entries, validation
and the in-memory view the decision reads.

Pure: no I/O, no clock. An entry blocks one caller number on every X (`x` None) or on
one X, until `until` (UNIX seconds) or for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Block", "Blocklist", "parse_block"]

_MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Block:
    """One caller blocked globally (`x` None) or on one X."""

    number: str
    reason: str
    x: str | None = None
    until: float | None = None
    created_at: float = 0.0

    def live(self, now: float) -> bool:
        """Still in force at `now`."""
        return self.until is None or now < self.until

    def as_dict(self) -> dict[str, Any]:
        """The store form (times as UNIX seconds)."""
        return {"number": self.number, "reason": self.reason, "x": self.x,
                "until": self.until, "created_at": self.created_at}


def _until(raw: Any, now: float) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ValueError("until must be UNIX seconds or an ISO 8601 time with a zone")
    if isinstance(raw, int | float):
        at = float(raw)
    elif isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError("until is not an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise ValueError("until needs a time zone (e.g. Z)")
        at = dt.timestamp()
    else:
        raise ValueError("until must be UNIX seconds or an ISO 8601 time with a zone")
    if at <= now:
        raise ValueError("until is in the past")
    return at


def parse_block(number: str, body: Any, x: str | None, now: float) -> Block:
    """Check a blocklist entry (the body of `PUT /v1/blocklist/{number}`, numbers already
    normalised by the caller); raise ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    unknown = set(body) - {"reason", "until", "x"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > _MAX_REASON:
        raise ValueError(f"reason must be a non-empty string of at most {_MAX_REASON}")
    return Block(number, reason.strip(), x, _until(body.get("until"), now), now)


class Blocklist:
    """Entries by caller number; built whole and never changed (a reader sees one view)."""

    __slots__ = ("_by_number",)

    def __init__(self, blocks: Iterable[Block] = ()) -> None:
        by: dict[str, list[Block]] = {}
        for b in blocks:
            by.setdefault(b.number, []).append(b)
        self._by_number = {n: tuple(v) for n, v in by.items()}

    def match(self, caller: str | None, x: str, now: float) -> Block | None:
        """The entry in force that blocks `caller` calling or texting `x`, if any."""
        if caller is None:
            return None
        found = self._by_number.get(caller)
        if not found:
            return None
        for b in found:
            if (b.x is None or b.x == x) and b.live(now):
                return b
        return None

    def entries(self) -> list[Block]:
        """Every entry, by number then X (global first)."""
        return sorted((b for v in self._by_number.values() for b in v),
                      key=lambda b: (b.number, b.x or ""))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_number.values())
