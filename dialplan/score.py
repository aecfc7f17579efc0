"""The harassment score of a caller, 0-100, from their recent calls and texts.

DESIGN.md "Policies" seeds the rules: abnormal contact frequency, late-night contact,
unwanted contact. Each rule here counts one input over the last 24 h or 7 d, lets the
first `free` pass, then adds `points` per unit up to `cap`; the score is the sum,
capped at 100. The weights are data (`RULES`): change them here, not in code.

Pure: contacts and `now` are arguments; the relay keeps the contacts (relay.contacts).
"""

from __future__ import annotations

from collections.abc import Iterable
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


def _is_night(at: float, zone: ZoneInfo) -> bool:
    t = datetime.fromtimestamp(at, zone)
    minute = t.hour * 60 + t.minute
    start, end = NIGHT
    return minute >= start or minute < end


def score_card(contacts: Iterable[Contact], now: float, tz: str = "UTC",
               rules: tuple[Rule, ...] = RULES) -> ScoreCard:
    """The caller's inputs for the last 24 h and 7 d, and their score (0-100).
    Night is read in `tz` (`[dialplan] score_tz`)."""
    zone = ZoneInfo(tz)
    week = [c for c in contacts if now - WEEK < c.at <= now]
    last24 = [c for c in week if c.at > now - DAY]
    night = [c for c in week if _is_night(c.at, zone)]  # one conversion per contact
    inputs = {
        "attempts_24h": sum(1 for c in last24 if c.kind == "call"),
        "attempts_7d": sum(1 for c in week if c.kind == "call"),
        "distinct_targets_24h": len({c.target for c in last24}),
        "distinct_targets_7d": len({c.target for c in week}),
        "texts_24h": sum(1 for c in last24 if c.kind == "sms"),
        "texts_7d": sum(1 for c in week if c.kind == "sms"),
        "night_24h": sum(1 for c in night if c.at > now - DAY),
        "night_7d": len(night),
        "refused_24h": sum(1 for c in last24 if c.refused),
        "refused_7d": sum(1 for c in week if c.refused),
        "short_calls_24h": sum(1 for c in last24 if c.short),
        "short_calls_7d": sum(1 for c in week if c.short),
    }
    points = {r.input: min(r.cap, max(0, inputs[r.input] - r.free) * r.points)
              for r in rules}
    return ScoreCard(inputs, points, min(100, round(sum(points.values()))))
