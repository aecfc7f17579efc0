"""An event as it is stored and posted: its id, type, ordering key, time and exact body.

The body is encoded once, when the event is made, and the outbox keeps those bytes:
every retry posts (and signs) the same bytes, so an event id never arrives with two
different bodies. Frozen and slotted, no logic beyond making one (STYLE.md point 5).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["TYPES", "Event", "iso_ms", "make_event"]

#: Every type DESIGN.md "Events" names.
TYPES = frozenset({
    "call.ringing", "call.answered", "call.ended", "call.refused", "recording.ready",
    "sms.forwarded", "sms.refused", "sms.delivered", "binding.frozen",
    "leak.blocked",  # the egress leak guard stopped a message (relay/guard.py)
})
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Event:
    """One event. `key` orders delivery: events of one key (a call id, a message id)
    arrive in the order they were made."""

    id: str
    type: str
    key: str
    at: float
    body: bytes


def iso_ms(when: float) -> str:
    """ISO 8601 UTC with milliseconds (`2026-12-07T17:13:59.123Z`)."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def make_event(type_: str, key: str, at: float, fields: dict[str, Any]) -> Event:
    """An event with a fresh id; `fields` follow `id`, `type` and `at` in the body."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event_id = "ev_" + secrets.token_hex(12)
    doc = {"id": event_id, "type": type_, "at": iso_ms(at), **fields}
    return Event(event_id, type_, key, at, _encode(doc).encode())
