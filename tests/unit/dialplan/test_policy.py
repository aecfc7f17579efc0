"""dialplan.policy and the policy half of dialplan.route.decide: validation, quiet-hour
window edges (across midnight, DST in both directions), directions, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialplan.policy import Policy, PolicyError, QuietHours, parse_policy, quiet_until
from dialplan.refusals import REFUSALS, policy_reason
from dialplan.route import Bridge, Refuse, decide

A, B, X = "+8613800000001", "+8613900000002", "+8617000000003"


class Entry:
    id = "b1"
    mode = "AXB"
    state = "active"
    a = A
    b = B
    voice = True
    sms = True

    def effective_state(self, now: float) -> str:
        return "active"


def at(text: str, tz: str) -> float:
    """A local wall-clock time in `tz` as UNIX seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


# -- validation ----------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    ({"quiet_hours": {"from": "25:00", "to": "08:00", "tz": "Asia/Shanghai"}},
     "quiet_hours.from"),
    ({"quiet_hours": {"from": "22:00", "to": "8:00", "tz": "Asia/Shanghai"}},
     "quiet_hours.to"),
    ({"quiet_hours": {"from": "22:00", "to": "08:00", "tz": "Mars/Olympus"}},
     "quiet_hours.tz"),
    ({"quiet_hours": {"from": "22:00", "to": "08:00", "tz": "../../etc/passwd"}},
     "quiet_hours.tz"),
    ({"quiet_hours": {"from": "22:00", "to": "22:00", "tz": "UTC"}}, "quiet_hours"),
    ({"quiet_hours": {"from": "22:00", "to": "08:00"}}, "quiet_hours"),
    ({"directions": []}, "directions"),
    ({"directions": ["up"]}, "directions"),
    ({"ring_timeout": -1}, "ring_timeout"),
    ({"ring_timeout": True}, "ring_timeout"),
    ({"max_call_seconds": 0}, "max_call_seconds"),
    ({"max_call_seconds": 1.5}, "max_call_seconds"),
    ({"colour": "red"}, "colour"),
    ({"max_score": 150}, "max_score"),
    ({"max_calls": {"count": 0, "per": 3600}}, "max_calls.count"),
    ({"max_calls": {"count": 2, "per": "8d"}}, "max_calls.per"),
    ({"max_sms": {"count": 2, "per": "1w"}}, "max_sms.per"),
    ({"max_sms": {"count": 2}}, "max_sms"),
    ({"name": "other"}, "name"),
])
def test_invalid_policies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy("p1", body)
    assert exc.value.field == field


def test_bad_names_and_bodies() -> None:
    for name in ("", "-x", "a b", "x" * 65):
        with pytest.raises(PolicyError):
            parse_policy(name, {})
    with pytest.raises(PolicyError):
        parse_policy("p", [])


def test_round_trip() -> None:
    body = {"quiet_hours": {"from": "22:00", "to": "08:00", "tz": "Asia/Shanghai"},
            "directions": ["b_to_a", "a_to_b"], "ring_timeout": 30, "max_call_seconds": 600,
            "max_calls": {"count": 2, "per": "24h"}, "max_sms": {"count": 5, "per": 60}}
    p = parse_policy("night", body)
    doc = p.as_dict()
    assert doc["max_calls"] == {"count": 2, "per": 86400}
    assert doc["directions"] == ["a_to_b", "b_to_a"] and doc["name"] == "night"
    assert parse_policy("night", doc) == p
    assert parse_policy("empty", {}).as_dict() == {"name": "empty"}


# -- quiet-hour windows --------------------------------------------------------------

NIGHT = QuietHours(22 * 60, 8 * 60, "Asia/Shanghai")


@pytest.mark.parametrize(("local", "end"), [
    ("2026-12-07T21:59:59", None),
    ("2026-12-07T22:00:00", "2026-12-08T00:00"),  # 08:00 Shanghai = 00:00 UTC next day
    ("2026-12-07T23:59:59", "2026-12-08T00:00"),
    ("2026-12-08T00:00:00", "2026-12-08T00:00"),  # midnight: the morning part
    ("2026-12-08T07:59:59", "2026-12-08T00:00"),
    ("2026-12-08T08:00:00", None),
    ("2026-12-08T12:00:00", None),
])
def test_window_across_midnight(local: str, end: str | None) -> None:
    now = at(local, "Asia/Shanghai")
    until = quiet_until(NIGHT, now)
    assert (utc(until) if until is not None else None) == end


def test_daytime_window_and_retry_after() -> None:
    q = QuietHours(12 * 60, 14 * 60 + 30, "Europe/Berlin")
    assert quiet_until(q, at("2026-07-01T11:59:00", "Europe/Berlin")) is None
    now = at("2026-07-01T12:00:00", "Europe/Berlin")
    assert quiet_until(q, now) == now + 2.5 * 3600
    assert quiet_until(q, at("2026-07-01T14:30:00", "Europe/Berlin")) is None


