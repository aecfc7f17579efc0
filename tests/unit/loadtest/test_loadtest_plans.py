"""The load tool's pure parts: the profile parser and generator, records -> plan."""

from __future__ import annotations

import itertools
import json

import pytest

from loadtest.plan import (
    PlanError,
    describe,
    from_records,
    load_messages,
    load_records,
    next_cursor,
)
from loadtest.profile import Dist, ProfileError, Step, generate, parse_profile, step_offsets

PROFILE = """
# a warm-up, a plateau and a burst
ramp 1 5 4s
hold 5 2s      # steady
spike 20 1s
hold-time uniform 1s 3s
answer-delay exp 500ms
strangers 10%
frozen 0.05
sms 2
bindings 8
seed 3
"""


def test_profile_parses_every_clause() -> None:
    p = parse_profile(PROFILE)
    assert p.steps == [Step("ramp", 1, 5, 4), Step("hold", 5, 5, 2), Step("spike", 20, 20, 1)]
    assert p.hold_time == Dist("uniform", 1, 3)
    assert p.answer_delay == Dist("exp", 0.5)
    assert (p.strangers, p.frozen, p.sms_rate, p.bindings, p.seed) == (0.1, 0.05, 2, 8, 3)
    assert p.seconds == 7


def test_profile_inline_clauses_equal_lines() -> None:
    assert parse_profile("hold 3 2s; hold-time 2s") == parse_profile("hold 3 2s\nhold-time 2s")


@pytest.mark.parametrize(("text", "needle"), [
    ("", "at least one"),
    ("hold 5", "line 1: hold RATE DURATION"),
    ("hold 5 2s\nramp 1 x 2s", "line 2: rate 'x'"),
    ("hold 5 soon", "not a duration"),
    ("hold 5 2s; strangers 150%", "at most 100%"),
    ("hold 5 2s; strangers 60%; frozen 50%", "exceed 100%"),
    ("hold 5 2s; hold-time gauss 3s 1s", "fixed T | uniform"),
    ("hold 5 2s; answer-delay uniform 3s 1s", "LO <= HI"),
    ("hold 5 2s; burst 9 1s", "unknown 'burst'"),
    ("hold -5 2s", "must be >= 0"),
])
def test_profile_errors_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(ProfileError, match=needle.replace("|", r"\|").replace("(", r"\(")):
        parse_profile(text)


def test_step_offsets_follow_the_rate() -> None:
    hold = step_offsets(Step("hold", 4, 4, 2), 10.0)
    assert hold == [10.0, 10.25, 10.5, 10.75, 11.0, 11.25, 11.5, 11.75]
    ramp = step_offsets(Step("ramp", 0, 10, 2), 0.0)  # 10 calls, denser at the end
    assert len(ramp) == 10
    gaps = [b - a for a, b in itertools.pairwise(ramp)]
    assert gaps[0] > gaps[-1] > 0
    assert max(ramp) <= 2.0


def test_generate_is_seeded_and_mixes_outcomes() -> None:
    p = parse_profile("hold 50 4s; strangers 20%; frozen 10%; bindings 10; seed 9; "
                      "hold-time exp 2s; answer-delay uniform 0.1s 0.2s")
    plan = generate(p)
    again = generate(p)
    assert plan.attempts == again.attempts
    assert len(plan.attempts) == 200
    codes = {c: sum(1 for a in plan.attempts if a.expect_code == c) for c in (200, 403, 410)}
    assert sum(codes.values()) == 200
    assert 20 <= codes[403] <= 60 and 8 <= codes[410] <= 35
    frozen = {b.x for b in plan.bindings if b.frozen}
    assert frozen and all(a.x in frozen for a in plan.attempts if a.expect_code == 410)
    parties = {b.x: (b.a, b.b) for b in plan.bindings}
    for a in plan.attempts:
        if a.expect_code == 403:
            assert a.caller not in parties[a.x]
        if a.expect_code == 200:
            assert (a.caller, a.callee) == parties[a.x]
            assert 0.1 <= a.answer_delay <= 0.2
    # Real numbers differ in their last digits: a leak check on them cannot be fooled.
    tails = [n[-8:] for b in plan.bindings for n in (b.x, b.a, b.b)]
    assert len(tails) == len(set(tails))


