"""The policy's asynchronous checks before a call is routed: the caller's harassment
score (`max_score`), then the shared frequency counter (`max_calls`).

Both answers live in shared stores, so the controller asks for them as jobs on its
queue ("score", "count"), exactly as it asks the media backend: the adapter runs them
under `[dialplan] counter_timeout` and the answer continues the call. The score comes
first, so a caller refused for it is not counted. A store that fails or times out
admits or refuses as `counter_fail_open` says, and is counted (`counter_errors`).
Sans-IO like the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dialplan.policy import counter_key
from dialplan.route import Bridge, Refuse, counted, scored

from .events import MediaJob

__all__ = ["admit"]

Go = Callable[[Bridge, float], None]
Stop = Callable[[Refuse, float], None]


class GatedCall(Protocol):
    """What the checks need of relay.b2bua.controller.CallController."""

    id: str
    caller: str | None
    ended: bool
    host: Any
    settings: Any

    def _enqueue(self, make: Callable[[], MediaJob | None],
                 cont: Callable[[Any, BaseException | None, float], None]) -> None: ...


def admit(call: GatedCall, decision: Bridge, go: Go, stop: Stop, now: float) -> None:
    """Run the checks `decision` needs, then `go` on with it, or `stop` with the refusal
    (603 `score` or `frequency`). With no check to run, `go` at once."""
    if decision.max_score is None:
        _count(call, decision, go, stop, now)
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
            _count(call, d, go, stop, now)

    call._enqueue(lambda: MediaJob(call.host.job_seq(), call.id, "score",
                                   key=call.caller or ""), done)


def _count(call: GatedCall, decision: Bridge, go: Go, stop: Stop, now: float) -> None:
    if decision.limit is None:
        go(decision, now)
        return
    key = counter_key("call", decision.binding, call.caller)

    def done(admitted: Any, error: BaseException | None, now: float) -> None:
        if call.ended:
            return
        if error is not None:
            call.host.counts["counter_errors"] += 1
            admitted = call.settings.counter_fail_open
        d = counted(decision, bool(admitted))
        if isinstance(d, Refuse):
            stop(d, now)
        else:
            go(d, now)

    call._enqueue(lambda: MediaJob(call.host.job_seq(), call.id, "count", key=key,
                                   limit=decision.limit), done)
