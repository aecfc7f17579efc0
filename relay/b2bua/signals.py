"""What the legs write and read besides SIP's own grammar: the Q.850 Reason of a refusal
or release (RFC 3326), the digit of a DTMF INFO body, and how a callee's failure is
told to the caller (RFC 3261 §16.7-style mapping, without what must not cross)."""

from __future__ import annotations

__all__ = ["dtmf_digit", "map_failure", "reason_header"]


def reason_header(cause: int, text: str = "") -> tuple[str, str]:
    """RFC 3326 Reason with the Q.850 cause of a refusal or a release."""
    value = f"Q.850;cause={cause}"
    if text:
        value += f';text="{text}"'
    return ("Reason", value)


_DIGITS = frozenset("0123456789*#ABCD")
# RFC 4733 §3.2 event codes 10-15, as some dtmf-relay senders write them.
_EVENT_DIGITS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


def dtmf_digit(content_type: str, body: bytes) -> str | None:
    """The digit of a DTMF INFO body: `application/dtmf-relay` ("Signal=5" lines, the
    de-facto format of Cisco and most trunks) or `application/dtmf` (the digit alone);
    None for anything else."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if content_type == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                text = value.strip()
                break
        else:
            return None
    text = _EVENT_DIGITS.get(text, text).upper()
    return text if text in _DIGITS else None


# Callee failure -> (status for the caller, Q.850 cause). 3xx would hand the caller a
# Contact of the callee side and 401/407 a challenge meant for us: neither may cross.
_FAILURES: dict[int, tuple[int, int]] = {
    404: (404, 1), 408: (408, 102), 410: (410, 22), 480: (480, 18), 484: (484, 28),
    422: (500, 127), 486: (486, 17), 487: (487, 16), 488: (488, 65), 500: (500, 41), 502: (502, 38),
    503: (503, 34), 504: (504, 102), 600: (486, 17), 603: (603, 21), 604: (404, 1),
}


def map_failure(status: int) -> tuple[int, int]:
    """The status and cause the caller hears for a callee failure."""
    if status in _FAILURES:
        return _FAILURES[status]
    if status < 400 or status in (401, 407):
        return (480, 127)
    return (status if status < 600 else 480, 127 if status < 600 else 21)
