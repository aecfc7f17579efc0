"""The checks before a call is routed: the caller's harassment score (`max_score`),
the platform's decision hook (`[dialplan] hook_url`), then the shared frequency counter
(`max_calls`).

The counter and the score are answered from the node's memory (`host.policies.admit`,
`.score_now`: relay.counters.FrequencyView and relay.contacts.Scores keep them, synced
with the store beside the call path), so they are decided at once, never waited for.
Only a caller whose score this node has never read, and the hook, are asked for as
jobs on the controller's queue ("score", "hook"), as it asks the media backend: the
adapter runs them under their deadlines and the answer continues the call. The counter
comes last, so only attempts that are routed are counted. A score read that fails or
times out admits or refuses as `counter_fail_open` says (counted in `counter_errors`);
a hook that does as `hook_fallback_allow` says (`hook_errors`). Sans-IO like the
controller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dialplan.policy import counter_key
from dialplan.route import Bridge, Refuse, counted, hooked, scored

from .events import MediaJob

__all__ = ["admit"]

Go = Callable[[Bridge, float], None]
Stop = Callable[[Refuse, float], None]


class GatedCall(Protocol):
    """What the checks need of relay.b2bua.controller.CallController."""

    id: str
    caller: str | None
    x: str
    ext: str | None
    out_id: str | None
    ended: bool
    host: Any
    settings: Any

    def _enqueue(self, make: Callable[[], MediaJob | None],
                 cont: Callable[[Any, BaseException | None, float], None]) -> None: ...


def admit(call: GatedCall, decision: Bridge, go: Go, stop: Stop, now: float) -> None:
    """Run the checks `decision` needs, then `go` on with it, or `stop` with the refusal
    (603 `score`, `hook` or `frequency`). With no check to run, `go` at once."""
    if decision.max_score is None:
        _hook(call, decision, go, stop, now)
        return
    known = call.host.policies.score_now(call.caller or "", now) if call.caller else 0
    if known is not None:
        d = scored(decision, known)
        if isinstance(d, Refuse):
            stop(d, now)
        else:
            _hook(call, d, go, stop, now)
        return

    def done(score: Any, error: BaseException | None, now: float) -> None:
        if call.ended:
            return
        if error is not None:
            call.host.counts["counter_errors"] += 1
            score = 0 if call.settings.counter_fail_open else 101
        d = scored(decision, int(score))
        if isinstance(d, Refuse):
            stop(d, now)
        else:
            _hook(call, d, go, stop, now)

    call._enqueue(lambda: MediaJob(call.host.job_seq(), call.id, "score",
                                   key=call.caller or ""), done)


def _hook(call: GatedCall, decision: Bridge, go: Go, stop: Stop, now: float) -> None:
    if not call.settings.hook:
        _count(call, decision, go, stop, now)
        return
    # The caller and the binding, never the other party's number.
    info = {"call_id": call.id, "x": call.x, "caller": call.caller,
            "binding": decision.binding, "out_id": call.out_id,
            "direction": decision.direction, "ext": call.ext}

    def done(allow: Any, error: BaseException | None, now: float) -> None:
        if call.ended:
            return
        if error is not None:
            call.host.counts["hook_errors"] += 1
            allow = call.settings.hook_fallback_allow
        d = hooked(decision, bool(allow))
        if isinstance(d, Refuse):
            stop(d, now)
        else:
            _count(call, d, go, stop, now)

    call._enqueue(lambda: MediaJob(call.host.job_seq(), call.id, "hook", info=info), done)


def _count(call: GatedCall, decision: Bridge, go: Go, stop: Stop, now: float) -> None:
    if decision.limit is None:
        go(decision, now)
        return
    admitted = call.host.policies.admit(counter_key("call", decision.binding, call.caller),
                                        now, decision.limit)
    d = counted(decision, admitted)
    if isinstance(d, Refuse):
        stop(d, now)
    else:
        go(d, now)
