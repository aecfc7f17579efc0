"""Reliable provisionals (RFC 3262, 100rel/PRACK) on both legs. Issue 18, point 2."""

from __future__ import annotations

from b2bua_harness import CALLEE, CALLER, RELAY, B, Harness, X, sdp

from relay.sip import SipRequest, SipResponse, build_response


def _ringing(h: Harness, status: int = 180) -> list[SipResponse]:
    return [m for m in h.to_caller if isinstance(m, SipResponse) and m.status == status]


def _prack(h: Harness, rseq: int, cseq: int = 1, branch: str = "z9hG4bKpr1") -> SipResponse:
    ring = next(m for m in reversed(h.to_caller) if isinstance(m, SipResponse)
                and 100 < m.status < 200)
    req = SipRequest("PRACK", f"sip:{X}@{RELAY[0]}:{RELAY[1]}", [
        ("Via", f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch={branch}"),
        ("Max-Forwards", "70"), ("From", ring.headers.get("from") or ""),
        ("To", ring.headers.get("to") or ""), ("Call-ID", ring.call_id),
        ("CSeq", f"{cseq + 1} PRACK"), ("RAck", f"{rseq} {cseq} INVITE")], b"")
    h.deliver(bytes(req), CALLER)
    return next(m for m in reversed(h.to_caller) if isinstance(m, SipResponse)
                and m.cseq.method == "PRACK")


def test_a_caller_that_requires_100rel_gets_reliable_ringing_until_it_pracks() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Require", "100rel"), ("Supported", "100rel")])
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    (first,) = _ringing(h)
    assert first.headers.get_list("require") == ["100rel"]
    rseq = int(first.headers.get("rseq") or 0)
    assert rseq > 0
    h.advance(1.6)  # T1 0.5: again at 0.5 and 1.5 s
    assert len(_ringing(h)) == 3 and all(r.headers.get("rseq") == str(rseq)
                                         for r in _ringing(h))
    ok = _prack(h, rseq)
    assert ok.status == 200
    h.advance(10)
    assert len(_ringing(h)) == 3  # PRACKed: no more
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    assert h.last("C", SipResponse, status=200)


def test_a_prack_that_names_nothing_we_sent_gets_481() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Require", "100rel")])
    h.callee_reply(h.last("B", SipRequest, method="INVITE"), 180)
    rseq = int(_ringing(h)[0].headers.get("rseq") or 0)
    assert _prack(h, rseq + 5).status == 481
    assert _prack(h, rseq, branch="z9hG4bKpr2").status == 200


def test_a_second_provisional_waits_for_the_first_ones_prack() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Require", "100rel")])
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.callee_reply(inv, 183, body=sdp("bob", 32000))
    assert not _ringing(h, 183)  # held back (RFC 3262 §3)
    rseq = int(_ringing(h)[0].headers.get("rseq") or 0)
    _prack(h, rseq)
    (early,) = _ringing(h, 183)
    assert early.headers.get("rseq") == str(rseq + 1) and early.body


def test_no_prack_for_64_t1_rejects_the_invite_with_504() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Require", "100rel")])
    h.callee_reply(h.last("B", SipRequest, method="INVITE"), 180)
    h.advance(33)
    final = h.last("C", SipResponse)
    assert final.status == 504
    assert h.last("B", SipRequest, method="CANCEL")
    assert h.records[0]["end_reason"] == "no_prack"


def test_a_caller_that_only_supports_100rel_gets_early_media_reliably() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Supported", "100rel")])
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    assert "rseq" not in _ringing(h)[0].headers  # no body: plain
    h.callee_reply(inv, 183, body=sdp("bob", 32000))
    assert _ringing(h, 183)[0].headers.get_list("require") == ["100rel"]


def test_a_reliable_183_from_the_callee_is_pracked_once() -> None:
    h = Harness()
    h.bind()
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    assert "100rel" in inv.headers.get_list("supported")
    rel = [("Require", "100rel"), ("RSeq", "7")]
    h.callee_reply(inv, 183, body=sdp("bob", 32000), extra=rel)
    h.callee_reply(inv, 183, body=sdp("bob", 32000), extra=rel)  # a retransmission
    pracks = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "PRACK"]
    assert len({p.cseq.number for p in pracks}) == 1
    prack = pracks[0]
    assert prack.headers.get("rack") == f"7 {inv.cseq.number} INVITE"
    assert prack.uri == f"sip:{B}@{CALLEE[0]}:{CALLEE[1]}"
    assert len(_ringing(h, 183)) == 1  # the caller hears it once, unreliably
    assert "rseq" not in _ringing(h, 183)[0].headers
    h.deliver(bytes(build_response(prack, 200)), CALLEE)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    h.in_dialog("C", "BYE", cseq=2)
    bye = h.last("B", SipRequest, method="BYE")
    assert bye.cseq.number > prack.cseq.number  # one CSeq space in the dialog (§12.2.1.1)


def test_without_an_offer_the_callee_is_not_offered_100rel() -> None:
    h = Harness()
    h.bind()
    h.caller_invite(body=b"")
    inv = h.last("B", SipRequest, method="INVITE")
    assert "100rel" not in inv.headers.get_list("supported")