def test_dst_spring_forward_window_is_an_hour_shorter() -> None:
    # Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    q = QuietHours(22 * 60, 8 * 60, "Europe/Berlin")
    now = at("2026-03-28T22:00:00", "Europe/Berlin")  # CET, UTC+1
    until = quiet_until(q, now)
    assert until is not None and utc(until) == "2026-03-29T06:00"  # 08:00 CEST
    assert until - now == 9 * 3600


def test_dst_fall_back_window_is_an_hour_longer() -> None:
    # Europe/Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET.
    q = QuietHours(22 * 60, 8 * 60, "Europe/Berlin")
    now = at("2026-10-24T22:00:00", "Europe/Berlin")
    until = quiet_until(q, now)
    assert until is not None and until - now == 11 * 3600


def test_window_ending_in_the_gap_and_in_the_repeated_hour() -> None:
    # Ends at 02:30, which does not exist on 2026-03-29 in Berlin: fold=0 reads it with
    # the pre-transition offset, i.e. 03:30 CEST (01:30 UTC).
    gap = QuietHours(1 * 60, 2 * 60 + 30, "Europe/Berlin")
    now = at("2026-03-29T01:15:00", "Europe/Berlin")
    until = quiet_until(gap, now)
    assert until is not None and utc(until) == "2026-03-29T01:30"
    # Ends at 02:30, which happens twice on 2026-10-25: inside the second 02:xx hour the
    # window ends at the second 02:30 (never in the past).
    rep = QuietHours(1 * 60, 2 * 60 + 30, "Europe/Berlin")
    second = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=ZoneInfo("Europe/Berlin"))
    until = quiet_until(rep, second.timestamp())
    assert until is not None and utc(until) == "2026-10-25T01:30" and until > second.timestamp()


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 1439), end=st.integers(0, 1439),
       now=st.floats(1.7e9, 1.9e9), tz=st.sampled_from(
           ["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]))
def test_inside_the_window_until_is_in_the_future_and_outside_none(
        start: int, end: int, now: float, tz: str) -> None:
    if start == end:
        return
    q = QuietHours(start, end, tz)
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    m = local.hour * 60 + local.minute
    inside = start <= m < end if start < end else (m >= start or m < end)
    until = quiet_until(q, now)
    if not inside:
        assert until is None
    else:
        assert until is not None and now < until <= now + 25 * 3600


# -- decide with a policy --------------------------------------------------------------

def test_quiet_hours_refuse_towards_b_only() -> None:
    p = Policy("q", quiet_hours=NIGHT)
    now = at("2026-12-07T23:00:00", "Asia/Shanghai")
    d = decide(Entry(), True, A, now, policy=p)
    assert d == Refuse(480, "quiet_hours", 21, "b1", retry_after=9 * 3600)
    assert isinstance(decide(Entry(), True, B, now, policy=p), Bridge)  # B calls back
    sms = decide(Entry(), True, A, now, "sms", policy=p)
    assert isinstance(sms, Refuse) and sms.reason == "quiet_hours"
    assert isinstance(decide(Entry(), True, A, now + 9 * 3600, policy=p), Bridge)


def test_direction_and_limits() -> None:
    one_way = Policy("o", directions=frozenset({"a_to_b"}), ring_timeout=20,
                     max_call_seconds=60)
    d = decide(Entry(), True, A, 0.0, policy=one_way)
    assert d == Bridge(B, "b1", "a_to_b", ring_timeout=20, max_call_seconds=60)
    assert decide(Entry(), True, B, 0.0, policy=one_way) == Refuse(403, "direction", 21, "b1")
    assert decide(Entry(), True, "+8613700000000", 0.0, policy=one_way).reason == "stranger"
    assert decide(Entry(), True, A, 0.0) == Bridge(B, "b1", "a_to_b")


def test_one_refusal_table() -> None:
    assert REFUSALS["quiet_hours"].sip == 480 and REFUSALS["direction"].sip == 403
    assert policy_reason("quiet_hours") == "quiet_hours" and policy_reason("frozen") is None
    assert all(r.prompt is None for r in REFUSALS.values() if r.policy)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40_000), st.integers(0, 1439), st.integers(0, 1439),
                          st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "UTC"])),
                min_size=1, max_size=30),
       st.floats(1.7e9, 1.9e9))
def test_no_policy_edits_let_a_call_through_inside_quiet_hours(
        steps: list[tuple[float, int, int, str]], start: float) -> None:
    now = start
    for gap, frm, to, tz in steps:
        now += gap
        if frm == to:
            continue
        q = QuietHours(frm, to, tz)  # the policy as edited just before this call
        d = decide(Entry(), True, A, now, policy=Policy("p", quiet_hours=q))
        local = datetime.fromtimestamp(now, ZoneInfo(tz))
        m = local.hour * 60 + local.minute
        inside = frm <= m < to if frm < to else (m >= frm or m < to)
        assert isinstance(d, Refuse) == inside
        if inside:
            assert isinstance(d, Refuse) and d.code == 480 and d.retry_after is not None
            assert 1 <= d.retry_after <= 25 * 3600
