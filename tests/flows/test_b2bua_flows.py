"""Call flows through the B2BUA core, in memory (RFC 3261 behaviour, golden transcripts)."""

from __future__ import annotations

from typing import Any

import pytest
from b2bua_harness import CALLEE, CALLER, A, B, Harness, X, sdp

from relay.b2bua._state import LegKind, LegState, LegStateError, transition
from relay.b2bua.overload import OverloadConfig, OverloadGuard
from relay.bindings.model import State
from relay.sdp import NoCommonCodec
from relay.sip import SipRequest, SipResponse


def _answered(h: Harness) -> SipRequest:
    """Caller INVITE, callee 180 then 200, caller ACK; returns the callee's INVITE."""
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    return inv


def test_basic_call_golden_transcript() -> None:
    h = Harness()
    h.bind()
    inv = _answered(h)
    h.in_dialog("C", "BYE", cseq=2)
    h.callee_reply(h.last("B", SipRequest, method="BYE"), 200)
    assert h.transcript == [
        "C->R INVITE", "R->C 100", "R->B INVITE",
        "B->R 180", "R->C 180",
        "B->R 200", "R->B ACK", "R->C 200",
        "C->R ACK",
        "C->R BYE", "R->C 200", "R->B BYE",
        "B->R 200",
    ]
    assert inv.uri == f"sip:{B}@{CALLEE[0]}"
    assert inv.from_.uri.user == X and inv.headers.get("p-asserted-identity") == \
        f"<sip:{X}@192.0.2.1>"
    assert inv.max_forwards == 69
    (rec,) = h.records
    assert rec["caller"] == A and rec["callee"] == B and rec["sip_code"] == 200
    assert rec["released_by"] == "caller" and rec["unconnected_cause"] == "none"
    assert rec["legs"]["callee"]["answer_at"] == int(h.now * 1000)
    assert h.media.released == [rec["id"]]
    assert not h.switch.calls and h.switch.live == 0


def test_nothing_of_one_side_reaches_the_other() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("B", "BYE", cseq=5)
    for addr, data in h.raw:
        text = data.decode()
        if addr == CALLEE:
            for leak in ("11112222", "AliceSecret", "caller-secret", "a-call-1", "atag1",
                         "caller.example", "192.0.2.10", "Diversion", "alice"):
                assert leak not in text, (leak, text)
        else:
            for leak in ("33334444", "BobSecret", "callee-secret", "btag1", "192.0.2.20",
                         "bob", "Server:"):
                assert leak not in text, (leak, text)


def test_caller_cancel_before_answer() -> None:
    h = Harness()
    h.bind()
    req = h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    cancel = SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                           ("via", "from", "to", "call-id")] +
                        [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])
    h.deliver(bytes(cancel), CALLER)
    assert [m.status for m in h.to_caller if isinstance(m, SipResponse)][-2:] == [200, 487]
    c = h.last("B", SipRequest, method="CANCEL")
    assert c.top_via.branch == inv.top_via.branch  # RFC 3261 §9.1
    h.callee_reply(c, 200)
    h.callee_reply(inv, 487)
    assert isinstance(h.to_callee[-1], SipRequest) and h.to_callee[-1].method == "ACK"
    (rec,) = h.records
    assert rec["sip_code"] == 487 and rec["released_by"] == "caller"


def test_cancelled_callee_that_never_sends_its_487_is_forgotten() -> None:
    """Issue 18: the callee answers our CANCEL but its 487 never arrives (behind Kamailio
    a 487 with the CANCEL's Via lost its only Via). RFC 3261 §9.1: 64*T1 after the CANCEL
    the INVITE client transaction ends, so no transaction and no call state lingers."""
    h = Harness()
    h.bind()
    req = h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    cancel = SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                           ("via", "from", "to", "call-id")] +
                        [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])
    h.deliver(bytes(cancel), CALLER)
    h.callee_reply(h.last("B", SipRequest, method="CANCEL"), 200)
    (rec,) = h.records
    assert rec["sip_code"] == 487 and rec["released_by"] == "caller"
    h.advance(31.0)
    # the callee INVITE is still in Proceeding (the caller side's own timers run too)
    assert [k.method for k in h.switch.layer._clients] == ["INVITE"]
    h.advance(2.0)
    assert len(h.switch.layer) == 0 and not h.switch._clients
    assert len(h.records) == 1  # the late timeout changes no record


