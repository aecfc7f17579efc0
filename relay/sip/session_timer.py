"""Session timers (RFC 4028): how long a dialog lives without a refresh, and who refreshes.

Sans-IO: headers in, a :class:`SessionTimer` out; the call controller arms one timer per
call from :meth:`SessionTimer.due` and asks each leg what is due when it fires. A
B2BUA keeps a timer per leg: each leg is its own dialog with its own peer, and a peer
that vanishes (no refresh, no BYE) must not hold the call and its recording open for
hours. Refreshes the relay sends are UPDATE without a body where the peer allows
UPDATE, else a re-INVITE repeating the last SDP it sent (RFC 4028 §7.4, §9).
"""

from __future__ import annotations

from dataclasses import dataclass

from .message import SipRequest, SipResponse

__all__ = ["MIN_SE_FLOOR", "TIMER_TAG", "SessionTimer", "parse_session_expires",
           "retry_interval", "uac_negotiate", "uac_offer", "uas_negotiate"]

#: The option tag (RFC 4028 §3).
TIMER_TAG = "timer"
#: The smallest Min-SE anyone may ask for (RFC 4028 §4: 90 seconds).
MIN_SE_FLOOR = 90


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """`Session-Expires: 1800;refresher=uac` -> (1800, "uac"); None if absent or broken."""
    if not value:
        return None
    head, *params = value.split(";")
    try:
        seconds = int(head.strip())
    except ValueError:
        return None
    if seconds <= 0:
        return None
    refresher = None
    for p in params:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
            refresher = v.strip().lower()
    return seconds, refresher


def _min_se(value: str | None) -> int:
    try:
        return max(MIN_SE_FLOOR, int((value or "").split(";")[0].strip()))
    except ValueError:
        return MIN_SE_FLOOR


def _supports(msg: SipRequest | SipResponse) -> bool:
    tags = msg.headers.get_list("supported") + msg.headers.get_list("require")
    return any(t.strip().lower() == TIMER_TAG for t in tags)


def _allows_update(msg: SipRequest | SipResponse) -> bool:
    return any(m.strip().upper() == "UPDATE" for m in msg.headers.get_list("allow"))


@dataclass(slots=True)
class SessionTimer:
    """One leg's session: its interval, whether the relay refreshes, the last refresh.

    RFC 4028 names the refresher "uac" or "uas" relative to each transaction; this
    keeps "us or the peer" and writes the parameter per transaction (:meth:`header`).
    """

    interval: int
    we_refresh: bool
    peer_supports: bool  # the peer named `timer` (our 2xx then carries Require: timer)
    use_update: bool  # refresh with UPDATE (the peer allows it), else re-INVITE
    refreshed_at: float = 0.0
    refreshing: bool = False  # our refresh is out, not answered yet

    def touch(self, now: float) -> None:
        """A refresh succeeded (a 2xx to a re-INVITE or UPDATE either way, §10)."""
        self.refreshed_at = now
        self.refreshing = False

    def refresh_at(self) -> float:
        """When the relay refreshes: half the interval after the last refresh (§7.4)."""
        return self.refreshed_at + self.interval / 2

    def expires_at(self) -> float:
        """When the session expires without a refresh. The side that does not refresh
        ends it a little early: min(32, interval/3) before the end (§10)."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)

    def due(self) -> float:
        """The next moment this leg needs the controller."""
        if self.we_refresh and not self.refreshing:
            return self.refresh_at()
        return self.expires_at()

    def header(self, we_are_uac: bool) -> tuple[str, str]:
        """Session-Expires for a message of a transaction where the relay is the UAC
        (a refresh it sends) or the UAS (its 2xx to the peer's INVITE or refresh)."""
        uac_refreshes = self.we_refresh == we_are_uac
        return ("Session-Expires", f"{self.interval};refresher={'uac' if uac_refreshes else 'uas'}")


def uas_negotiate(invite: SipRequest, interval: int, min_se: int, now: float
                  ) -> tuple[SessionTimer | None, int | None]:
    """The caller leg's session, from its INVITE (RFC 4028 §9).

    Returns (timer, None), or (None, min_se) when the INVITE asks for less than our
    Min-SE (answer 422 with that Min-SE), or (None, None) when timers are off
    (``interval`` 0) and the caller asked for none.
    """
    asked = parse_session_expires(invite.headers.get("session-expires"))
    supports = _supports(invite)
    if asked is not None and asked[0] < min_se:
        return None, min_se
    if asked is None and not interval:
        return None, None
    seconds = asked[0] if asked is not None else interval
    if interval:
        seconds = min(seconds, max(interval, _min_se(invite.headers.get("min-se"))))
    refresher = asked[1] if asked is not None else None
    if refresher is None:
        refresher = "uac" if supports else "uas"
    # §9: a caller that does not support timers cannot be the refresher: the relay is.
    we_refresh = refresher == "uas" or not supports
    return SessionTimer(seconds, we_refresh, supports, _allows_update(invite),
                        refreshed_at=now), None


def uac_offer(interval: int, min_se: int) -> list[tuple[str, str]]:
    """Headers of the relay's INVITE toward the callee (RFC 4028 §7.1)."""
    if not interval:
        return []
    return [("Session-Expires", str(interval)), ("Min-SE", str(min_se))]


def uac_negotiate(response: SipResponse, now: float) -> SessionTimer | None:
    """The callee leg's session from its 2xx (§7.2): none if the 2xx names none."""
    got = parse_session_expires(response.headers.get("session-expires"))
    if got is None:
        return None
    seconds, refresher = got
    return SessionTimer(seconds, (refresher or "uac") == "uac", _supports(response),
                        _allows_update(response), refreshed_at=now)


def retry_interval(response: SipResponse, interval: int) -> int | None:
    """After a 422 (§7.3): the interval to ask for next, or None if none would do."""
    wanted = _min_se(response.headers.get("min-se"))
    return wanted if wanted > interval else None
