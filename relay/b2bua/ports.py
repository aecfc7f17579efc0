"""What the call controller knows of the things around it: its settings, its legs (and
their session timers), the binding table and the call map that hosts it. Protocols, so
that the controller never imports SIP (relay.b2bua.legs and .callmap implement them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dialplan.route import Policies

from ._phases import Timer
from .events import CallEvent, CCEvent, MediaJob

if TYPE_CHECKING:
    from .controller import CallController

__all__ = ["ControlSettings", "Host", "LegPort", "SessionPort", "Table"]


@dataclass
class ControlSettings:
    """Call-control tunables (see relay.io.voice for the `[sip]` keys)."""

    ring_timeout: float = 60.0
    max_call_seconds: float = 7200.0
    announce_refusals: bool = False  # unknown or frozen X hears why, in 183 early media
    announce_limit: float = 8.0  # the longest an announcement may hold the refusal back
    ivr_tries: int = 3  # AXE: extensions a caller may key before the relay hangs up
    ivr_first_digit: float = 10.0  # seconds after the prompt for the first digit
    ivr_pause: float = 3.0  # a pause this long ends the extension
    ivr_max_digits: int = 8
    ivr_record: bool = True  # record AXE calls from the prompt on (the binding is unknown)
    prompt_guard: float = 30.0  # a prompt whose end is never reported is given up
    counter_fail_open: bool = True  # a frequency counter that fails admits the call
    hook: bool = False  # ask the decision hook ([dialplan] hook_url) before routing
    hook_fallback_allow: bool = True  # a hook that fails or is late allows the call


class SessionPort(Protocol):
    """A leg's session timer (relay.sip.session_timer.SessionTimer), as the controller
    sees it: when it needs the controller, and whether the relay refreshes."""

    we_refresh: bool

    def due(self) -> float: ...
    def refresh_at(self) -> float: ...
    def expires_at(self) -> float: ...


class LegPort(Protocol):
    """What the controller knows of a leg: call-control events in, and its state."""

    role: str
    code: int | None
    late: bool

    @property
    def session(self) -> SessionPort | None: ...  # RFC 4028, once the dialog is confirmed
    @property
    def negotiating(self) -> bool: ...
    def deliver(self, ev: CCEvent, now: float) -> None: ...
    def can(self, event: str) -> bool: ...
    def refresh(self, now: float) -> None: ...


class Table(Protocol):
    """What routing needs of relay.bindings.table.BindingTable (memory only)."""

    def lookup(self, x: str, caller: str | None, ext: str | None = None) -> Any: ...
    def in_use(self, x: str) -> bool: ...
    def shared(self, x: str) -> bool: ...


class Host(Protocol):
    """What the controller asks of the call map that runs it."""

    counts: dict[str, int]
    refusals: dict[int, int]
    policies: Policies

    def place(self, call: CallController) -> LegPort | None: ...
    def failover(self, call: CallController, failed: LegPort) -> LegPort | None: ...
    def arm(self, call: CallController, timer: Timer, deadline: float) -> None: ...
    def job(self, job: MediaJob) -> None: ...
    def job_seq(self) -> int: ...
    def emit(self, event: CallEvent) -> None: ...
    def new_id(self) -> str: ...
    def ending(self, call: CallController) -> None: ...
    def finished(self, call: CallController) -> None: ...