def test_200_crossing_cancel_is_acked_and_byed() -> None:
    h = Harness()
    h.bind()
    req = h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    cancel = SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                           ("via", "from", "to", "call-id")] +
                        [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])
    h.deliver(bytes(cancel), CALLER)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))  # crossed the CANCEL (RFC 3261 §9.1)
    methods = [m.method for m in h.to_callee if isinstance(m, SipRequest)]
    assert methods[-3:] == ["CANCEL", "ACK", "BYE"]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    h = Harness()
    h.bind()
    req = h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    cancel = SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                           ("via", "from", "to", "call-id")] +
                        [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])
    h.deliver(bytes(cancel), CALLER)
    assert not any(isinstance(m, SipRequest) and m.method == "CANCEL" for m in h.to_callee)
    h.callee_reply(inv, 100)
    assert h.last("B", SipRequest, method="CANCEL")  # §9.1: only after a provisional


def test_callee_busy_maps_to_486_with_reason() -> None:
    h = Harness()
    h.bind()
    h.caller_invite()
    h.callee_reply(h.last("B", SipRequest, method="INVITE"), 486)
    assert h.last("B", SipRequest, method="ACK")  # the ICT ACKs the 486 (§17.1.1.3)
    resp = h.last("C", SipResponse, status=486)
    assert "cause=17" in (resp.headers.get("reason") or "")
    assert h.records[0]["released_by"] == "callee" and h.records[0]["cause"] == 17


def test_callee_redirect_and_challenge_do_not_cross() -> None:
    h = Harness()
    h.bind()
    h.caller_invite()
    h.callee_reply(h.last("B", SipRequest, method="INVITE"), 302,
                   extra=[("Contact", "<sip:secret-forward@203.0.113.9>")])
    resp = h.last("C", SipResponse)
    assert resp.status == 480 and "secret-forward" not in bytes(resp).decode()


def test_ring_timeout_cancels_callee_and_480s_caller() -> None:
    h = Harness(ring_timeout=5.0)
    h.bind()
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.advance(4.9)
    assert not h.records
    h.advance(0.2)
    assert h.last("B", SipRequest, method="CANCEL")
    resp = h.last("C", SipResponse, status=480)
    assert "cause=19" in (resp.headers.get("reason") or "")
    assert h.records[0]["released_by"] == "relay"


def test_unreachable_trunk_gives_408() -> None:
    h = Harness()
    h.bind()
    h.caller_invite()
    h.advance(40.0)  # Timer B = 64*T1 = 32 s
    assert h.last("C", SipResponse).status == 408
    invites = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert len(invites) > 3  # Timer A retransmissions


def test_max_call_duration_byes_both_legs() -> None:
    h = Harness()
    h.bind(max_call_seconds=30)
    _answered(h)
    h.advance(29.0)
    assert not h.records
    h.advance(2.0)
    assert h.last("B", SipRequest, method="BYE") and h.last("C", SipRequest, method="BYE")
    assert h.records[0]["released_by"] == "relay"


def test_frozen_binding_call_continues_by_default_or_hangs_up_if_configured() -> None:
    for hangup in (False, True):
        h = Harness(hangup_on_freeze=hangup)
        b = h.bind()
        _answered(h)
        h.table.apply(b.replace(state=State.FROZEN, version=2))
        h.switch.sweep(h.now)
        h.pump()
        ended = bool(h.records)
        assert ended is hangup
        # a new call to the frozen number is refused at once
        h.caller_invite(call_id="second@x", branch="z9hG4bKsecond")
        assert h.last("C", SipResponse).status == 410


