"""Typed call and message records: `CallRecord`, `LegTimes`, `RecordingFile`,
`MessageRecord`, frozen and slotted, that round-trip to JSON.

Two forms, one type. The *stored* form (`from_doc`) is what the record writer keeps
(`relay.b2bua.cdr.build_record`, `relay.sms.router.message_record`): UNIX seconds for
`started_at` (the store sorts on it), UTC milliseconds for leg and IVR times. The
*JSON* form (`to_json`, `from_json`) is the contract of every API answer, of `relay
calls --json` and of events: every time ISO 8601 UTC with milliseconds
(`2026-12-07T17:13:59.123Z`), durations in `*_ms` integers. In memory every time is
UNIX seconds (a float, millisecond precision), so `from_json(r.to_json()) == r`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dialplan.numbers import mask

__all__ = [
    "CallRecord", "LegTimes", "MessageRecord", "RecordingFile", "from_iso", "to_iso",
]


def to_iso(when: float | None) -> str | None:
    """UNIX seconds -> `YYYY-MM-DDTHH:MM:SS.mmmZ` (None stays None)."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def from_iso(text: str | None) -> float | None:
    """`to_iso`'s inverse, to the millisecond (None stays None)."""
    if text is None:
        return None
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(), 3)


def _ms(value: int | None) -> float | None:
    return None if value is None else value / 1000


def _int_ms(when: float | None) -> int | None:
    return None if when is None else round(when * 1000)


