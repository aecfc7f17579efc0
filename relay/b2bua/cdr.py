"""Call records (kind "call") for every attempt, bridged or refused.

The record is a plain dict for `relay.records` (`id` and `started_at` required, `x`,
`binding`, `out_id` indexed). Leg times are UTC milliseconds (DESIGN.md "Media and
recordings"); ``started_at`` stays in seconds as the record store sorts on it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEGS", "CallTimes", "build_record"]

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
    return {name: {"path": str(f.path), "size": f.size, "sha256": f.sha256,
                   "duration_ms": f.duration_ms, "record_start_at": f.record_start_at}
            for name, f in files.items()}


def build_record(*, call_id: str, started_at: float, x: str | None, caller: str | None,
                 callee: str | None, binding: str | None, out_id: str | None,
                 direction: str | None, times: CallTimes, sip_code: int | None,
                 cause: int | None, released_by: str | None, unconnected: str,
                 recording: Any, end_reason: str | None = None,
                 policy_reason: str | None = None) -> dict[str, Any]:
    """One call record. `unconnected` is none, no_binding, frozen, stranger, policy,
    untrusted or error. `end_reason` says why the relay ended a call (max_duration,
    frozen, drain, media_timeout), None when a party did or it never connected.
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