def test_reinvite_from_callee_and_update_from_caller() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("B", "INVITE", cseq=2, body=sdp("bob", 32010))
    re = h.last("C", SipRequest, method="INVITE")
    assert b"x-for:caller" in re.body and b"bob" not in re.body
    h.caller_reply(re, 200, body=sdp("alice", 30010))
    assert h.last("C", SipRequest, method="ACK").cseq.number == re.cseq.number
    ok = h.last("B", SipResponse, status=200)
    assert ok.cseq.method == "INVITE" and b"x-for:callee" in ok.body
    # UPDATE (RFC 3311) the other way; the callee rejects it: 488 reaches the caller.
    h.in_dialog("C", "UPDATE", cseq=3, body=sdp("alice", 30020))
    up = h.last("B", SipRequest, method="UPDATE")
    h.callee_reply(up, 488)
    assert h.last("C", SipResponse).status == 488
    ops = [op for op, _s, _b in h.media.ops]
    assert ops.count("offer") == 2 and ops.count("answer") >= 2


def test_reinvite_glare_gets_491() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("B", "INVITE", cseq=2, body=sdp("bob", 32010))
    h.in_dialog("B", "INVITE", cseq=3, body=sdp("bob", 32020))
    assert h.last("B", SipResponse).status == 491


def test_info_relayed_both_ways() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("C", "INFO", cseq=2, body=b"Signal=5\r\nDuration=160\r\n",
                content_type="application/dtmf-relay")
    info = h.last("B", SipRequest, method="INFO")
    assert info.body.startswith(b"Signal=5")
    assert info.headers.get("content-type") == "application/dtmf-relay"
    h.callee_reply(info, 200)
    assert h.last("C", SipResponse).status == 200


def test_loss_is_recovered_by_retransmission() -> None:
    h = Harness()
    h.bind()
    lost = {"INVITE": 1, "200": 1}

    def drop(side: str, data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0].decode()
        for key in list(lost):
            if key in line and lost[key]:
                lost[key] -= 1
                return True
        return False

    h.drop = drop
    h.caller_invite()
    assert not any(isinstance(m, SipRequest) for m in h.to_callee)
    h.advance(0.6)  # Timer A retransmits the INVITE
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    assert not any(isinstance(m, SipResponse) and m.status == 200 for m in h.to_caller)
    h.advance(0.6)  # Timer G retransmits the 2xx to the caller (RFC 6026 Accepted)
    assert h.last("C", SipResponse, status=200)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))  # a retransmitted 2xx: re-ACKed
    acks = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "ACK"]
    assert len(acks) == 2


@pytest.mark.parametrize(("x", "caller", "code", "cause", "unconnected"), [
    ("+8617000009999", A, 404, 1, "no_binding"),
    (X, "+8613700000077", 403, 21, "stranger"),
    (X, "anonymous", 403, 21, "stranger"),
])
def test_refusals(x: str, caller: str, code: int, cause: int, unconnected: str) -> None:
    h = Harness()
    h.bind()
    h.caller_invite(x=x, caller=caller)
    resp = h.last("C", SipResponse)
    assert resp.status == code
    assert f"Q.850;cause={cause}" in (resp.headers.get("reason") or "")
    assert not h.to_callee
    assert h.records[0]["unconnected_cause"] == unconnected


def test_frozen_410_untrusted_403_hops_483_overload_503() -> None:
    h = Harness(max_calls=1)
    b = h.bind()
    h.caller_invite(max_forwards=0)
    assert h.last("C", SipResponse).status == 483
    h.caller_invite(source=("203.0.113.5", 5060), branch="z9hG4bKu")
    assert h.switch.counts["untrusted"] == 1 and h.switch.counts["invites"] == 1
    h.caller_invite(call_id="c1@x", branch="z9hG4bKc1")  # takes the only slot
    h.caller_invite(call_id="c2@x", branch="z9hG4bKc2")
    over = h.last("C", SipResponse)
    assert over.status == 503 and over.headers.get("retry-after")
    h.table.apply(b.replace(state=State.FROZEN, version=2))
    h.switch.settings.max_calls = 10
    h.caller_invite(call_id="c3@x", branch="z9hG4bKc3")
    assert h.last("C", SipResponse).status == 410


