"""Call records (kind "call") for every attempt, bridged or refused.

The record is a plain dict for `relay.records` (`id` and `started_at` required, `x`,
`binding`, `out_id` indexed). Leg times are UTC milliseconds (DESIGN.md "Media and
recordings"); ``started_at`` stays in seconds as the record store sorts on it.
"""

from __future__ import annotations

from typing import Any

from dialplan.refusals import policy_reason

__all__ = ["LEGS", "CallTimes", "build_record", "call_record"]

LEGS = ("caller", "callee")
_FIELDS = ("invite_at", "ring_at", "answer_at", "end_at")


class CallTimes:
    """Per-leg timestamps; the first stamp of a field wins (retransmissions don't move it)."""

    __slots__ = ("legs",)

    def __init__(self) -> None:
        self.legs: dict[str, dict[str, int | None]] = {
            leg: dict.fromkeys((*_FIELDS, "sip_code")) for leg in LEGS}

    def stamp(self, leg: str, name: str, now: float) -> None:
        """Set `leg.name` to `now` (seconds) as UTC ms, unless already set."""
        d = self.legs[leg]
        if d[name] is None:
            d[name] = int(now * 1000)


def _recording(result: Any) -> dict[str, Any] | None:
    """The files of a recordings.finish.RecordingResult, as JSON."""
    files = getattr(result, "files", None)
    if not files:
        return None
    out = {name: {"path": str(f.path), "size": f.size, "sha256": f.sha256,
                  "duration_ms": f.duration_ms, "record_start_at": f.record_start_at}
           for name, f in files.items()}
    for leg, (expected, lost) in (getattr(result, "rtp", None) or {}).items():
        if leg in out:  # the audio as it reached the relay from that side
            out[leg]["packets"] = expected
            out[leg]["lost"] = lost
    return out


def build_record(*, call_id: str, started_at: float, x: str | None, caller: str | None,
                 callee: str | None, binding: str | None, out_id: str | None,
                 direction: str | None, times: CallTimes, sip_code: int | None,
                 cause: int | None, released_by: str | None, unconnected: str,
                 recording: Any, end_reason: str | None = None,
                 policy_reason: str | None = None) -> dict[str, Any]:
    """One call record. `unconnected` is none, no_binding, frozen, stranger, policy,
    untrusted or error. `end_reason` says why the relay ended a call (max_duration,
    frozen, drain, media_timeout, session_expired), None when a party did or it never
    connected.
    `policy_reason` names the policy rule that refused it (quiet_hours, direction)."""
    legs = times.legs
    caller_leg = legs["caller"]
    answer = caller_leg["answer_at"]
    end = caller_leg["end_at"]
    return {
        "id": call_id,
        "started_at": started_at,
        "x": x,
        "binding": binding,
        "out_id": out_id,
        "caller": caller,
        "callee": callee,
        "direction": direction,
        "legs": {leg: dict(v) for leg, v in legs.items() if leg == "caller" or
                 v["invite_at"] is not None},
        "sip_code": sip_code,
        "cause": cause,
        "released_by": released_by,
        "end_reason": end_reason,
        "unconnected_cause": unconnected,
        "policy_reason": policy_reason,
        "duration_ms": (end - answer) if answer is not None and end is not None else 0,
        "recording": _recording(recording),
    }


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def call_record(c: Any) -> tuple[bool, dict[str, Any]]:
    """The record of a finished call controller (relay.b2bua.controller.CallController),
    and whether it is a refusal (the relay refused before routing anywhere)."""
    times = c.times
    a, b = c.a, c.b
    refusal = c.refusal
    if refusal is not None and c.ivr is None:
        times.legs["caller"]["sip_code"] = refusal.code
        return True, build_record(
            call_id=c.id, started_at=c.started_at, x=c.x, caller=c.caller,
            callee=None, binding=refusal.binding, out_id=c.out_id, direction=None,
            times=times, sip_code=refusal.code, cause=refusal.cause,
            released_by="relay", unconnected=c.unconnected or "policy",
            recording=None, policy_reason=policy_reason(refusal.reason))
    times.legs["caller"]["sip_code"] = a.code
    if b is not None:
        times.legs["callee"]["sip_code"] = b.code
    if c.unconnected is not None:
        unconnected = c.unconnected
    elif c.ivr is not None:  # no callee yet: no extension reached anybody
        unconnected = "none" if b is not None else "no_extension"
    else:
        unconnected = "none" if a.code == 200 or b else "error"
    sip_code = a.code
    if c.ivr is not None and b is not None and not c.answered:
        sip_code = b.code  # the caller was answered by the relay, not by the callee
    record = build_record(
        call_id=c.id, started_at=c.started_at, x=c.x, caller=c.caller,
        callee=c.callee, binding=c.binding, out_id=c.out_id,
        direction=c.direction, times=times, sip_code=sip_code, cause=c.cause,
        released_by=c.released_by, unconnected=unconnected,
        recording=c.recording, end_reason=c.end_reason,
        policy_reason=policy_reason(refusal.reason if refusal else None))
    if c.ivr is not None or c.ext is not None:
        record["ext"] = c.ext
    if c.ivr is not None:
        record["ivr_start_at"] = _ms(c.ivr_start_at)
        record["ivr_end_at"] = _ms(c.ivr_end_at)
    if c.prompts:
        record["prompts"] = list(c.prompts)
    trunk = getattr(b, "trunk", None) if b is not None else None
    if trunk is not None:
        record["trunk"] = trunk  # the outbound trunk that carried (or last tried) the call
    if c.failovers:
        record["failovers"] = c.failovers
    return False, record
