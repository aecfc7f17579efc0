"""The egress leak guard: the last check before a message leaves toward one party.

Privacy is the product (DESIGN.md): a real number never reaches the other party. The
legs build their messages from a whitelist, the SDP is rewritten and the SMS sender is
X; this guard does not trust any of that. Every SIP message (headers, parameters, SDP)
and every SMS about to go to one party is scanned for the real numbers of the OTHER
party, in whatever form a careless header, a UA's SDP origin or a gateway could
write them: ``+8613800138000``, ``8613800138000``, ``013800138000``, ``138 0013
8000``, ``(138) 0013-8000``, ``138.0013.8000``, ``tel:``/``sip:`` URIs and their
URL-encoded forms. A hit is blocked: the caller of :meth:`LeakGuard.scan` does not
send, counts it and reports it masked.

Sans-IO and fast (it runs on every outgoing message):
- the needles are made once per leg (or SMS route): the last ``digits`` digits of
  each other party's number (its national significant number's tail, which every
  formatting above contains once separators are gone), lengthened while it also
  occurs in a number the recipient may see (X, its own number, an AXE extension),
  so the recipient's own echo never trips the guard;
- a message is projected once to a digits-with-separators-removed form with C-speed
  ``bytes.translate`` (and URL-decoded only when it has a ``%``), then each needle is a
  ``bytes.__contains__`` (a two-way search in C).
A needle of 8 digits meets a random 8-digit run in a tag or an SDP session id about
once in 10^7 messages; such a call fails safe (refused), it never leaks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from dialplan.numbers import mask
from relay.settings import GuardSection

__all__ = ["PLANT_ENV", "GuardSettings", "LeakGuard", "check_sms", "for_node", "needles_for",
           "project", "scan", "scan_text"]

log = logging.getLogger("relay.guard")
# Visual separators people, UAs and gateways put between digits (with the '+' of E.164).
_DELETE = b" -.()/+\t"
# Test-only (documented in the README): copy the other party's number into a header of
# every SIP message toward `caller` or `callee`, so tests can prove the guard blocks it.
PLANT_ENV = "RELAY_TEST_PLANT_LEAK"


# `[guard]` is declared and checked in relay.settings (GuardSection).
GuardSettings = GuardSection


def _digits(number: str | None) -> str:
    if not number:
        return ""
    d = number[1:] if number[0] == "+" else number
    return d if d.isdigit() else "".join(filter(str.isdigit, d))


def needles_for(others: Iterable[str | None], visible: Iterable[str | None],
                digits: int = 8) -> tuple[bytes, ...]:
    """The byte strings whose presence in a message toward a party means a leak: the
    tail of each number in `others` (at least `digits` long), lengthened until it is
    not part of anything in `visible` (what the recipient may legitimately see: X,
    its own number, its extension). A number wholly inside a visible one is skipped."""
    seen = "|".join([_digits(v) for v in visible if v])  # '|': no match across two
    out: list[bytes] = []
    for other in others:
        d = _digits(other)
        size = len(d)
        n = min(max(digits, 1), size)
        while n and d[-n:] in seen:
            n = n + 1 if n < size else 0
        if n:
            needle = d[-n:].encode()
            if needle not in out:
                out.append(needle)
    return tuple(out)


def project(data: bytes) -> bytes:
    """`data` with URL escapes decoded (only when it has any) and the separators that
    can sit between a number's digits removed: every formatting of one number becomes
    one run of digits."""
    if b"%" in data:
        data = unquote_to_bytes(data)
    return data.translate(None, _DELETE)


def scan(data: bytes, needles: tuple[bytes, ...]) -> bytes | None:
    """The first needle found in `data` (after :func:`project`), or None."""
    if not needles:
        return None
    if b"%" in data:
        data = unquote_to_bytes(data)
    flat = data.translate(None, _DELETE)
    for needle in needles:
        if needle in flat:
            return needle
    return None


def scan_text(parts: list[str], body: bytes, needles: tuple[bytes, ...]) -> bytes | None:
    """:func:`scan` over a message's text parts (start line, header values) and body,
    without serialising the message first (the transport layer does that once)."""
    return scan("\n".join(parts).encode("utf-8", "surrogateescape") + b"\n" + body,
                needles)


class LeakGuard:
    """Counts and settings of one node's guard (the checks themselves are :func:`scan`)."""

    def __init__(self, settings: GuardSettings | None = None, *,
                 plant: str | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.enabled = self.settings.enabled
        self.digits = self.settings.digits
        self.checked = 0
        self.blocked: dict[str, int] = {"sip": 0, "sms": 0}
        # Test-only plant (PLANT_ENV): "caller" or "callee" (the side that would get it).
        self.plant = plant if plant is not None else os.environ.get(PLANT_ENV, "")

    def needles(self, others: Iterable[str | None],
                visible: Iterable[str | None]) -> tuple[bytes, ...]:
        """Needles for one recipient (see :func:`needles_for`); none when disabled."""
        if not self.enabled:
            return ()
        return needles_for(others, visible, self.digits)

    def check(self, data: bytes, needles: tuple[bytes, ...]) -> bytes | None:
        """Scan one outgoing message; the needle hit or None."""
        if not needles:
            return None
        self.checked += 1
        return scan(data, needles)

    def hit(self, channel: str) -> None:
        """Count one blocked message on `channel` ("sip" or "sms")."""
        self.blocked[channel] = self.blocked.get(channel, 0) + 1

    @staticmethod
    def describe(other: str | None, what: str) -> str:
        """A log line's text for a block: the other party masked, never the digits hit."""
        return f"{what} contained {mask(other) if other else 'a party number'}"


def for_node(node: Any) -> LeakGuard:
    """The node's one guard (voice and SMS share its counts), made on first use from
    `[guard]`, with its metrics."""
    guard: LeakGuard | None = getattr(node, "leak_guard", None)
    if guard is None:
        guard = LeakGuard(node.config.sections.guard)
        node.leak_guard = guard
        m = node.metrics
        for channel in ("sip", "sms"):
            m.counter_from(f"relay_leaks_blocked_{channel}_total",
                           f"{channel.upper()} messages the egress leak guard kept from a "
                           "party (they held the other party's real number)",
                           lambda c=channel: float(guard.blocked[c]))  # type: ignore[misc]
        m.counter_from("relay_leak_checks_total", "messages the egress leak guard scanned",
                       lambda: float(guard.checked))
    return guard


def check_sms(node: Any, guard: LeakGuard, msg_id: str, fwd: Any, fields: list[str],
              body: bytes) -> bool:
    """The SMS side: may a message from `fwd.sender` go to `fwd.recipient` with these
    address `fields` and `body` (text or payload)? On a leak of the sender's number:
    counted, logged masked, a `leak.blocked` event, and False (the caller refuses it)."""
    needles = guard.needles((fwd.sender,), (fwd.x, fwd.recipient))
    if not needles:
        return True
    guard.checked += 1
    if scan_text(fields, body, needles) is None:
        return True
    guard.hit("sms")
    log.warning("leak blocked: sms %s toward %s held the sender's number %s", msg_id,
                mask(fwd.recipient), mask(fwd.sender))
    hub = getattr(node, "events", None)
    if hub is not None:
        from relay.b2bua.events import LeakBlocked

        hub.on_call_event(LeakBlocked(msg_id, node.clock(), "recipient", "sms", fwd.x,
                                      fwd.binding, fwd.sender, fwd.recipient, "sms"))
    return False