def test_overload_sheds_new_calls_cheaply_and_never_in_dialog_requests() -> None:
    h = Harness(overload=OverloadGuard(OverloadConfig(force_after=1, sample_every=2,
                                                      retry_after=9)))
    h.bind()
    inv = _answered(h)  # admitted: the budget's only call
    for i in range(3):
        h.caller_invite(call_id=f"shed{i}@x", branch=f"z9hG4bKshed{i}")
        shed = h.last("C", SipResponse)
        assert shed.status == 503 and shed.headers.get("retry-after") == "9"
    assert h.switch.counts["overload"] == 3 and h.switch.refusals[503] == 3
    assert [op for op, _s, _b in h.media.ops].count("setup") == 1  # no media for a shed call
    h.pump()
    assert len([r for r in h.records if r["sip_code"] == 503]) == 2  # the 1st and 3rd
    h.in_dialog("C", "BYE", cseq=2)  # the live call still ends normally
    assert h.last("B", SipRequest, method="BYE") is not None
    h.callee_reply(h.last("B", SipRequest, method="BYE"), 200)
    assert h.last("C", SipResponse).status == 200 and inv is not None


def test_cps_limit() -> None:
    h = Harness(cps=2.0)
    h.bind(mode="AXN", a=None)
    codes = []
    for i in range(4):
        h.caller_invite(call_id=f"c{i}@x", branch=f"z9hG4bKcps{i}", caller=f"+861370000{i:04d}")
        codes.append(h.last("C", SipResponse).status)
    assert codes.count(503) >= 1 and codes[0] == 100


def test_media_refusal_488_and_no_callee_leg() -> None:
    h = Harness()
    h.bind()
    h.media.fail["setup"] = NoCommonCodec("no codec")
    h.caller_invite()
    assert h.last("C", SipResponse).status == 488
    assert not h.to_callee and h.records[0]["unconnected_cause"] == "error"


def test_axn_anyone_reaches_b_and_b_reaches_a() -> None:
    h = Harness()
    h.bind(mode="AXN", a=A)
    h.caller_invite(caller="+8613755556666")
    assert h.last("B", SipRequest, method="INVITE").uri.startswith(f"sip:{B}@")
    h2 = Harness()
    h2.bind(mode="AXN", a=A)
    h2.caller_invite(caller=B)
    assert h2.last("B", SipRequest, method="INVITE").uri.startswith(f"sip:{A}@")


def test_drain_refuses_new_calls_and_hangup_all() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.switch.draining = True
    h.caller_invite(call_id="late@x", branch="z9hG4bKlate")
    assert h.last("C", SipResponse).status == 503
    assert h.switch.hangup_all(h.now) == 1
    h.pump()
    assert h.last("B", SipRequest, method="BYE") and h.last("C", SipRequest, method="BYE")


def test_options_and_unknown_dialog() -> None:
    h = Harness()
    opts = SipRequest("OPTIONS", "sip:relay@192.0.2.1", [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo"), ("Max-Forwards", "70"),
        ("From", "<sip:k@x>;tag=1"), ("To", "<sip:relay@192.0.2.1>"), ("Call-ID", "o@x"),
        ("CSeq", "1 OPTIONS")])
    h.deliver(bytes(opts), CALLER)
    assert h.last("C", SipResponse).status == 200
    bye = SipRequest("BYE", "sip:relay@192.0.2.1", [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKb"), ("Max-Forwards", "70"),
        ("From", "<sip:k@x>;tag=1"), ("To", "<sip:relay@192.0.2.1>;tag=nope"),
        ("Call-ID", "b@x"), ("CSeq", "1 BYE")])
    h.deliver(bytes(bye), CALLER)
    assert h.last("C", SipResponse).status == 481


def test_leg_table_names_state_and_event() -> None:
    assert transition(LegKind.UAC, LegState.IDLE, "try") is LegState.TRYING
    with pytest.raises(LegStateError, match="idle: illegal event connect"):
        transition(LegKind.UAC, LegState.IDLE, "connect")
    with pytest.raises(LegStateError, match="dead"):
        transition(LegKind.UAS, LegState.DEAD, "ring")


