"""What a load run places: attempts (when, who calls whom, what the callee does, which
answer the caller expects) and the bindings the target needs first. Pure: no I/O.

Two sources: call records as `relay calls --json` prints them (or a `/v1/calls`
answer), with message records (`relay messages --json`, `/v1/messages`) beside them,
and rate profiles (`loadtest.profile`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from relay.events.records import CallRecord, MessageRecord
from relay.sms.refusals import SMS_REFUSALS

__all__ = ["Attempt", "BindingSpec", "Plan", "PlanError", "SmsAttempt", "from_records",
           "load_messages", "load_records", "next_cursor"]


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
    ext: str | None = None  # AXE: dialled as `X;ext=E` in the Request-URI


@dataclass(frozen=True, slots=True)
class BindingSpec:
    """A binding the target needs, frozen after creation when `frozen`: AXB (x, a, b),
    AXN (x, b, and a when B's calls to X reach someone: else `a` is ""), AXE (x, ext, b)."""

    x: str
    a: str
    b: str
    frozen: bool = False
    record: bool = True
    mode: str = "AXB"
    ext: str | None = None
    freeze_at: float | None = None  # frozen: at this offset of the run (None: at setup)


@dataclass(frozen=True, slots=True)
class SmsAttempt:
    """One message to submit over SMPP at `offset`: `sender` to X, answered with
    `expect_status` (0: accepted, then delivered to `recipient` with X as sender)."""

    offset: float
    sender: str
    x: str
    expect_status: int
    recipient: str | None = None
    source_id: str = ""


@dataclass(slots=True)
class Plan:
    attempts: list[Attempt] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)
    unbound: list[str] = field(default_factory=list)  # X that must stay unknown (404)
    messages: list[SmsAttempt] = field(default_factory=list)