def _leg(invite: str, ring: str | None, answer: str | None, end: str, code: int) -> dict:
    return {"invite_at": invite, "ring_at": ring, "answer_at": answer, "end_at": end,
            "sip_code": code}


def _record(i: str, started: str, x: str, caller: str, callee: str | None, **kw: object
            ) -> dict:
    base = {"id": i, "started_at": started, "x": x, "binding": None, "out_id": None,
            "caller": caller, "callee": callee, "direction": None, "legs": {},
            "sip_code": 200, "cause": 16, "released_by": "caller", "end_reason": None,
            "unconnected_cause": "none", "policy_reason": None, "duration_ms": 0,
            "recording": None}
    base.update(kw)
    return base


RECORDS = {"calls": [
    _record("c2", "2026-12-07T10:00:02.500Z", "+8617000000001", "+8613900000002",
            "+8613800000001", direction="b_to_a", released_by="callee", duration_ms=4000,
            legs={"caller": _leg("2026-12-07T10:00:02.500Z", "2026-12-07T10:00:02.510Z",
                                 "2026-12-07T10:00:04.000Z", "2026-12-07T10:00:08.000Z", 200),
                  "callee": _leg("2026-12-07T10:00:02.505Z", "2026-12-07T10:00:02.510Z",
                                 "2026-12-07T10:00:03.995Z", "2026-12-07T10:00:08.000Z",
                                 200)}),
    _record("c1", "2026-12-07T10:00:00.000Z", "+8617000000001", "+8613800000001",
            "+8613900000002", direction="a_to_b", duration_ms=2000,
            legs={"caller": _leg("2026-12-07T10:00:00.000Z", None, "2026-12-07T10:00:00.800Z",
                                 "2026-12-07T10:00:02.800Z", 200),
                  "callee": _leg("2026-12-07T10:00:00.010Z", None, "2026-12-07T10:00:00.790Z",
                                 "2026-12-07T10:00:02.800Z", 200)}),
    _record("c3", "2026-12-07T10:00:03.000Z", "+8617000000009", "+8613700000003", None,
            sip_code=410, unconnected_cause="frozen", released_by="relay"),
    _record("c4", "2026-12-07T10:00:04.000Z", "+8617000000001", "+8613700000004", None,
            sip_code=403, unconnected_cause="stranger", released_by="relay"),
    _record("c5", "2026-12-07T10:00:05.000Z", "+8617000000077", "+8613700000005", None,
            sip_code=404, unconnected_cause="no_binding", released_by="relay"),
    _record("c6", "2026-12-07T10:00:06.000Z", "+8617000000001", "+8613800000001",
            "+8613900000002", direction="a_to_b", sip_code=486, unconnected_cause="none",
            released_by="callee",
            legs={"caller": _leg("2026-12-07T10:00:06.000Z", None, None,
                                 "2026-12-07T10:00:07.000Z", 486),
                  "callee": _leg("2026-12-07T10:00:06.010Z", None, None,
                                 "2026-12-07T10:00:07.010Z", 486)}),
]}


def test_records_become_attempts_at_their_offsets() -> None:
    plan = from_records(load_records(json.dumps(RECORDS)), speed=2.0)
    ids = [a.source_id for a in plan.attempts]
    assert ids == ["c1", "c2", "c3", "c4", "c5", "c6"]  # sorted by started_at
    c1, c2, c3, c4, c5, c6 = plan.attempts
    assert [a.offset for a in plan.attempts] == [0.0, 1.25, 1.5, 2.0, 2.5, 3.0]
    assert (c1.expect_code, c1.callee, c1.hangup_by) == (200, "+8613900000002", "caller")
    assert c1.answer_delay == pytest.approx(0.39)  # 780 ms at speed 2
    assert c1.talk == pytest.approx(1.0)
    assert (c2.hangup_by, c2.talk, c2.callee) == ("callee", 2.0, "+8613800000001")
    assert (c3.expect_code, c4.expect_code, c5.expect_code) == (410, 403, 404)
    assert c3.callee is None and c4.callee is None
    assert (c6.expect_code, c6.callee_code) == (486, 486)
    assert c6.answer_delay == pytest.approx(0.5)
    # The binding of X1 comes from its bridged calls (A called first); X9 only ever
    # refused as frozen is bound to its caller and frozen; X77 stays unknown.
    by_x = {b.x: b for b in plan.bindings}
    assert (by_x["+8617000000001"].a, by_x["+8617000000001"].b) == ("+8613800000001",
                                                                    "+8613900000002")
    assert by_x["+8617000000009"].frozen
    assert by_x["+8617000000009"].a == "+8613700000003"  # a party, or 403 comes first
    assert by_x["+8617000000001"].b != "+8613700000004"  # the stranger stays one
    assert "+8617000000077" not in by_x
    assert plan.unbound == ["+8617000000077"]


