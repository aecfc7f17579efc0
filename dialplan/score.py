"""The harassment score of a caller, 0-100, from their recent calls and texts.

DESIGN.md "Policies" seeds the rules: abnormal contact frequency, late-night contact,
unwanted contact. Each rule here counts one input over the last 24 h or 7 d, lets the
first `free` pass, then adds `points` per unit up to `cap`; the score is the sum,
capped at 100. The weights are data (`RULES`): change them here, not in code.

Pure: contacts and `now` are arguments; the relay keeps the contacts (relay.contacts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["DAY", "NIGHT", "RULES", "WEEK", "Contact", "Rule", "ScoreCard", "score_card"]

DAY = 86400.0
WEEK = 7 * DAY
NIGHT = (22 * 60, 7 * 60)  # local minutes [from, to): late at night or early morning
SHORT_MS = 10_000  # an answered call shorter than this is "very short"


class Contact(NamedTuple):
    """One call or text by the caller, as the relay recorded it."""

    at: float  # UNIX seconds
    target: str  # the binding (or X) contacted: a stand-in for B, never B's number
    kind: str  # "call" or "sms"
    refused: bool = False  # refused by the relay or declined by B
    short: bool = False  # an answered call under SHORT_MS


class Rule(NamedTuple):
    """`points` per unit of `input` (its name says its window) beyond the first `free`,
    at most `cap`."""

    input: str
    free: int
    points: float
    cap: float


RULES: tuple[Rule, ...] = (
    # abnormal contact frequency
    Rule("attempts_24h", 5, 2.0, 25.0),
    Rule("distinct_targets_24h", 3, 5.0, 20.0),
    Rule("texts_24h", 10, 1.0, 10.0),
    # late-night and early-morning contact
    Rule("night_7d", 1, 4.0, 20.0),
    # unwanted contact: refused or declined, and calls hung up at once
    Rule("refused_7d", 2, 3.0, 20.0),
    Rule("short_calls_7d", 2, 2.0, 15.0),
)


@dataclass(frozen=True, slots=True)
class ScoreCard:
    """The inputs over both windows and the score they make."""

    inputs: dict[str, int]
    points: dict[str, float]
    score: int


def _night(zone: ZoneInfo) -> Callable[[float], bool]:
    """A test for "at is at night in `zone`" that converts one time per hour: the
    zone's offset is looked up once per UTC hour (offsets change on whole quarter
    hours at most, so an hour-long bucket can straddle a change only at its edge,
    where a contact is counted with the offset of its hour's start)."""
    offsets: dict[int, float] = {}
    start, end = NIGHT

    def is_night(at: float) -> bool:
        hour = int(at // 3600)
        off = offsets.get(hour)
        if off is None:
            delta = datetime.fromtimestamp(hour * 3600.0, zone).utcoffset()
            off = offsets[hour] = delta.total_seconds() if delta is not None else 0.0
        minute = int((at + off) % 86400 // 60)
        return minute >= start or minute < end

    return is_night


def score_card(contacts: Iterable[Contact], now: float, tz: str = "UTC",
               rules: tuple[Rule, ...] = RULES) -> ScoreCard:
    """The caller's inputs for the last 24 h and 7 d, and their score (0-100).
    Night is read in `tz` (`[dialplan] score_tz`)."""
    is_night = _night(ZoneInfo(tz))
    names = ("attempts", "texts", "night", "refused", "short_calls")
    week, day = [0] * 5, [0] * 5  # counts by `names`
    targets: set[str] = set()
    targets_24h: set[str] = set()
    week_start, day_start = now - WEEK, now - DAY
    # One pass with plain counters: a busy caller has thousands of contacts in a week.
    for c in contacts:
        at = c.at
        if at <= week_start or at > now:
            continue
        into = (week, day) if at > day_start else (week,)
        for counts in into:
            counts[0 if c.kind == "call" else 1] += 1
            if c.refused:
                counts[3] += 1
            if c.short:
                counts[4] += 1
        if is_night(at):
            for counts in into:
                counts[2] += 1
        targets.add(c.target)
        if at > day_start:
            targets_24h.add(c.target)
    inputs = {"distinct_targets_24h": len(targets_24h), "distinct_targets_7d": len(targets)}
    for i, name in enumerate(names):
        inputs[f"{name}_24h"] = day[i]
        inputs[f"{name}_7d"] = week[i]
    points = {r.input: min(r.cap, max(0, inputs[r.input] - r.free) * r.points)
              for r in rules}
    return ScoreCard(inputs, points, min(100, round(sum(points.values()))))
