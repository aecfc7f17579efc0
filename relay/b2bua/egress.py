"""The SIP side of the egress leak guard (relay/guard.py): one check per outgoing message.

:class:`~.callmap.Wire` asks :func:`egress_ok` before it hands any message a leg built
to the transaction layer. A message toward the caller must not hold the callee's real
number, one toward the callee not the caller's. On a hit the message is not sent and
the call fails safe: a caller whose INVITE has no final answer yet gets a clean 500
(built from its own request, nothing of ours) and hears nothing more on that leg; the
call is then hung up (CANCEL or BYE toward the callee, end_reason ``leak_blocked``),
the block is counted, logged masked and reported as a ``leak.blocked`` event.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from dialplan.numbers import mask
from relay.guard import scan_text
from relay.sip import LocalProtocolError, SipRequest, SipResponse, build_response

from ._state import LegState
from .events import LeakBlocked
from .legs import reason_header

if TYPE_CHECKING:
    from .callmap import CallMap
    from .legs import _Leg

__all__ = ["egress_ok"]

log = logging.getLogger("relay.guard")
PLANT_HEADER = "X-Leak-Test"


def egress_ok(host: CallMap, leg: _Leg, msg: SipRequest | SipResponse, now: float) -> bool:
    """Whether `msg` from `leg` may go to its peer (False: blocked, handled here)."""
    if leg.sealed:
        return False
    guard = host.settings.guard
    call = leg.control
    if call is None or not guard.enabled:
        return True  # a finished call's leftover ACK/BYE: built from its own dialog
    toward_caller = leg.role == "caller"
    other = call.callee if toward_caller else call.caller
    own = call.caller if toward_caller else call.callee
    key = (other, own)
    if leg.guard_key != key:  # once per leg (again only if the route changes)
        leg.guard_key = key
        leg.needles = guard.needles((other,), (call.x, own, call.ext))
    if guard.plant == leg.role and other:
        msg.headers.add(PLANT_HEADER, other)  # test-only (relay.guard.PLANT_ENV)
    needles = leg.needles
    if not needles:
        return True
    guard.checked += 1
    parts = [msg.uri if isinstance(msg, SipRequest) else msg.reason]
    headers = msg.headers
    parts += headers._names.values()
    for values in headers._values.values():  # every header value, in one pass
        parts += values
    if scan_text(parts, msg.body, needles) is None:
        return True
    guard.hit("sip")
    what = msg.method if isinstance(msg, SipRequest) else str(msg.status)
    log.warning("leak blocked: call %s, %s toward the %s held %s's number %s", call.id,
                what, leg.role, "callee" if toward_caller else "caller", mask(other))
    host.emit(LeakBlocked(call.id, now, leg.role, what, call.x, call.binding,
                          call.caller, call.callee))
    _refuse_caller(host, call.a, msg, now)
    host.leaked(call, now)
    return False


def _refuse_caller(host: CallMap, a: _Leg, blocked: SipRequest | SipResponse,
                   now: float) -> None:
    """A clean 500 to a caller whose INVITE has no final answer yet (RFC 3261 §21.5.1),
    even when the message stopped was its own 2xx; nothing else goes to it afterwards."""
    invite = getattr(a, "invite", None)
    if invite is None or a.sealed:
        return
    answering = (isinstance(blocked, SipResponse) and blocked.status < 300
                 and blocked.cseq.method == "INVITE" and blocked.to_tag == a.local_tag
                 and blocked.cseq.number == invite.cseq.number)
    if a.state in (LegState.TRYING, LegState.EARLY) or answering:
        a.sealed = True
        a.code = 500
        # Its transaction may be over already (timed out): then nothing may go anyway.
        with contextlib.suppress(LocalProtocolError):
            host.layer.send_response(build_response(
                invite, 500, to_tag=a.local_tag, extra_headers=[reason_header(41)]), now)
