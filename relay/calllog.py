"""One log line and the metrics of every call that ends or is refused.

The line carries the call id, X, the parties masked, the outcome, the duration and the
codes (SIP status, Q.850 cause, why it ended or was refused), under the logger
`relay.calls`; with `--log-format json` the same fields come out as JSON keys.
Metrics: refusals by reason, and histograms of setup latency and call duration.
"""

from __future__ import annotations

import logging
from typing import Any

from dialplan.numbers import mask

from .metrics import Metrics

__all__ = ["CallLog"]

log = logging.getLogger("relay.calls")

_SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


def outcome(rec: dict[str, Any]) -> str:
    """answered, refused (by the relay) or unanswered (busy, no answer, cancelled)."""
    if rec.get("sip_code") == 200 or rec.get("duration_ms"):
        return "answered"
    if rec.get("unconnected_cause") not in (None, "none"):
        return "refused"
    return "unanswered"


def _setup_seconds(rec: dict[str, Any]) -> float | None:
    """Post-dial delay: the caller's INVITE to its first ringing or answer (ms stamps)."""
    leg = (rec.get("legs") or {}).get("caller") or {}
    start = leg.get("invite_at")
    firsts = [t for t in (leg.get("ring_at"), leg.get("answer_at")) if t is not None]
    if start is None or not firsts:
        return None
    return max(0.0, (min(firsts) - start) / 1000)


class CallLog:
    """Feed it every call record (`submit`): it logs and counts."""

    def __init__(self, metrics: Metrics) -> None:
        self.refused = metrics.counter(
            "relay_calls_refused_total", "call attempts the relay refused, by reason",
            ("reason", "code"))
        self.ended = metrics.counter(
            "relay_calls_ended_total", "calls that ended after routing, by outcome",
            ("outcome",))
        self.setup = metrics.histogram(
            "relay_call_setup_seconds",
            "caller's INVITE to its first ringing or answer (post-dial delay)", _SETUP_BUCKETS)
        self.duration = metrics.histogram(
            "relay_call_duration_seconds", "answered calls: answer to end", _DURATION_BUCKETS)
        self.rtp_expected = metrics.counter(
            "relay_rtp_packets_expected_total",
            "recorded calls: audio packets each side sent the relay (by RTP sequence)",
            ("leg",))
        self.rtp_lost = metrics.counter(
            "relay_rtp_packets_lost_total",
            "recorded calls: audio packets that never reached the relay (or too late)",
            ("leg",))

    def submit(self, rec: dict[str, Any]) -> None:
        """Log and count one call record (never raises: a record is never lost to this)."""
        try:
            self._submit(rec)
        except Exception:  # a malformed record must not stop the record writer's path
            log.exception("could not log call %s", rec.get("id"))

    def _submit(self, rec: dict[str, Any]) -> None:
        result = outcome(rec)
        if result == "refused":
            reason = rec.get("policy_reason") or rec.get("unconnected_cause") or "error"
            key = (str(reason), str(rec.get("sip_code")))
            self.refused[key] = self.refused.get(key, 0.0) + 1
        else:
            self.ended[(result,)] = self.ended.get((result,), 0.0) + 1
            setup = _setup_seconds(rec)
            if setup is not None:
                self.setup.observe(setup)
            if result == "answered":
                self.duration.observe(int(rec.get("duration_ms") or 0) / 1000)
            for leg, f in (rec.get("recording") or {}).items():
                if isinstance(f, dict) and f.get("packets") is not None:
                    side = (str(leg),)
                    self.rtp_expected[side] = self.rtp_expected.get(side, 0.0) + f["packets"]
                    self.rtp_lost[side] = self.rtp_lost.get(side, 0.0) + (f.get("lost") or 0)
        if log.isEnabledFor(logging.INFO):  # the load tests run at WARNING: no formatting
            _log(rec, result)


def _log(rec: dict[str, Any], result: str) -> None:
    """The call's INFO line; with --log-format json its fields are the JSON keys."""
    fields: dict[str, Any] = {
        "call_id": rec.get("id"), "x": rec.get("x"),
        "caller": mask(rec.get("caller")), "callee": mask(rec.get("callee")),
        "outcome": result, "duration_ms": int(rec.get("duration_ms") or 0),
        "sip_code": rec.get("sip_code"), "cause": rec.get("cause"),
    }
    if result == "refused":
        fields["reason"] = rec.get("policy_reason") or rec.get("unconnected_cause") or "error"
        log.info("call refused %s", _kv(fields), extra={"fields": fields})
        return
    fields["released_by"] = rec.get("released_by")
    fields["end_reason"] = rec.get("end_reason")
    setup = _setup_seconds(rec)
    if setup is not None:
        fields["setup_ms"] = round(setup * 1000)
    log.info("call ended %s", _kv(fields), extra={"fields": fields})


def _kv(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items())