def _sec(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


@dataclass(frozen=True, slots=True)
class LegTimes:
    """One leg's moments (UNIX seconds) and its final SIP status."""

    invite_at: float | None = None
    ring_at: float | None = None
    answer_at: float | None = None
    end_at: float | None = None
    sip_code: int | None = None

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> LegTimes:
        return cls(_ms(d.get("invite_at")), _ms(d.get("ring_at")), _ms(d.get("answer_at")),
                   _ms(d.get("end_at")), d.get("sip_code"))

    def to_json(self) -> dict[str, Any]:
        return {"invite_at": to_iso(self.invite_at), "ring_at": to_iso(self.ring_at),
                "answer_at": to_iso(self.answer_at), "end_at": to_iso(self.end_at),
                "sip_code": self.sip_code}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LegTimes:
        return cls(from_iso(d.get("invite_at")), from_iso(d.get("ring_at")),
                   from_iso(d.get("answer_at")), from_iso(d.get("end_at")), d.get("sip_code"))


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """One finished WAV of a call: where, how big, its SHA-256, its length and when its
    first sample was (UNIX seconds)."""

    path: str
    size: int
    sha256: str
    duration_ms: int
    record_start_at: float | None = None
    # caller and callee files: RTP packets the sequence numbers say were sent, and lost
    packets: int | None = None
    lost: int | None = None

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> RecordingFile:
        return cls(str(d.get("path")), int(d.get("size") or 0), str(d.get("sha256")),
                   int(d.get("duration_ms") or 0), _ms(d.get("record_start_at")),
                   d.get("packets"), d.get("lost"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256,
                               "duration_ms": self.duration_ms,
                               "record_start_at": to_iso(self.record_start_at)}
        if self.packets is not None:
            out.update(packets=self.packets, lost=self.lost)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RecordingFile:
        return cls(d["path"], d["size"], d["sha256"], d["duration_ms"],
                   from_iso(d.get("record_start_at")), d.get("packets"), d.get("lost"))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Every attempt, bridged or refused (DESIGN.md "Media and recordings")."""

    id: str
    started_at: float
    x: str | None = None
    binding: str | None = None
    out_id: str | None = None
    caller: str | None = None
    callee: str | None = None
    direction: str | None = None
    legs: dict[str, LegTimes] = field(default_factory=dict)
    sip_code: int | None = None
    cause: int | None = None
    released_by: str | None = None
    end_reason: str | None = None
    unconnected_cause: str | None = None
    policy_reason: str | None = None
    duration_ms: int = 0
    recording: dict[str, RecordingFile] | None = None
    ext: str | None = None
    ivr_start_at: float | None = None
    ivr_end_at: float | None = None
    prompts: tuple[str, ...] = ()
    trunk: str | None = None  # the outbound trunk that carried (or last tried) the call
    failovers: int = 0  # trunks tried before it (408/503/no answer from the trunk)
    node: str | None = None  # the node (or worker) that handled it

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> CallRecord:
        """From the stored form (seconds and milliseconds)."""
        rec = d.get("recording")
        return cls(
            id=d["id"], started_at=round(float(d["started_at"]), 3), x=d.get("x"),
            binding=d.get("binding"), out_id=d.get("out_id"), caller=d.get("caller"),
            callee=d.get("callee"), direction=d.get("direction"),
            legs={k: LegTimes.from_doc(v) for k, v in (d.get("legs") or {}).items()},
            sip_code=d.get("sip_code"), cause=d.get("cause"),
            released_by=d.get("released_by"), end_reason=d.get("end_reason"),
            unconnected_cause=d.get("unconnected_cause"),
            policy_reason=d.get("policy_reason"), duration_ms=int(d.get("duration_ms") or 0),
            recording={k: RecordingFile.from_doc(v) for k, v in rec.items()} if rec else None,
            ext=d.get("ext"), ivr_start_at=_ms(d.get("ivr_start_at")),
            ivr_end_at=_ms(d.get("ivr_end_at")), prompts=tuple(d.get("prompts") or ()),
            trunk=d.get("trunk"), failovers=int(d.get("failovers") or 0),
            node=d.get("node"))

    def to_json(self, *, real_numbers: bool = True) -> dict[str, Any]:
        """The contract form; `real_numbers=False` masks caller and callee (X never)."""
        num = (lambda n: n) if real_numbers else mask
        out: dict[str, Any] = {
            "id": self.id, "started_at": to_iso(self.started_at), "x": self.x,
            "binding": self.binding, "out_id": self.out_id, "caller": num(self.caller),
            "callee": num(self.callee), "direction": self.direction,
            "legs": {k: v.to_json() for k, v in self.legs.items()},
            "sip_code": self.sip_code, "cause": self.cause, "released_by": self.released_by,
            "end_reason": self.end_reason, "unconnected_cause": self.unconnected_cause,
            "policy_reason": self.policy_reason, "duration_ms": self.duration_ms,
            "recording": ({k: v.to_json() for k, v in self.recording.items()}
                          if self.recording else None),
        }
        if self.ext is not None or self.ivr_start_at is not None:
            out.update(ext=self.ext, ivr_start_at=to_iso(self.ivr_start_at),
                       ivr_end_at=to_iso(self.ivr_end_at))
        if self.prompts:
            out["prompts"] = list(self.prompts)
        if self.trunk is not None:
            out["trunk"] = self.trunk
        if self.failovers:
            out["failovers"] = self.failovers
        if self.node is not None:
            out["node"] = self.node
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CallRecord:
        """From the contract form (what `to_json` gives)."""
        rec = d.get("recording")
        return cls(
            id=d["id"], started_at=from_iso(d["started_at"]) or 0.0, x=d.get("x"),
            binding=d.get("binding"), out_id=d.get("out_id"), caller=d.get("caller"),
            callee=d.get("callee"), direction=d.get("direction"),
            legs={k: LegTimes.from_json(v) for k, v in (d.get("legs") or {}).items()},
            sip_code=d.get("sip_code"), cause=d.get("cause"),
            released_by=d.get("released_by"), end_reason=d.get("end_reason"),
            unconnected_cause=d.get("unconnected_cause"),
            policy_reason=d.get("policy_reason"), duration_ms=d.get("duration_ms") or 0,
            recording={k: RecordingFile.from_json(v) for k, v in rec.items()} if rec else None,
            ext=d.get("ext"), ivr_start_at=from_iso(d.get("ivr_start_at")),
            ivr_end_at=from_iso(d.get("ivr_end_at")), prompts=tuple(d.get("prompts") or ()),
            trunk=d.get("trunk"), failovers=int(d.get("failovers") or 0),
            node=d.get("node"))


_MSG_TIMES = ("received_at", "forwarded_at", "delivered_at")


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """Every message attempt, forwarded or refused (relay/sms/SMPP.md)."""

    id: str
    started_at: float
    x: str | None = None
    sender: str | None = None
    recipient: str | None = None
    binding: str | None = None
    direction: str | None = None
    origin: str | None = None
    route: str | None = None
    status: str | None = None
    reason: str | None = None
    policy_reason: str | None = None
    command_status: int | None = None
    parts: int | None = None
    data_coding: int | None = None
    received_at: float | None = None
    forwarded_at: float | None = None
    delivered_at: float | None = None
    text_sha256: str | None = None
    text: str | None = None

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> MessageRecord:
        """From the stored form (UNIX seconds)."""
        return cls(
            id=d["id"], started_at=round(float(d["started_at"]), 3), x=d.get("x"),
            sender=d.get("sender"), recipient=d.get("recipient"), binding=d.get("binding"),
            direction=d.get("direction"), origin=d.get("origin"), route=d.get("route"),
            status=d.get("status"), reason=d.get("reason"),
            policy_reason=d.get("policy_reason"),
            command_status=d.get("command_status"), parts=d.get("parts"),
            data_coding=d.get("data_coding"), received_at=_sec(d.get("received_at")),
            forwarded_at=_sec(d.get("forwarded_at")), delivered_at=_sec(d.get("delivered_at")),
            text_sha256=d.get("text_sha256"), text=d.get("text"))

    def to_json(self, *, real_numbers: bool = True) -> dict[str, Any]:
        """The contract form; `real_numbers=False` masks sender and recipient."""
        num = (lambda n: n) if real_numbers else mask
        out: dict[str, Any] = {
            "id": self.id, "started_at": to_iso(self.started_at), "binding": self.binding,
            "x": self.x, "sender": num(self.sender), "recipient": num(self.recipient),
            "direction": self.direction, "origin": self.origin, "route": self.route,
            "status": self.status, "reason": self.reason,
            "policy_reason": self.policy_reason, "command_status": self.command_status,
            **{k: to_iso(getattr(self, k)) for k in _MSG_TIMES},
            "parts": self.parts, "data_coding": self.data_coding,
            "text_sha256": self.text_sha256,
        }
        if self.text is not None:
            out["text"] = self.text
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MessageRecord:
        """From the contract form (what `to_json` gives)."""
        return cls(
            id=d["id"], started_at=from_iso(d["started_at"]) or 0.0, x=d.get("x"),
            sender=d.get("sender"), recipient=d.get("recipient"), binding=d.get("binding"),
            direction=d.get("direction"), origin=d.get("origin"), route=d.get("route"),
            status=d.get("status"), reason=d.get("reason"),
            policy_reason=d.get("policy_reason"),
            command_status=d.get("command_status"), parts=d.get("parts"),
            data_coding=d.get("data_coding"), received_at=from_iso(d.get("received_at")),
            forwarded_at=from_iso(d.get("forwarded_at")),
            delivered_at=from_iso(d.get("delivered_at")), text_sha256=d.get("text_sha256"),
            text=d.get("text"))
