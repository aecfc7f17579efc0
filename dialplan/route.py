"""The routing decision for one call or message: a pure function of binding, caller, time.

The SIP and SMS paths both ask this, and `GET /v1/route` shows its answer as a dry run.
Codes follow DESIGN.md "Refusals"; causes are ITU-T Q.850 values for the Reason header.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["Bridge", "Collect", "Decision", "Refuse", "RouteView", "decide"]


class RouteView(Protocol):
    """What the decision needs of a binding (relay.bindings.table.RouteEntry has it)."""

    @property
    def id(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def a(self) -> str | None: ...
    @property
    def b(self) -> str | None: ...
    @property
    def voice(self) -> bool: ...
    @property
    def sms(self) -> bool: ...

    def effective_state(self, now: float) -> str: ...


class Bridge(NamedTuple):
    """Connect the caller to `to`, showing X as the calling number.

    Decisions are NamedTuples: immutable like the frozen dataclasses elsewhere, and
    several times cheaper to build, which matters once per call attempt.
    """

    to: str
    binding: str
    direction: str  # "a_to_b" or "b_to_a"
    action: str = "bridge"


class Refuse(NamedTuple):
    """Refuse with a SIP status, a Q.850 cause and a short reason (also the record's cause)."""

    code: int
    reason: str
    cause: int
    binding: str | None = None
    action: str = "refuse"


class Collect(NamedTuple):
    """X is shared (AXE) and no extension came with the call: answer the caller, prompt,
    and collect the extension as digits (DESIGN.md "SIP behaviour", AXE)."""

    action: str = "collect"


Decision = Bridge | Refuse | Collect

# reason -> (SIP status, Q.850 cause); one table so SIP and SMS refuse alike.
REFUSALS: dict[str, tuple[int, int]] = {
    "no_binding": (404, 1),  # unallocated (unassigned) number
    "frozen": (410, 22),  # number changed
    "expired": (410, 22),
    "stranger": (403, 21),  # call rejected
    "disabled": (403, 21),  # voice or SMS switched off on this binding
    "no_party": (480, 18),  # AXN: B called X but no A is set
    "no_extension": (404, 1),  # AXE: no live binding has the extension dialled
}


def _refuse(reason: str, binding: str | None = None) -> Refuse:
    code, cause = REFUSALS[reason]
    return Refuse(code=code, reason=reason, cause=cause, binding=binding)


def decide(entry: RouteView | None, x_in_use: bool, caller: str | None, now: float,
           service: str = "voice", *, shared: bool = False, ext: str | None = None
           ) -> Decision:
    """Where a call (or SMS, `service="sms"`) from `caller` to X goes, or why not.

    `entry` is the binding found for (X, caller[, ext]); `x_in_use` tells whether any live
    binding holds X, which separates a stranger (403) from an unknown number (404).
    `shared` says X serves AXE extensions: a call that came without `ext` collects one
    (`Collect`); an extension no live binding has is refused `no_extension`.
    """
    if entry is None:
        if shared and service == "voice":
            return Collect() if ext is None else _refuse("no_extension")
        return _refuse("stranger" if x_in_use else "no_binding")
    state = entry.effective_state(now)
    if state != "active":
        return _refuse("frozen" if entry.state == state else "expired", entry.id)
    if not (entry.sms if service == "sms" else entry.voice):
        return _refuse("disabled", entry.id)
    mode, a, b = entry.mode, entry.a, entry.b
    if mode == "AXB":
        if caller == a and b:
            return Bridge(b, entry.id, "a_to_b")
        if caller == b and a:
            return Bridge(a, entry.id, "b_to_a")
        return _refuse("stranger", entry.id)
    if mode == "AXN" and caller == b:
        if a:
            return Bridge(a, entry.id, "b_to_a")
        return _refuse("no_party", entry.id)
    if b is None:  # a binding always has B; refuse rather than route nowhere
        return _refuse("no_binding", entry.id)
    return Bridge(b, entry.id, "a_to_b")  # AXN from anyone; AXE (the ext chose the binding)
