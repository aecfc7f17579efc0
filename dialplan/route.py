"""The routing decision for one call or message: a pure function of binding, policy,
caller and time.

The SIP and SMS paths both ask this, and `GET /v1/route` shows its answer as a dry run.
Codes come from the one refusal table (`dialplan.refusals`, DESIGN.md "Refusals");
causes are ITU-T Q.850 values for the Reason header.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from .policy import Limit, Policy, quiet_until, retry_after
from .refusals import REFUSALS

__all__ = ["Bridge", "Collect", "Decision", "Policies", "Refuse", "RouteView", "apply_policy",
           "counted", "decide", "hooked", "scored"]


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


class Policies(Protocol):
    """What routing needs of the node's policies and blocklist, held in memory
    (relay.policies.PolicyBook has it)."""

    def for_binding(self, name: str | None) -> Policy | None: ...
    def blocked(self, caller: str | None, x: str, now: float) -> bool: ...
    # The node's memory of the shared counters and scores (relay.counters, .contacts):
    # admit one attempt under `limit` now, or not; a caller's score if known (else None).
    def admit(self, key: str, now: float, limit: Limit) -> bool: ...
    def score_now(self, caller: str, now: float) -> int | None: ...


class Bridge(NamedTuple):
    """Connect the caller to `to`, showing X as the calling number.

    Decisions are NamedTuples: immutable like the frozen dataclasses elsewhere, and
    several times cheaper to build, which matters once per call attempt.
    """

    to: str
    binding: str
    direction: str  # "a_to_b" or "b_to_a"
    action: str = "bridge"
    ring_timeout: int | None = None  # the policy's, when it sets one
    max_call_seconds: int | None = None
    # max_calls (or max_sms): the relay counts this attempt in the shared counter of
    # (binding, caller) first, and refuses `frequency` when the window is full.
    limit: Limit | None = None
    # max_score: the relay scores the caller (dialplan.score) first, and refuses
    # `score` above it.
    max_score: int | None = None


class Refuse(NamedTuple):
    """Refuse with a SIP status, a Q.850 cause and a short reason (also the record's cause)."""

    code: int
    reason: str
    cause: int
    binding: str | None = None
    action: str = "refuse"
    retry_after: int | None = None  # quiet hours: seconds until the window ends


class Collect(NamedTuple):
    """X is shared (AXE) and no extension came with the call: answer the caller, prompt,
    and collect the extension as digits (DESIGN.md "SIP behaviour", AXE)."""

    action: str = "collect"


Decision = Bridge | Refuse | Collect


def _refuse(reason: str, binding: str | None = None, retry: int | None = None) -> Refuse:
    r = REFUSALS[reason]
    return Refuse(code=r.sip, reason=reason, cause=r.cause, binding=binding, retry_after=retry)


def decide(entry: RouteView | None, x_in_use: bool, caller: str | None, now: float,
           service: str = "voice", *, shared: bool = False, ext: str | None = None,
           policy: Policy | None = None, blocked: bool = False) -> Decision:
    """Where a call (or SMS, `service="sms"`) from `caller` to X goes, or why not.

    `entry` is the binding found for (X, caller[, ext]); `x_in_use` tells whether any live
    binding holds X, which separates a stranger (403) from an unknown number (404).
    `shared` says X serves AXE extensions: a call that came without `ext` collects one
    (`Collect`); an extension no live binding has is refused `no_extension`.
    `policy` is the binding's named policy (or the default one), applied once the
    binding has said where the call goes (`apply_policy`). `blocked` says the
    blocklist holds the caller for X (`dialplan.blocklist.Blocklist.match`): 603, but
    only where the call would otherwise route, so a blocked caller learns no more
    about X than anyone else.
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
            bridge = Bridge(b, entry.id, "a_to_b")
        elif caller == b and a:
            bridge = Bridge(a, entry.id, "b_to_a")
        else:
            return _refuse("stranger", entry.id)
    elif mode == "AXN" and caller == b:
        if not a:
            return _refuse("no_party", entry.id)
        bridge = Bridge(a, entry.id, "b_to_a")
    elif b is None:  # a binding always has B; refuse rather than route nowhere
        return _refuse("no_binding", entry.id)
    else:  # AXN from anyone; AXE (the extension chose the binding)
        bridge = Bridge(b, entry.id, "a_to_b")
    if blocked:
        return _refuse("blocked", entry.id)
    return bridge if policy is None else apply_policy(policy, bridge, now, service)


def apply_policy(policy: Policy, bridge: Bridge, now: float, service: str = "voice"
                 ) -> Bridge | Refuse:
    """The policy's word on a call or text the binding would route (DESIGN "Policies").

    Direction first (a one-way binding refuses the other way, 403), then quiet hours:
    only towards B (`a_to_b`), so B calling back is never stopped; 480 with Retry-After
    to the window's end. A routed call carries the policy's ring and duration limits,
    and the frequency limit its counter must pass (`max_calls`, or `max_sms` when
    `service="sms"`; see `counted`).
    """
    if policy.directions is not None and bridge.direction not in policy.directions:
        return _refuse("direction", bridge.binding)
    q = policy.quiet_hours
    if q is not None and bridge.direction == "a_to_b":
        until = quiet_until(q, now)
        if until is not None:
            return _refuse("quiet_hours", bridge.binding, retry_after(until, now))
    limit = policy.max_sms if service == "sms" else policy.max_calls
    if (policy.ring_timeout is None and policy.max_call_seconds is None and limit is None
            and policy.max_score is None):
        return bridge
    return bridge._replace(ring_timeout=policy.ring_timeout,
                           max_call_seconds=policy.max_call_seconds, limit=limit,
                           max_score=policy.max_score)


def hooked(bridge: Bridge, allow: bool) -> Bridge | Refuse:
    """The decision once the platform's decision hook answered (or its fallback)."""
    return bridge if allow else _refuse("hook", bridge.binding)


def scored(bridge: Bridge, score: int) -> Bridge | Refuse:
    """The decision once the relay has scored the caller: above the policy's
    `max_score`, 603 `score`."""
    if bridge.max_score is None or score <= bridge.max_score:
        return bridge
    return _refuse("score", bridge.binding)


def counted(bridge: Bridge, admitted: bool) -> Bridge | Refuse:
    """The decision once the relay has counted the attempt in the shared counter of
    (binding, caller): admitted, or the window was full (603 `frequency`)."""
    if admitted or bridge.limit is None:
        return bridge
    return _refuse("frequency", bridge.binding)
