"""UPDATE in an early dialog (RFC 3311, issue 18 point 2): an offer from either side
before the answer crosses as an UPDATE through the media backend; a re-INVITE in an
early dialog is refused 491 (RFC 3261 §14.1)."""

from __future__ import annotations

from b2bua_harness import CALLEE, Harness, sdp

from relay.sip import SipRequest, SipResponse, build_response


def _early(h: Harness) -> SipRequest:
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 183, body=sdp("bob", 32000))
    return inv


def _in_early_dialog(h: Harness, method: str, body: bytes) -> None:
    ring = h.last("C", SipResponse, status=183)
    req = SipRequest(method, ring.headers.get("contact", "").strip("<>"), [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKup1"), ("Max-Forwards", "70"),
        ("From", ring.headers.get("from") or ""), ("To", ring.headers.get("to") or ""),
        ("Call-ID", ring.call_id), ("CSeq", f"2 {method}"),
        ("Contact", "<sip:a@192.0.2.10:5060>"), ("Content-Type", "application/sdp")], body)
    h.deliver(bytes(req), ("192.0.2.10", 5060))


def test_an_update_from_the_caller_before_the_answer_reaches_the_callee() -> None:
    h = Harness()
    h.bind()
    _early(h)
    _in_early_dialog(h, "UPDATE", sdp("alice", 30010))
    update = h.last("B", SipRequest, method="UPDATE")
    assert b"x-for:callee" in update.body  # through the media backend
    ok = build_response(update, 200, body=sdp("bob", 32010), extra_headers=[
        ("Content-Type", "application/sdp")])
    h.deliver(bytes(ok), CALLEE)
    answer = h.last("C", SipResponse, status=200)
    assert answer.cseq.method == "UPDATE" and b"x-for:caller" in answer.body
    assert h.switch.calls  # still ringing


def test_a_reinvite_in_an_early_dialog_gets_491() -> None:
    h = Harness()
    h.bind()
    _early(h)
    _in_early_dialog(h, "INVITE", sdp("alice", 30010))
    assert h.last("C", SipResponse).status == 491
    assert not [m for m in h.to_callee if isinstance(m, SipRequest)
                and m.method in ("INVITE", "UPDATE") and m.cseq.number > 1]
