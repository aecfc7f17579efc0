"""Collecting an AXE extension from digits: a pure layer the call controller drives.

The controller answers the caller, plays the prompt and hands every digit here (from
RFC 4733 telephone-events or a SIP INFO, it does not matter which); this object says
when the extension is complete (`#`, or the maximum length) and keeps the tries. A
pause is the controller's timer: it then calls `take` as it does on `#`.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Collector", "Outcome"]


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
