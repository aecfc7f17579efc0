"""The egress leak guard (relay/guard.py): needles, formats, and fail-safe on the SIP path."""

from __future__ import annotations

import time

import pytest

from loadtest.switch_bench import CALLEE, CALLER, INVITE, SDP, Driver, _header
from relay.b2bua.events import CallEnded, CallRefused, LeakBlocked
from relay.events.build import EventBuilder
from relay.guard import GuardSettings, LeakGuard, needles_for, scan

X, A, B = "+8617055556666", "+8613811112222", "+8613933334444"
NEEDLES = needles_for([B], [X, A])

LEAKS = [
    "+8613933334444", "8613933334444", "013933334444", "13933334444",
    "+86 139 3333 4444", "139-3333-4444", "(139) 3333-4444", "139.3333.4444",
    "tel:+86-139-3333-4444", "sip:+8613933334444@example.com",
    "sip:%2B8613933334444@h", "%31%33%39%33%33%33%33%34%34%34%34", "+86%20139%203333%204444",
    "33334444",  # the needle itself: the national number's last 8 digits
]


@pytest.mark.parametrize("text", LEAKS)
def test_every_common_formatting_is_found(text: str) -> None:
    data = f"SIP/2.0 180 Ringing\r\nX-Note: call {text} now\r\n\r\n".encode()
    assert scan(data, NEEDLES) == b"33334444"


@pytest.mark.parametrize("text", [
    A, X, "+8613933334445", "139 3333 444", "3333444", "1393333-9-4444",
    "o=- 1393333 1 IN IP4 127.0.0.1",
])
def test_other_numbers_and_near_misses_pass(text: str) -> None:
    data = f"INVITE sip:{A}@h SIP/2.0\r\nX-Note: {text}\r\n\r\n".encode()
    assert scan(data, NEEDLES) is None


def test_needles_grow_past_what_the_recipient_may_see() -> None:
    # The recipient's own number ends like the other party's: its echo must pass.
    own = "+8615033334444"
    needles = needles_for([B], [X, own])
    assert needles == (b"933334444",)
    assert scan(f"From: <sip:{own}@h>".encode(), needles) is None
    assert scan(f"X: {B}".encode(), needles) == b"933334444"
    assert needles_for([B], [B]) == ()  # the other party is the recipient: nothing to find
    assert needles_for([None, ""], [X]) == ()
    assert needles_for([B], [X], digits=11) == (b"13933334444",)


def test_settings_from_config() -> None:
    from relay.settings import load_sections

    assert load_sections({}).guard == GuardSettings()
    assert load_sections({"guard": {"digits": 9, "enabled": False}}).guard == \
        GuardSettings(False, 9)
    for bad in ({"digits": 3}, {"digits": "8"}, {"enabled": "yes"}, {"other": 1}):
        with pytest.raises(ValueError):
            load_sections({"guard": bad})


def _driver(plant: str) -> Driver:
    d = Driver()
    d.switch.settings.guard = LeakGuard(plant=plant)
    seen: list[object] = []
    emit = d.switch.emit

    def keep(ev: object) -> None:  # the bench driver drops call events: keep a copy
        seen.append(ev)
        emit(ev)  # type: ignore[arg-type]

    d.switch.emit = keep  # type: ignore[method-assign]
    d.seen = seen  # type: ignore[attr-defined]
    return d


def _events(d: Driver) -> list[object]:
    return list(d.seen)  # type: ignore[attr-defined]