def load_records(text: str) -> list[CallRecord]:
    """`relay calls --json` output or a `/v1/calls` answer (both `{"calls": [...]}`; a
    bare list is taken too)."""
    out: list[CallRecord] = []
    for i, row in enumerate(_rows(text, "calls", "relay calls --json")):
        try:
            out.append(CallRecord.from_json(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"record {i}: not a call record ({exc!r})") from None
    return out


def load_messages(text: str) -> list[MessageRecord]:
    """`relay messages --json` output or a `/v1/messages` answer (`{"messages": [...]}`)."""
    out: list[MessageRecord] = []
    for i, row in enumerate(_rows(text, "messages", "relay messages --json")):
        try:
            out.append(MessageRecord.from_json(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"message {i}: not a message record ({exc!r})") from None
    return out


def _rows(text: str, key: str, what: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"records are not JSON: {exc}") from None
    rows = data.get(key) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise PlanError(f'records: expected {{"{key}": [...]}} as `{what}` prints')
    return rows


def next_cursor(text: str) -> str | None:
    """The `next` cursor of an API answer (more records on another page), if any."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    nxt = data.get("next") if isinstance(data, dict) else None
    return nxt if isinstance(nxt, str) and nxt else None


def _masked(number: str | None) -> bool:
    return number is not None and "*" in number


def _span(a: float | None, b: float | None, default: float) -> float:
    return max(0.0, b - a) if a is not None and b is not None else default


def from_records(records: list[CallRecord], *, speed: float = 1.0,
                 messages: list[MessageRecord] | None = None) -> Plan:
    """Attempts at their original offsets (divided by `speed`) and the bindings they need.

    Records do not carry the binding's mode; it is inferred per X (`_bindings_of`): a
    record with `ext` makes X shared (AXE, one binding per extension, dialled as
    `X;ext=E`); several callers reaching one B, or a `no_party` refusal, make it AXN;
    otherwise each bridged pair is an AXB binding (its direction says who is A). A
    `frozen` refusal freezes the binding of its caller (a party: the relay says 403
    before 410 to others); `no_binding` leaves X unknown; `stranger` needs X bound to
    others (the parties of another record, or placeholders)."""
    if speed <= 0:
        raise PlanError("--speed must be > 0")
    recs = sorted((r for r in records if r.caller and r.x), key=lambda r: r.started_at)
    msgs = sorted((m for m in messages or [] if m.sender and m.x),
                  key=lambda m: m.started_at)
    if not recs and not msgs:
        raise PlanError("no call records (nor messages) with a caller and an X to replay")
    for r in recs:
        if _masked(r.caller) or _masked(r.callee):
            raise PlanError(f"record {r.id}: numbers are masked; export with an admin token "
                            "(`relay calls --json` on the node, or /v1/calls as admin)")
    for m in msgs:
        if _masked(m.sender) or _masked(m.recipient):
            raise PlanError(f"message {m.id}: numbers are masked; export with an admin "
                            "token (`relay messages --json`, or /v1/messages as admin)")
    t0 = min([r.started_at for r in recs[:1]] + [m.started_at for m in msgs[:1]])
    by_x: dict[str, list[CallRecord]] = {}
    # A message says as much about X's binding as a call does: same parties, same refusals.
    for r in sorted([*recs, *map(_as_call, msgs)], key=lambda r: r.started_at):
        assert r.x is not None
        by_x.setdefault(r.x, []).append(r)
    bindings: list[BindingSpec] = []
    unbound: list[str] = []
    for x in sorted(by_x):
        got = _bindings_of(x, by_x[x])
        bindings += got
        if not got:
            unbound.append(x)
    # A binding that bridged calls before its first `frozen` refusal (an order delivered,
    # then closed) is frozen during the run, between the two, not at setup.
    bindings = [_freeze_time(b, by_x[b.x], t0, speed) if b.frozen else b for b in bindings]
    attempts = [_attempt(r, (r.started_at - t0) / speed, speed) for r in recs]
    # A refusal for a wrong extension is recorded without the extension: dial one that
    # no binding of X has (without any, the relay would answer and prompt for digits).
    exts: dict[str, set[str]] = {}
    for b in bindings:
        if b.ext is not None:
            exts.setdefault(b.x, set()).add(b.ext)
    for i, (r, a) in enumerate(zip(recs, attempts, strict=True)):
        if a.ext is None and _cause(r) == "no_extension" and a.x in exts:
            attempts[i] = dataclasses.replace(a, ext=_unused_ext(exts[a.x]))
    texts = [SmsAttempt((m.started_at - t0) / speed, m.sender or "", m.x or "",
                        _sms_status(m), m.recipient, m.id) for m in msgs]
    return Plan(attempts, bindings, unbound, texts)


def _as_call(m: MessageRecord) -> CallRecord:
    """A message as the call record it would be for the binding inference."""
    cause = "none" if m.status != "refused" else (m.reason or "refused")
    return CallRecord(id=m.id, started_at=m.started_at, x=m.x, binding=m.binding,
                      caller=m.sender, callee=m.recipient, direction=m.direction,
                      unconnected_cause=cause)


def _sms_status(m: MessageRecord) -> int:
    """The submit_sm_resp status the gateway got: the record's, or the refusal table's."""
    if m.command_status is not None:
        return m.command_status
    if m.status == "refused" and m.reason in SMS_REFUSALS:
        return SMS_REFUSALS[m.reason].command_status
    return 0


def _freeze_time(b: BindingSpec, rs: list[CallRecord], t0: float, speed: float
                 ) -> BindingSpec:
    def mine(r: CallRecord) -> bool:
        if b.mode == "AXE":
            return r.ext == b.ext
        return b.mode == "AXN" or r.caller in (b.a, b.b)

    ours = [r for r in rs if mine(r)]
    first = min((r.started_at for r in ours if _cause(r) == "frozen"), default=None)
    if first is None:
        return b
    before = [r.started_at for r in ours if _cause(r) != "frozen" and r.started_at < first]
    if not before:
        return b
    return dataclasses.replace(b, freeze_at=((max(before) + first) / 2 - t0) / speed)


def _unused_ext(taken: set[str]) -> str:
    return next(e for e in (f"{n:04d}" for n in range(10001)) if e not in taken)


def _cause(r: CallRecord) -> str:
    return r.unconnected_cause or "none"


def _bridged(r: CallRecord) -> bool:
    return bool(r.callee) and _cause(r) == "none" and r.direction in ("a_to_b", "b_to_a")


def _bindings_of(x: str, rs: list[CallRecord]) -> list[BindingSpec]:
    """The bindings X needs so that its records' calls get the same answers."""
    if any(r.ext or _cause(r) == "no_extension" for r in rs):  # AXE: shared X
        out = []
        for e in sorted({r.ext for r in rs if r.ext}):
            er = [r for r in rs if r.ext == e]
            bs = [r.callee for r in er if _bridged(r) and r.callee]
            frozen = any(_cause(r) == "frozen" for r in er)
            if bs or frozen:
                out.append(BindingSpec(x, "", bs[0] if bs else _placeholders(x)[1],
                                       frozen=frozen, mode="AXE", ext=e))
        if not out:  # only wrong extensions were tried: X still serves someone else
            spare = _unused_ext({r.ext for r in rs if r.ext})
            out.append(BindingSpec(x, "", _placeholders(x)[1], mode="AXE", ext=spare))
        return out
    callers_of: dict[str, set[str]] = {}
    for r in rs:
        if _bridged(r) and r.direction == "a_to_b":
            assert r.callee is not None and r.caller is not None
            callers_of.setdefault(r.callee, set()).add(r.caller)
    no_party = [r.caller for r in rs if _cause(r) == "no_party" and r.caller]
    frozen_by = [r.caller for r in rs if _cause(r) == "frozen" and r.caller]
    if no_party or any(len(c) > 1 for c in callers_of.values()):
        # AXN: anyone reaches B; B reaches A when the binding has one.
        b = no_party[0] if no_party else max(callers_of, key=lambda k: len(callers_of[k]))
        a = next((r.callee for r in rs if _bridged(r) and r.direction == "b_to_a"
                  and r.caller == b and r.callee), "")
        return [BindingSpec(x, a or "", b, frozen=bool(frozen_by), mode="AXN")]
    pairs: list[tuple[str, str]] = []
    taken: set[str] = set()
    for r in rs:
        if _bridged(r):
            assert r.callee is not None and r.caller is not None
            a, b = (r.caller, r.callee) if r.direction == "a_to_b" else (r.callee, r.caller)
            if a not in taken and b not in taken:
                pairs.append((a, b))
                taken |= {a, b}
    frozen_pairs = set()
    for c in frozen_by:  # a frozen X still knows its caller (410 needs a party)
        pair = next((p for p in pairs if c in p), None)
        if pair is None and c not in taken:
            pair = (c, _placeholders(x)[1])
            pairs.append(pair)
            taken |= set(pair)
        if pair is not None:
            frozen_pairs.add(pair)
    if not pairs and any(_cause(r) == "stranger" for r in rs):
        pairs.append(_placeholders(x))  # seen only refused to strangers: bound to others
    return [BindingSpec(x, a, b, frozen=(a, b) in frozen_pairs) for a, b in pairs]


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
                   cancel_after=cancel_after, step="replay", source_id=r.id, ext=r.ext)


def describe(plan: Plan) -> dict[str, Any]:
    """A summary for the report: how many attempts expect which code."""
    codes: dict[str, int] = {}
    for a in plan.attempts:
        codes[str(a.expect_code)] = codes.get(str(a.expect_code), 0) + 1
    modes: dict[str, int] = {}
    for b in plan.bindings:
        modes[b.mode] = modes.get(b.mode, 0) + 1
    return {"attempts": len(plan.attempts), "bindings": len(plan.bindings),
            "modes": modes, "messages": len(plan.messages),
            "frozen": sum(1 for b in plan.bindings if b.frozen),
            "unbound": len(plan.unbound), "expected_codes": codes}
