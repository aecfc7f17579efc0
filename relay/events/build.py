"""Events from call events and message records (pure: no IO, the links' clock passed in).

What events carry (DESIGN.md "Events"): ids, X, out_id, binding, the direction,
timestamps, codes and causes. Real numbers only with `real_numbers`; otherwise they
are masked as for the `ops` role (`+86138****0001`); X is the operator's own number and
is never masked. `recording.ready` carries each file's size, SHA-256 and a signed link.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from dialplan.numbers import mask
from recordings.links import LinkSigner
from relay.b2bua.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallRefused,
    CallRinging,
    LeakBlocked,
)
from relay.bindings.model import Binding, State

from .model import Event, iso_ms, make_event
from .records import CallRecord

__all__ = ["EventBuilder", "LinkSpec"]

_CALL_TYPES: dict[type, str] = {
    CallRinging: "call.ringing", CallAnswered: "call.answered",
    CallEnded: "call.ended", CallRefused: "call.refused",
}
_CAUSES = ("sip_code", "cause", "released_by", "end_reason", "unconnected_cause",
           "policy_reason", "duration_ms")


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """How `recording.ready` signs its links: the signer, the origin and the lifetime."""

    signer: LinkSigner
    base: str
    ttl: int = 7200


class EventBuilder:
    """Turns what the relay reports into events; remembers which message statuses it
    already announced (a record is saved at every step, an event goes once)."""

    def __init__(self, *, real_numbers: bool = False, links: LinkSpec | None = None,
                 remember: int = 20_000) -> None:
        self.real_numbers = real_numbers
        self.links = links
        self._announced: OrderedDict[str, set[str]] = OrderedDict()
        self._remember = remember

    def _num(self, number: str | None) -> str | None:
        return number if self.real_numbers else mask(number)

    def call(self, ev: CallEvent) -> list[Event]:
        """The events of one call event (call.ended may add recording.ready)."""
        if isinstance(ev, LeakBlocked):
            return [self.leak(ev)]
        type_ = _CALL_TYPES[type(ev)]
        if isinstance(ev, CallRinging | CallAnswered):
            fields: dict[str, Any] = {
                "call_id": ev.call_id, "x": ev.x, "binding": ev.binding,
                "out_id": ev.out_id, "direction": ev.direction,
                "caller": self._num(ev.caller), "callee": self._num(ev.callee)}
            return [make_event(type_, ev.call_id, ev.at, fields)]
        rec = ev.record
        fields = {"call_id": ev.call_id, "x": rec.get("x"), "binding": rec.get("binding"),
                  "out_id": rec.get("out_id"), "direction": rec.get("direction"),
                  "caller": self._num(rec.get("caller")),
                  "callee": self._num(rec.get("callee"))}
        fields.update({k: rec.get(k) for k in _CAUSES if k in rec})
        if isinstance(ev, CallEnded):
            fields["record"] = CallRecord.from_doc(rec).to_json(
                real_numbers=self.real_numbers)
        out = [make_event(type_, ev.call_id, ev.at, fields)]
        if isinstance(ev, CallEnded) and rec.get("recording"):
            out.append(self._recording_ready(ev.call_id, ev.at, rec))
        return out

    def leak(self, ev: LeakBlocked) -> Event:
        """leak.blocked: which call (or message), toward whom, what was stopped."""
        fields = {"call_id": ev.call_id, "channel": ev.channel, "toward": ev.toward,
                  "what": ev.what, "x": ev.x, "binding": ev.binding,
                  "caller": self._num(ev.caller), "callee": self._num(ev.callee)}
        return make_event("leak.blocked", ev.call_id, ev.at, fields)

    def _recording_ready(self, call_id: str, at: float, rec: dict[str, Any]) -> Event:
        files: dict[str, Any] = {}
        expires = int(at) + (self.links.ttl if self.links else 0)
        for leg, f in rec["recording"].items():
            entry = {"size": f.get("size"), "sha256": f.get("sha256"),
                     "duration_ms": f.get("duration_ms")}
            if self.links is not None:
                entry["url"] = self.links.base + self.links.signer.path(call_id, leg, expires)
            files[leg] = entry
        fields = {"call_id": call_id, "x": rec.get("x"), "binding": rec.get("binding"),
                  "out_id": rec.get("out_id"), "files": files,
                  "links_expire_at": iso_ms(expires) if self.links else None}
        return make_event("recording.ready", call_id, at, fields)

    def binding(self, old: Binding, new: Binding, now: float) -> list[Event]:
        """binding.frozen when a change freezes a binding (by the API, the CLI or
        expiry); nothing for any other change."""
        if new.state is not State.FROZEN or old.state is State.FROZEN:
            return []
        fields = {"binding": new.id, "x": new.x, "mode": new.mode.value, "ext": new.ext,
                  "out_id": new.out_id, "a": self._num(new.a), "b": self._num(new.b),
                  "reason": new.reason, "frozen_at": _iso(new.frozen_at),
                  "expires_at": _iso(new.expires_at)}
        return [make_event("binding.frozen", new.id, now, fields)]

    def message(self, rec: dict[str, Any], now: float) -> list[Event]:
        """Events for a message record's new status: sms.forwarded (once), sms.delivered
        (once, after forwarded), sms.refused."""
        status = rec.get("status")
        wanted: list[str] = []
        if status == "refused":
            wanted = ["sms.refused"]
        elif status == "forwarded":
            wanted = ["sms.forwarded"]
        elif status == "delivered":
            wanted = ["sms.forwarded", "sms.delivered"]
        msg_id = str(rec["id"])
        seen = self._announced.get(msg_id)
        todo = [t for t in wanted if seen is None or t not in seen]
        if not todo:
            return []
        if seen is None:
            seen = self._announced[msg_id] = set()
            while len(self._announced) > self._remember:
                self._announced.popitem(last=False)
        seen.update(todo)
        fields = {"message_id": msg_id, "x": rec.get("x"), "binding": rec.get("binding"),
                  "direction": rec.get("direction"), "sender": self._num(rec.get("sender")),
                  "recipient": self._num(rec.get("recipient")), "status": status,
                  "reason": rec.get("reason"), "command_status": rec.get("command_status"),
                  "parts": rec.get("parts"),
                  "received_at": _iso(rec.get("received_at")),
                  "forwarded_at": _iso(rec.get("forwarded_at")),
                  "delivered_at": _iso(rec.get("delivered_at"))}
        return [make_event(t, msg_id, now, fields) for t in todo]


def _iso(when: float | None) -> str | None:
    return None if when is None else iso_ms(when)