def test_garbage_never_raises() -> None:
    h = Harness()
    for data in (b"", b"\x00\xff" * 50, b"INVITE sip:x SIP/2.0\r\n\r\n",
                 b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n"):
        h.deliver(data, CALLER)
    assert h.switch.layer.stats["malformed"] >= 3


def test_late_offer_the_ack_carries_the_answer() -> None:
    """INVITE without SDP (RFC 3261 §13.2.1): the callee's 2xx offers, the caller's ACK
    answers, and the relay ACKs the callee only then, with the rewritten answer."""
    h = Harness()
    h.bind()
    h.caller_invite(body=b"")
    inv = h.last("B", SipRequest, method="INVITE")
    assert inv.body == b""
    h.callee_reply(inv, 180)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    assert not any(isinstance(m, SipRequest) and m.method == "ACK" for m in h.to_callee)
    ok = h.last("C", SipResponse, status=200)
    assert b"x-for:caller" in ok.body
    h.callee_reply(inv, 200, body=sdp("bob", 32000))  # retransmitted: still no ACK
    assert not any(isinstance(m, SipRequest) and m.method == "ACK" for m in h.to_callee)
    ack = SipRequest("ACK", f"sip:{X}@192.0.2.1", [
        ("Via", f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bKlateack"),
        ("Max-Forwards", "70"), ("From", ok.headers.get("from") or ""),
        ("To", ok.headers.get("to") or ""), ("Call-ID", ok.call_id), ("CSeq", "1 ACK"),
        ("Content-Type", "application/sdp")], sdp("alice", 30000))
    h.deliver(bytes(ack), CALLER)
    b_ack = h.last("B", SipRequest, method="ACK")
    assert b"x-for:callee" in b_ack.body and b"alice" not in b_ack.body
    assert [op for op, _s, _b in h.media.ops] == ["setup", "offer", "answer"]


def test_retry_after_only_when_the_relay_itself_is_short() -> None:
    from relay.rtp.ports import PortsExhausted

    h = Harness()
    h.bind()
    h.caller_invite()
    h.callee_reply(h.last("B", SipRequest, method="INVITE"), 503)
    callee_503 = h.last("C", SipResponse, status=503)
    assert callee_503.headers.get("retry-after") is None
    h.media.fail["setup"] = PortsExhausted("all pairs in use")
    h.caller_invite(call_id="ports@x", branch="z9hG4bKports")
    ours = h.last("C", SipResponse, status=503)
    assert ours.headers.get("retry-after") == "5"


def test_info_with_a_non_dtmf_body_is_refused_not_relayed() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("B", "INFO", cseq=2, body=sdp("bob", 32000))
    refused = h.last("B", SipResponse)
    assert refused.status == 415 and "dtmf" in (refused.headers.get("accept") or "")
    assert not any(isinstance(m, SipRequest) and m.method == "INFO" for m in h.to_caller)


def test_required_extensions_we_lack_get_420() -> None:
    """RFC 3261 §8.2.2.3: of the option-tags we support only `timer` (RFC 4028) and
    `100rel` (RFC 3262), so Require: precondition is refused with 420 and Unsupported
    naming only what we lack; nothing reaches the callee."""
    h = Harness()
    h.bind()
    h.caller_invite(extra=[("Require", "precondition, 100rel, timer")])
    resp = h.last("C", SipResponse)
    assert resp.status == 420 and resp.headers.get("unsupported") == "precondition"
    assert not h.to_callee and not h.switch.calls
    (rec,) = h.records
    assert rec["sip_code"] == 420 and rec["unconnected_cause"] == "error"
    # Supported: 100rel is only an offer: the call goes ahead without reliable 1xx.
    h2 = Harness()
    h2.bind()
    h2.caller_invite(extra=[("Supported", "100rel")])
    inv = h2.last("B", SipRequest, method="INVITE")
    # The caller's option-tags do not cross; the relay offers only its own.
    assert inv.headers.get_list("supported") == ["timer", "100rel"]
    assert "require" not in inv.headers
    h2.callee_reply(inv, 200, body=sdp("bob", 32000))
    h2.caller_ack()
    # In a dialog too: a re-INVITE requiring an extension is refused; the call stays up.
    h2.in_dialog("C", "INVITE", cseq=2, body=sdp("alice", 30002),
                 extra=[("Require", "precondition")])
    assert h2.last("C", SipResponse).status == 420
    assert [m.method for m in h2.to_callee if isinstance(m, SipRequest)] == ["INVITE", "ACK"]
    h2.in_dialog("C", "BYE", cseq=3)
    assert h2.last("B", SipRequest).method == "BYE"


def test_a_finished_call_is_freed_without_the_cycle_collector() -> None:
    """Switch._finish breaks the call <-> leg cycles: with the collector off (the relay
    runs young collections only, see relay.io.voice._tune_gc), reference counting alone
    frees a finished call, and the transactions that linger keep no parsed request."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        h = Harness()
        h.bind()
        _answered(h)
        (call,) = h.switch.calls.values()
        refs: list[weakref.ref[Any]] = [weakref.ref(call), weakref.ref(call.a),
                                        weakref.ref(call.b)]
        del call
        h.in_dialog("C", "BYE", cseq=2)
        h.callee_reply(h.last("B", SipRequest, method="BYE"), 200)
        assert not h.switch.calls and h.records
        assert [r() for r in refs] == [None, None, None]
        layer = h.switch.layer
        assert len(layer) > 0  # RFC 3261 timers keep them a while...
        lingering = [*layer._servers.values(), *layer._clients.values()]
        assert all(t.request is None for t in lingering)  # ...but lean
    finally:
        gc.enable()


def test_media_timeout_ends_answered_calls_only() -> None:
    h = Harness()
    h.bind()
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    (ringing,) = h.switch.calls.values()
    assert h.switch.media_timeout([ringing.media], h.now) == 0  # not answered: no timeout
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    assert h.switch.media_timeout([], h.now) == 0
    assert h.switch.media_timeout([ringing.media], h.now) == 1
    h.pump()
    assert h.last("C", SipRequest).method == "BYE" and h.last("B", SipRequest).method == "BYE"
    assert h.last("B", SipRequest).headers.get("reason") == "Q.850;cause=41"
    (rec,) = h.records
    assert rec["released_by"] == "relay" and rec["cause"] == 41
    assert rec["end_reason"] == "media_timeout"


def test_dialog_responses_echo_record_route_in_order() -> None:
    """RFC 3261 §12.1.1: behind a record-routing proxy, the 180 and the 200 (and its
    retransmissions) carry the INVITE's Record-Route in order, so the caller's ACK and
    BYE go through the proxy; the 100 and the callee leg carry none of it."""
    h = Harness()
    h.bind()
    rr = ["<sip:192.0.2.5;lr;ftag=atag1>", "<sip:192.0.2.6:5070;transport=udp;lr>"]
    h.caller_invite(extra=[("Record-Route", rr[0]), ("Record-Route", rr[1])])
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    ringing = h.last("C", SipResponse, status=180)
    ok = h.last("C", SipResponse, status=200)
    trying = h.last("C", SipResponse, status=100)
    assert ringing.headers.get_list("record-route") == rr
    assert ok.headers.get_list("record-route") == rr
    assert trying.headers.get_list("record-route") == []
    h.advance(0.6)  # no ACK yet: the 200 is retransmitted (Timer G), still with the routes
    again = [m for m in h.to_caller if isinstance(m, SipResponse) and m.status == 200]
    assert len(again) >= 2 and all(m.headers.get_list("record-route") == rr for m in again)
    h.caller_ack()
    for _addr, data in (r for r in h.raw if r[0] == CALLEE):
        assert b"192.0.2.5" not in data and b"192.0.2.6" not in data
    # The relay's own BYE toward the caller follows the route set (loose routing), and
    # goes to its first hop, the proxy (§12.2.1.1).
    h.caller_side.add(("192.0.2.5", 5060))
    h.switch.hangup(next(iter(h.switch.calls.values())), h.now)
    h.pump()
    bye = h.last("C", SipRequest, method="BYE")
    assert bye.headers.get_list("route") == rr
    assert bye.uri == f"sip:{A}@{CALLER[0]}:{CALLER[1]}"
    assert next(a for a, d in h.raw if d.startswith(b"BYE")) == ("192.0.2.5", 5060)


def test_refusals_and_in_dialog_answers_carry_no_record_route() -> None:
    h = Harness()
    h.caller_invite(extra=[("Record-Route", "<sip:192.0.2.5;lr>")])  # no binding: 404
    refusal = h.last("C", SipResponse, status=404)
    assert refusal.headers.get_list("record-route") == []