def test_records_errors_are_clear() -> None:
    with pytest.raises(PlanError, match="not JSON"):
        load_records("calls:")
    with pytest.raises(PlanError, match="relay calls --json"):
        load_records('{"bindings": []}')
    masked = json.loads(json.dumps(RECORDS))
    masked["calls"][0]["caller"] = "+86139****0002"
    with pytest.raises(PlanError, match="masked"):
        from_records(load_records(json.dumps(masked)))
    with pytest.raises(PlanError, match="no call records"):
        from_records([])
    with pytest.raises(PlanError, match="speed"):
        from_records(load_records(json.dumps(RECORDS)), speed=0)


MODES = {"calls": [
    # AXE on X5: two extensions, each its own B; one caller keyed a wrong extension.
    _record("e1", "2026-12-07T11:00:00.000Z", "+8617000000005", "+8613800000011",
            "+8613900000021", direction="a_to_b", ext="0101"),
    _record("e2", "2026-12-07T11:00:01.000Z", "+8617000000005", "+8613800000012",
            "+8613900000022", direction="a_to_b", ext="0102"),
    _record("e3", "2026-12-07T11:00:02.000Z", "+8617000000005", "+8613800000013", None,
            ext="0999", sip_code=404, unconnected_cause="no_extension"),
    # AXN on X6: two strangers reach B; B calls back and reaches A.
    _record("n1", "2026-12-07T11:00:03.000Z", "+8617000000006", "+8613800000031",
            "+8613900000041", direction="a_to_b"),
    _record("n2", "2026-12-07T11:00:04.000Z", "+8617000000006", "+8613800000032",
            "+8613900000041", direction="a_to_b"),
    _record("n3", "2026-12-07T11:00:05.000Z", "+8617000000006", "+8613900000041",
            "+8613800000050", direction="b_to_a"),
    # AXN without A on X7: anyone reaches B, B's own call is refused no_party.
    _record("m1", "2026-12-07T11:00:06.000Z", "+8617000000007", "+8613900000061", None,
            sip_code=480, unconnected_cause="no_party"),
    # AXB on X8 with two pairs (a number serves several pairs).
    _record("p1", "2026-12-07T11:00:07.000Z", "+8617000000008", "+8613800000071",
            "+8613900000081", direction="a_to_b"),
    _record("p2", "2026-12-07T11:00:08.000Z", "+8617000000008", "+8613900000082",
            "+8613800000072", direction="b_to_a"),
]}


def test_records_give_the_binding_mode() -> None:
    plan = from_records(load_records(json.dumps(MODES)))
    got = sorted((b.x, b.mode, b.a, b.b, b.ext) for b in plan.bindings)
    assert got == [
        ("+8617000000005", "AXE", "", "+8613900000021", "0101"),
        ("+8617000000005", "AXE", "", "+8613900000022", "0102"),
        ("+8617000000006", "AXN", "+8613800000050", "+8613900000041", None),
        ("+8617000000007", "AXN", "", "+8613900000061", None),
        ("+8617000000008", "AXB", "+8613800000071", "+8613900000081", None),
        ("+8617000000008", "AXB", "+8613800000072", "+8613900000082", None),
    ]
    by_id = {a.source_id: a for a in plan.attempts}
    assert (by_id["e1"].ext, by_id["e3"].ext, by_id["n1"].ext) == ("0101", "0999", None)
    assert by_id["e3"].expect_code == 404 and by_id["e3"].callee is None
    assert describe(plan)["modes"] == {"AXE": 2, "AXN": 2, "AXB": 2}