def test_planted_leak_toward_the_caller_fails_the_call_safely() -> None:
    """The callee's 180 toward the caller would carry B (planted): the caller gets a clean
    500 instead and nothing with B's digits; the callee's INVITE is CANCELled."""
    d = _driver("caller")
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=1, length=len(SDP)).encode() + SDP, CALLER, now)
    invite = d.to_callee.pop()
    d.reply(invite, "180 Ringing", now)
    finals = [m for m in d.to_caller if not m.startswith("SIP/2.0 100")]
    assert [m.split("\r\n", 1)[0] for m in finals] == ["SIP/2.0 500 Server Internal Error"]
    assert "Reason: Q.850;cause=41" in finals[0]
    assert not any(scan(m.encode(), NEEDLES) for m in d.to_caller)
    cancel = d.to_callee.pop()
    assert cancel.startswith("CANCEL ")
    assert d.switch.settings.guard.blocked["sip"] == 1
    d.reply(invite, "487 Request Terminated", now)  # the callee ends its INVITE
    d._pump(now)  # the call's media release and record
    events = _events(d)
    leak = [e for e in events if isinstance(e, LeakBlocked)]
    assert len(leak) == 1 and leak[0].toward == "caller" and leak[0].what == "180"
    ended = [e for e in events if isinstance(e, CallEnded | CallRefused)]
    assert ended and ended[0].record["end_reason"] == "leak_blocked"
    assert ended[0].record["legs"]["caller"]["sip_code"] == 500
    # The event names the call, never a real number (masked unless configured).
    ev = EventBuilder().call(leak[0])[0]
    assert ev.type == "leak.blocked" and b"33334444" not in ev.body
    assert b"11112222" not in ev.body


def test_planted_leak_toward_the_callee_never_sends_the_invite() -> None:
    d = _driver("callee")
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=2, length=len(SDP)).encode() + SDP, CALLER, now)
    assert d.to_callee == []  # the INVITE that held A's number never left
    finals = [m for m in d.to_caller if not m.startswith("SIP/2.0 100")]
    assert len(finals) == 1 and finals[0].startswith("SIP/2.0 500")
    assert d.switch.settings.guard.blocked["sip"] == 1
    assert d.switch.live == 0


def test_clean_calls_pass_and_are_checked() -> None:
    d = _driver("")
    now = time.time()
    d.call(3, now)
    guard = d.switch.settings.guard
    assert guard.blocked["sip"] == 0 and guard.checked >= 5


def test_a_leak_in_the_answer_sdp_is_stopped_before_the_200() -> None:
    """A 2xx whose (rewritten) SDP carries B's number: the caller gets 500, not the 200."""
    d = _driver("")
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=4, length=len(SDP)).encode() + SDP, CALLER, now)
    invite = d.to_callee.pop()
    # The media backend echoes the callee's origin user (a UA put its number there).
    leaky = SDP.replace(b"alice", B.encode())
    orig_pump = d._pump

    def pump(now: float) -> list[tuple[bytes, tuple[str, int]]]:
        sw = d.switch
        sent: list[tuple[bytes, tuple[str, int]]] = []
        while True:
            sent += sw.datagrams_to_send()
            jobs = sw.take_jobs()
            if not jobs:
                return sent
            for job in jobs:
                result: object = (object(), SDP) if job.op == "setup" else leaky
                sw.media_done(job, None if job.op == "release" else result, None, now)

    d._pump = pump  # type: ignore[method-assign]
    d.reply(invite, "200 OK", now, SDP)
    d._pump = orig_pump  # type: ignore[method-assign]
    to_caller = [m.split("\r\n", 1)[0] for m in d.to_caller if "CSeq: 1 INVITE" in m]
    assert "SIP/2.0 200 OK" not in to_caller and to_caller[-1].startswith("SIP/2.0 500")
    assert not any(scan(m.encode(), NEEDLES) for m in d.to_caller)
    assert any(m.startswith("BYE ") for m in d.to_callee)  # the callee's answered leg ends
    assert _header is not None and CALLEE


def test_a_reliable_provisional_is_guarded_too() -> None:
    """RFC 3262: a caller requiring 100rel gets its 18x through respond_reliably; the
    planted leak there is stopped like any other message."""
    d = _driver("caller")
    now = time.time()
    invite = INVITE.format(x=X, a=A, n=7, length=len(SDP)).replace(
        "Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: 100rel\r\n")
    d.feed(invite.encode() + SDP, CALLER, now)
    out = d.to_callee.pop()
    d.reply(out, "180 Ringing", now)
    finals = [m for m in d.to_caller if not m.startswith("SIP/2.0 100")]
    assert finals and all(m.startswith("SIP/2.0 500") for m in finals), finals
    assert not any(scan(m.encode(), NEEDLES) for m in d.to_caller)
    assert d.switch.settings.guard.blocked["sip"] == 1
