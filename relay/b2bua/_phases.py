"""The call controller's phases as data: ``TABLE[(phase, event)] = next_phase``.

A call moves through routing (the dialplan decides), collecting (AXE: the relay has
answered the caller and collects an extension), placing (the callee's INVITE is out),
ringing (the callee sent a provisional), connected, ending (both legs told, media being
released) and ended. Events are leg-neutral (sippy's B2B states, not SIP's): a leg's
``ring``/``connect``/``fail``/``disconnect``, the dialplan's ``bridge``/``collect``/
``refuse``, the IVR's ``extension``, and the controller's named timers. A missing entry
is an illegal transition and raises :class:`PhaseError` naming the phase and the event.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TABLE", "Phase", "PhaseError", "Timer", "allowed", "transition"]


class Phase(StrEnum):
    """Where a call stands."""

    ROUTING = "routing"
    COLLECTING = "collecting"
    PLACING = "placing"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDING = "ending"
    ENDED = "ended"


class Timer(StrEnum):
    """The controller's named timers (the transaction layer has RFC 3261's A-M)."""

    RING = "ring_timeout"  # the callee did not answer in time: CANCEL, 480
    DURATION = "max_duration"  # the call reached max_call_seconds: BYE both
    DIGITS = "digit_timeout"  # a pause ends the extension (or no digit came at all)
    PROMPT = "prompt_guard"  # a prompt's end was never reported: go on without it
    SESSION = "session_timer"  # RFC 4028: a leg's refresh is due, or its session expired


class PhaseError(Exception):
    """An event the phase table does not allow (a local error: the controller's bug)."""

    def __init__(self, phase: Phase, event: str) -> None:
        super().__init__(f"call in phase {phase.value}: illegal event {event}")
        self.phase = phase
        self.event = event


_R, _CO, _P, _RI = Phase.ROUTING, Phase.COLLECTING, Phase.PLACING, Phase.RINGING
_C, _E, _D = Phase.CONNECTED, Phase.ENDING, Phase.ENDED

TABLE: dict[tuple[Phase, str], Phase] = {
    # -- routing: the dialplan's answer -------------------------------------------------
    (_R, "bridge"): _P,  # media set up, the callee's INVITE sent
    (_R, "collect"): _CO,  # AXE without an extension: answer, prompt, collect digits
    (_R, "refuse"): _E,  # refused (perhaps after an announcement in early media)
    (_R, "disconnect"): _E,  # the caller gave up (CANCEL) or the relay ended it
    (_R, "fail"): _E,  # media could not be set up
    # -- collecting: the caller is answered, listening to prompts -------------------------
    (_CO, "extension"): _P,  # a valid extension: ringback to the caller, INVITE to B
    (_CO, "disconnect"): _E,  # hung up, or three wrong tries (no_extension)
    (_CO, "fail"): _E,
    # -- placing and ringing ------------------------------------------------------------
    (_P, "ring"): _RI,
    (_RI, "ring"): _RI,
    (_P, "connect"): _C,
    (_RI, "connect"): _C,
    (_P, "fail"): _E,
    (_RI, "fail"): _E,
    (_P, "disconnect"): _E,
    (_RI, "disconnect"): _E,
    (_P, Timer.RING): _E,
    (_RI, Timer.RING): _E,
    # -- connected ----------------------------------------------------------------------
    (_C, "disconnect"): _E,
    (_C, Timer.DURATION): _E,
    # -- ending: the media backend releases the call, then the record is written ---------
    (_E, "released"): _D,
}


def allowed(phase: Phase, event: str) -> bool:
    """Whether the table has a row for `event` in `phase`."""
    return (phase, event) in TABLE


def transition(phase: Phase, event: str) -> Phase:
    """The next phase, or PhaseError."""
    try:
        return TABLE[(phase, event)]
    except KeyError:
        raise PhaseError(phase, event) from None