def _message(mid: str, t: str, x: str, sender: str, recipient: str | None, **kw: object
             ) -> dict[str, object]:
    base: dict[str, object] = {
        "id": mid, "started_at": t, "x": x, "sender": sender, "recipient": recipient,
        "binding": None, "direction": "a_to_b" if recipient else None, "origin": "smpp",
        "route": None, "status": "delivered" if recipient else "refused", "reason": None,
        "policy_reason": None, "command_status": 0 if recipient else None}
    base.update(kw)
    return base


def test_messages_join_the_plan_with_their_statuses() -> None:
    msgs = load_messages(json.dumps({"messages": [
        _message("s1", "2026-12-07T09:59:59.000Z", "+8617000000001", "+8613800000001",
                 "+8613900000002"),
        _message("s2", "2026-12-07T10:00:01.000Z", "+8617000000003", "+8613800000033",
                 None, reason="frozen"),
        _message("s3", "2026-12-07T10:00:02.000Z", "+8617000000004", "+8613800000044",
                 "+8613900000045", direction="b_to_a"),
        _message("s4", "2026-12-07T10:00:03.000Z", "+8617000000001", "+8613700000009",
                 None, reason="stranger", command_status=0x65)]}))
    plan = from_records(load_records(json.dumps(RECORDS)), speed=2.0, messages=msgs)
    # Offsets count from the first record of either kind: the message a second earlier.
    assert [a.offset for a in plan.attempts][:2] == [0.5, 1.75]
    assert [(m.source_id, m.offset, m.expect_status) for m in plan.messages] == [
        ("s1", 0.0, 0), ("s2", 1.0, 0x66), ("s3", 1.5, 0), ("s4", 2.0, 0x65)]
    by_x = {b.x: b for b in plan.bindings}
    assert by_x["+8617000000003"].frozen and by_x["+8617000000003"].a == "+8613800000033"
    # A text from B (b_to_a) makes the pair with B as b.
    assert (by_x["+8617000000004"].a, by_x["+8617000000004"].b) == ("+8613900000045",
                                                                    "+8613800000044")
    assert describe(plan)["messages"] == 4
    with pytest.raises(PlanError, match="relay messages --json"):
        load_messages('{"calls": []}')
    only = from_records([], messages=msgs)
    assert only.attempts == [] and len(only.messages) == 4


def test_next_cursor() -> None:
    assert next_cursor('{"calls": [], "next": "abc"}') == "abc"
    assert next_cursor('{"calls": []}') is None
    assert next_cursor("nope") is None


def test_a_wrong_extension_recorded_without_it_dials_one_no_binding_has() -> None:
    rows = {"calls": [
        _record("e1", "2026-12-07T11:00:00.000Z", "+8617000000005", "+8613800000011",
                "+8613900000021", direction="a_to_b", ext="0000"),
        _record("e2", "2026-12-07T11:00:01.000Z", "+8617000000005", "+8613800000013", None,
                sip_code=404, unconnected_cause="no_extension"),
        _record("e3", "2026-12-07T11:00:02.000Z", "+8617000000006", "+8613800000014", None,
                sip_code=404, unconnected_cause="no_extension")]}
    plan = from_records(load_records(json.dumps(rows)))
    by_id = {a.source_id: a for a in plan.attempts}
    assert by_id["e2"].ext == "0001"  # "0000" selects a binding
    # An X seen only refused so still serves extensions: one binding on a spare one.
    only = [b for b in plan.bindings if b.x == "+8617000000006"]
    assert [(b.mode, b.ext) for b in only] == [("AXE", "0000")]
    assert by_id["e3"].ext == "0001"


def test_a_binding_bridged_then_frozen_is_frozen_between_the_two() -> None:
    rows = {"calls": [
        _record("b1", "2026-12-07T11:00:00.000Z", "+8617000000008", "+8613800000071",
                "+8613900000081", direction="a_to_b"),
        _record("b2", "2026-12-07T11:00:04.000Z", "+8617000000008", "+8613800000071", None,
                sip_code=410, unconnected_cause="frozen")]}
    (b,) = from_records(load_records(json.dumps(rows)), speed=2.0).bindings
    assert b.frozen and b.freeze_at == pytest.approx(1.0)  # (0 + 4) / 2 at speed 2
    (only,) = from_records(load_records(json.dumps({"calls": rows["calls"][1:]}))).bindings
    assert only.frozen and only.freeze_at is None  # never bridged here: frozen at setup
