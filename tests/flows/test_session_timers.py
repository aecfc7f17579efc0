"""Session timers (RFC 4028) on both legs: negotiation, refreshes the relay sends, and
the end of a call whose peer stopped refreshing. Issue 18, point 2."""

from __future__ import annotations

from b2bua_harness import CALLEE, CALLER, Harness, sdp

from relay.sip import SipRequest, SipResponse, build_response


def _invite(h: Harness, *extra: tuple[str, str]) -> SipRequest:
    h.caller_invite(extra=list(extra))
    return h.last("B", SipRequest, method="INVITE")


def _answer(h: Harness, inv: SipRequest, *extra: tuple[str, str]) -> None:
    h.callee_reply(inv, 200, body=sdp("bob", 32000), extra=list(extra))
    h.caller_ack()


def _requests(h: Harness, side: str, method: str) -> list[SipRequest]:
    """The requests of `method` sent to a side, one per transaction (no retransmissions)."""
    msgs = h.to_caller if side == "C" else h.to_callee
    seen: dict[str, SipRequest] = {}
    for m in msgs:
        if isinstance(m, SipRequest) and m.method == method:
            seen.setdefault(f"{m.cseq.number} {m.top_via.params.get('branch')}", m)
    return list(seen.values())


def _reply_to(h: Harness, req: SipRequest, status: int, source: tuple[str, int],
              *extra: tuple[str, str], body: bytes = b"") -> None:
    headers = [("Contact", f"<sip:peer@{source[0]}:{source[1]}>"), *extra]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    h.deliver(bytes(build_response(req, status, extra_headers=headers, body=body)), source)


def test_the_callee_leg_offers_a_timer_and_the_caller_gets_one_granted() -> None:
    h = Harness()
    h.bind()
    inv = _invite(h, ("Supported", "timer"), ("Session-Expires", "600;refresher=uac"))
    assert inv.headers.get("session-expires") == "1800"
    assert inv.headers.get("min-se") == "90"
    assert inv.headers.get_list("supported") == ["timer", "100rel"]
    _answer(h, inv)
    ok = h.last("C", SipResponse, status=200)
    assert ok.headers.get("session-expires") == "600;refresher=uac"
    assert ok.headers.get_list("require") == ["timer"]


def test_too_short_a_session_gets_422_with_min_se() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Supported", "timer"), ("Session-Expires", "60")])
    resp = h.last("C", SipResponse)
    assert resp.status == 422 and resp.headers.get("min-se") == "90"
    assert not h.to_callee and not h.switch.calls


def test_a_caller_that_stops_refreshing_is_hung_up_before_its_session_ends() -> None:
    """refresher=uac with 120 s: without a refresh the relay ends the call 120 - 32 s
    after the answer (RFC 4028 §10), BYE to both legs, cause 102."""
    h = Harness()
    h.bind()
    inv = _invite(h, ("Supported", "timer"), ("Session-Expires", "120;refresher=uac"))
    _answer(h, inv)
    answered = h.now
    h.advance(87)
    assert not _requests(h, "C", "BYE") and h.switch.calls
    h.advance(2)
    assert _requests(h, "C", "BYE") and _requests(h, "B", "BYE")
    (rec,) = h.records
    assert rec["end_reason"] == "session_expired" and rec["cause"] == 102
    assert rec["released_by"] == "relay"
    assert h.now - answered < 120


def test_a_refresh_from_the_caller_keeps_the_call_up() -> None:
    h = Harness()
    h.bind()
    inv = _invite(h, ("Supported", "timer"), ("Session-Expires", "120;refresher=uac"))
    _answer(h, inv)
    h.advance(60)
    h.in_dialog("C", "UPDATE", cseq=2, extra=[("Session-Expires", "120;refresher=uac"),
                                              ("Supported", "timer")])
    ok = h.last("C", SipResponse, status=200)
    assert ok.cseq.method == "UPDATE"
    assert ok.headers.get("session-expires") == "120;refresher=uac"
    h.advance(60)  # 120 s after the answer: alive thanks to the refresh
    assert not _requests(h, "C", "BYE") and h.switch.calls
    h.advance(30)  # 60 + 88 s: the refresh's session ran out
    assert _requests(h, "C", "BYE")
    assert h.records[0]["end_reason"] == "session_expired"


