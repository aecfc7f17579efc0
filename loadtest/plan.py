"""What a load run places: attempts (when, who calls whom, what the callee does, which
answer the caller expects) and the bindings the target needs first. Pure: no I/O.

Two sources: call records as `relay calls --json` prints them (or a `/v1/calls`
answer), and rate profiles (`loadtest.profile`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from relay.events.records import CallRecord

__all__ = ["Attempt", "BindingSpec", "Plan", "PlanError", "from_records", "load_records"]


class PlanError(ValueError):
    """The input cannot be replayed (said why, in words for the user)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call attempt. Times in seconds; `offset` from the start of the run."""

    offset: float
    caller: str
    x: str
    callee: str | None  # the real number the switch should ring (None: refused first)
    expect_code: int  # final status the caller should see (200, 403, 404, 410, 486, ...)
    answer_delay: float = 0.0  # callee: INVITE -> 200 (or -> its refusal)
    callee_code: int = 200  # callee's final answer
    talk: float = 1.0  # answered -> first BYE
    hangup_by: str = "caller"  # "caller" or "callee" (who sends the BYE)
    cancel_after: float | None = None  # caller CANCELs this long after its INVITE
    step: str = ""  # profile step (or "replay")
    source_id: str = ""  # the record it reproduces


@dataclass(frozen=True, slots=True)
class BindingSpec:
    """A binding the target needs: AXB (x, a, b), frozen after creation when `frozen`."""

    x: str
    a: str
    b: str
    frozen: bool = False
    record: bool = True


@dataclass(slots=True)
class Plan:
    attempts: list[Attempt] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)  # X that must stay unknown (404)


def load_records(text: str) -> list[CallRecord]:
    """`relay calls --json` output or a `/v1/calls` answer (both `{"calls": [...]}`; a
    bare list is taken too)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"records are not JSON: {exc}") from None
    rows = data.get("calls") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise PlanError('records: expected {"calls": [...]} as `relay calls --json` prints')
    out: list[CallRecord] = []
    for i, row in enumerate(rows):
        try:
            out.append(CallRecord.from_json(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"record {i}: not a call record ({exc!r})") from None
    return out


def _masked(number: str | None) -> bool:
    return number is not None and "*" in number


def _span(a: float | None, b: float | None, default: float) -> float:
    return max(0.0, b - a) if a is not None and b is not None else default


def from_records(records: list[CallRecord], *, speed: float = 1.0) -> Plan:
    """Attempts at their original offsets (divided by `speed`) and the bindings they need.

    A bridged record gives its binding (its direction says who is A); a `frozen` refusal
    makes that X frozen (its caller a party: the relay says 403 before 410 to others);
    `no_binding` leaves X unknown; `stranger` needs X bound to others (the parties of
    another record, or placeholders)."""
    if speed <= 0:
        raise PlanError("--speed must be > 0")
    recs = sorted((r for r in records if r.caller and r.x), key=lambda r: r.started_at)
    if not recs:
        raise PlanError("no call records with a caller and an X to replay")
    for r in recs:
        if _masked(r.caller) or _masked(r.callee):
            raise PlanError(f"record {r.id}: numbers are masked; export with an admin token "
                            "(`relay calls --json` on the node, or /v1/calls as admin)")
    t0 = recs[0].started_at
    parties: dict[str, tuple[str, str]] = {}
    frozen: dict[str, str] = {}  # X -> a caller refused as frozen (a party, then)
    unbound: set[str] = set()
    attempts: list[Attempt] = []
    for r in recs:
        assert r.x is not None and r.caller is not None
        cause = r.unconnected_cause or "none"
        if r.callee and r.direction in ("a_to_b", "b_to_a"):
            a, b = (r.caller, r.callee) if r.direction == "a_to_b" else (r.callee, r.caller)
            parties.setdefault(r.x, (a, b))
        if cause == "frozen":
            frozen.setdefault(r.x, r.caller)
        elif cause == "no_binding":
            unbound.add(r.x)
        attempts.append(_attempt(r, (r.started_at - t0) / speed, speed))
    bindings: list[BindingSpec] = []
    for x in sorted(set(parties) | set(frozen) | {a.x for a in attempts if a.expect_code == 403}):
        if x in unbound and x not in parties:
            continue
        if x in parties:
            a, b = parties[x]
        else:  # seen only refused; a frozen X still knows its caller (410 needs a party)
            a, b = _placeholders(x)
            if x in frozen:
                a = frozen[x]
        bindings.append(BindingSpec(x, a, b, frozen=x in frozen))
    bound = {s.x for s in bindings}
    return Plan(attempts, bindings, sorted(unbound - bound))


def _placeholders(x: str) -> tuple[str, str]:
    """Parties for an X seen only refused (numbers made from X's digits)."""
    tail = int(x[-8:]) if x[-8:].isdigit() else 0
    return f"+86130{(tail + 50000000) % 10**8:08d}", f"+86131{(tail + 70000000) % 10**8:08d}"


def _attempt(r: CallRecord, offset: float, speed: float) -> Attempt:
    assert r.x is not None and r.caller is not None
    code = r.sip_code or (r.legs["caller"].sip_code if "caller" in r.legs else None) or 0
    callee = r.legs.get("callee")
    caller = r.legs.get("caller")
    answer_delay, callee_code, cancel_after = 0.0, 200, None
    if callee is not None:
        answered = callee.answer_at
        end = answered or callee.end_at
        answer_delay = _span(callee.invite_at, end, 0.0) if callee.sip_code != 487 else 0.0
        callee_code = callee.sip_code or code or 200
    if code == 487 and caller is not None:
        # The caller gave up: CANCEL after as long as it waited then.
        cancel_after = _span(caller.invite_at, caller.end_at, 1.0) / speed
        callee_code = 200
        answer_delay = cancel_after * speed + 30.0  # never answers before the CANCEL
    talk = r.duration_ms / 1000.0 if r.duration_ms else 1.0
    hangup = "callee" if r.released_by == "callee" else "caller"
    return Attempt(offset=offset, caller=r.caller, x=r.x,
                   callee=r.callee if r.unconnected_cause in (None, "none") else None,
                   expect_code=code, answer_delay=answer_delay / speed,
                   callee_code=callee_code, talk=talk / speed, hangup_by=hangup,
                   cancel_after=cancel_after, step="replay", source_id=r.id)


def describe(plan: Plan) -> dict[str, Any]:
    """A summary for the report: how many attempts expect which code."""
    codes: dict[str, int] = {}
    for a in plan.attempts:
        codes[str(a.expect_code)] = codes.get(str(a.expect_code), 0) + 1
    return {"attempts": len(plan.attempts), "bindings": len(plan.bindings),
            "frozen": sum(1 for b in plan.bindings if b.frozen),
            "unbound": len(plan.unbound), "expected_codes": codes}
