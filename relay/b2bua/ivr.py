"""Collecting an AXE extension from digits: a layer on call control, pure.

Once the controller has answered the caller, :class:`ExtensionPrompt` runs the dialogue:
the prompt, barge-in on the first digit, `#` or a pause to end the extension, "not
found" and another try, and after the last try the hang-up. It knows the call only
through :class:`VoicePort` (play a prompt, stop it, a digit timer, route an extension,
give up), which the call controller implements; digits come from RFC 4733
telephone-events or SIP INFO alike. :class:`Collector` keeps one try's digits.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Protocol

__all__ = ["Collector", "ExtensionPrompt", "Outcome", "VoicePort"]


class Outcome(Enum):
    """What a digit did to the extension being keyed."""

    CONTINUE = "continue"  # keep collecting (the pause timer restarts)
    COMPLETE = "complete"  # `#` or the longest extension: route it now


class Collector:
    """The digits of one try, and how many tries are left (DESIGN.md: 3 in all)."""

    __slots__ = ("_digits", "max_digits", "tries", "used")

    def __init__(self, tries: int = 3, max_digits: int = 8) -> None:
        self.tries = tries
        self.max_digits = max_digits
        self.used = 0
        self._digits: list[str] = []

    @property
    def digits(self) -> str:
        """What the caller keyed so far in this try."""
        return "".join(self._digits)

    def restart(self) -> None:
        """A new try begins (after the prompt): forget the digits of the last one."""
        self._digits.clear()

    def digit(self, d: str) -> Outcome:
        """One digit. `#` ends the extension; `*` starts it again (the caller slipped);
        A-D carry nothing an extension can hold and are ignored."""
        if d == "#":
            return Outcome.COMPLETE
        if d == "*":
            self._digits.clear()
        elif d.isdigit():
            self._digits.append(d)
            if len(self._digits) >= self.max_digits:
                return Outcome.COMPLETE
        return Outcome.CONTINUE

    def take(self) -> str | None:
        """End this try: the extension keyed (None when nothing was), counting the try."""
        self.used += 1
        ext, self._digits = self.digits, []
        return ext or None

    def failed(self) -> bool:
        """Every try is used up."""
        return self.used >= self.tries


class VoicePort(Protocol):
    """What the IVR layer asks of the call below it (the call controller)."""

    @property
    def playing(self) -> bool: ...
    def play(self, prompt: str, now: float, *,
             then: Callable[[float], None] | None = None) -> None: ...
    def stop_play(self, now: float) -> None: ...
    def arm_digits(self, deadline: float) -> None: ...
    def disarm_digits(self) -> None: ...
    def route_extension(self, ext: str | None, now: float) -> bool: ...
    def give_up(self, keyed: bool, now: float) -> None: ...


class ExtensionPrompt:
    """Prompt, collect, route or retry (DESIGN.md: three tries, then the relay hangs up)."""

    def __init__(self, call: VoicePort, collector: Collector, *, first_digit: float,
                 pause: float) -> None:
        self.call = call
        self.collector = collector
        self.first_digit = first_digit  # the wait for a first digit after the prompt
        self.pause = pause  # a pause this long ends the extension
        self.done = False  # routed, or given up

    def start(self, now: float) -> None:
        """A try begins: forget its digits and ask for the extension."""
        self.collector.restart()
        self.call.play("enter_extension", now, then=self._listen)

    def _listen(self, now: float) -> None:
        if not self.done and not self.collector.digits:
            self.call.arm_digits(now + self.first_digit)

    def digit(self, d: str, now: float) -> None:
        """A digit from the caller (RFC 4733 or INFO)."""
        if self.done:
            return
        if self.call.playing and not self.collector.digits:
            self.call.stop_play(now)  # barge-in: the first digit cuts the prompt short
        if self.collector.digit(d) is Outcome.COMPLETE:
            self._end_try(now)
        else:
            self.call.arm_digits(now + self.pause)

    def timeout(self, now: float) -> None:
        """The digit timer fired: a pause ended the extension (or none came)."""
        if not self.done:
            self._end_try(now)

    def _end_try(self, now: float) -> None:
        call = self.call
        call.disarm_digits()
        ext = self.collector.take()
        if ext is not None and call.route_extension(ext, now):
            self.done = True
            return
        if self.collector.failed():
            self.done = True
            call.play("not_found", now, then=lambda now: call.give_up(ext is not None, now))
        else:
            call.play("not_found", now, then=self.start)