def test_the_relay_refreshes_a_caller_without_timer_support_by_reinvite() -> None:
    """No Supported: timer and no Allow: the relay is the refresher (uas) and repeats the
    SDP it sent in a re-INVITE at half the interval; the 2xx is ACKed."""
    h = Harness(session_expires=600)
    h.bind()
    inv = _invite(h)
    _answer(h, inv)
    ok = h.last("C", SipResponse, status=200)
    assert ok.headers.get("session-expires") == "600;refresher=uas"
    assert "require" not in ok.headers
    h.advance(299)
    assert not _requests(h, "C", "INVITE")
    h.advance(2)
    (reinvite,) = _requests(h, "C", "INVITE")
    assert reinvite.body == ok.body  # the same SDP: nothing changed (RFC 3264 §8)
    assert reinvite.headers.get("session-expires") == "600;refresher=uac"
    _reply_to(h, reinvite, 200, CALLER, body=sdp("alice", 30000))
    assert _requests(h, "C", "ACK")
    h.advance(299)  # refreshed at 301: the next refresh is due at 601
    assert len(_requests(h, "C", "INVITE")) == 1
    h.advance(2)
    assert len(_requests(h, "C", "INVITE")) == 2
    assert h.switch.calls and not _requests(h, "B", "BYE")


def test_the_relay_refreshes_the_callee_by_update_when_it_is_the_refresher() -> None:
    h = Harness(session_expires=600)
    h.bind()
    inv = _invite(h)
    _answer(h, inv, ("Session-Expires", "600;refresher=uac"), ("Supported", "timer"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"))
    h.advance(301)
    (update,) = _requests(h, "B", "UPDATE")
    assert update.body == b"" and update.headers.get("session-expires") == "600;refresher=uac"
    # Each leg keeps its own session: the caller (no timer support, no Allow) gets the
    # relay's own re-INVITE refresh with the SDP it already has, not the UPDATE.
    assert not _requests(h, "C", "UPDATE")
    (reinvite,) = _requests(h, "C", "INVITE")
    assert reinvite.body == h.last("C", SipResponse, status=200).body
    _reply_to(h, reinvite, 200, CALLER, body=sdp("alice", 30000))
    _reply_to(h, update, 200, CALLEE, ("Session-Expires", "600;refresher=uac"))
    h.advance(300)
    assert len(_requests(h, "B", "UPDATE")) == 2 and h.switch.calls


def test_a_refresh_answered_481_ends_the_call() -> None:
    h = Harness(session_expires=600)
    h.bind()
    inv = _invite(h)
    _answer(h, inv, ("Session-Expires", "600;refresher=uac"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE"))
    h.advance(301)
    (update,) = _requests(h, "B", "UPDATE")
    _reply_to(h, update, 481, CALLEE)
    assert _requests(h, "C", "BYE")  # the caller is told
    assert not _requests(h, "B", "BYE")  # the callee's dialog is gone already
    assert h.records and h.records[0]["released_by"] == "callee"


def test_an_unanswered_refresh_ends_the_call() -> None:
    """RFC 4028 §10 with RFC 3261 §12.2.1.2: a refresh that times out ends the dialog."""
    h = Harness(session_expires=600)
    h.bind()
    inv = _invite(h)
    _answer(h, inv)
    h.advance(301 + 33)  # the re-INVITE to the caller gets no answer: Timer B
    assert _requests(h, "B", "BYE")
    assert h.records and h.records[0]["cause"] == 102


def test_a_callee_without_timers_gets_none() -> None:
    h = Harness()
    h.bind()
    inv = _invite(h, ("Supported", "timer"), ("Session-Expires", "1800;refresher=uac"))
    _answer(h, inv)  # the 2xx names no Session-Expires: no timer on the callee leg
    h.advance(1000)
    assert not _requests(h, "B", "UPDATE") and not _requests(h, "B", "INVITE")[1:]


def test_a_422_from_the_callee_is_retried_once_with_its_min_se() -> None:
    h = Harness()
    h.bind()
    inv = _invite(h)
    h.callee_reply(inv, 422, extra=[("Min-SE", "3600")])
    invites = _requests(h, "B", "INVITE")
    assert len(invites) == 2
    again = invites[1]
    assert again.call_id == inv.call_id and again.from_tag == inv.from_tag
    assert again.cseq.number == inv.cseq.number + 1
    assert again.headers.get("session-expires") == "3600"
    assert again.top_via.params.get("branch") != inv.top_via.params.get("branch")
    h.callee_reply(again, 422, extra=[("Min-SE", "7200")])  # only once
    assert len(_requests(h, "B", "INVITE")) == 2
    fail = h.last("C", SipResponse)
    assert fail.status == 500  # never a 422 the caller did not cause


def test_timers_off_send_nothing() -> None:
    h = Harness(session_expires=0)
    h.bind()
    inv = _invite(h)
    assert "session-expires" not in inv.headers and inv.headers.get_list("supported") == ["100rel"]
    _answer(h, inv)
    assert "session-expires" not in h.last("C", SipResponse, status=200).headers
    h.advance(4000)
    assert not _requests(h, "B", "UPDATE") and not _requests(h, "C", "INVITE")
    assert h.switch.calls  # no session, no expiry: max_call_seconds (7200) still applies
