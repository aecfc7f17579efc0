"""AXE calls and the relay's own voice through the call controller, in memory.

Golden transcripts for every controller phase (routing, collecting, placing, ringing,
connected, ending), with loss and retransmission, and a property test that random
digit timings never bridge a caller to the wrong binding.
"""

from __future__ import annotations

from typing import Any

import pytest
from b2bua_harness import CALLEE, A, Harness, X, sdp
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.b2bua._phases import TABLE, Phase, PhaseError, transition
from relay.b2bua.events import CallAnswered, CallEnded, CallRinging
from relay.bindings.model import State
from relay.sip import SipRequest, SipResponse

B1 = "+8613900000101"
B2 = "+8613900000202"


def axe(**kw: Any) -> Harness:
    h = Harness(**kw)
    h.bind(mode="AXE", a=None, b=B1, ext="101")
    h.bind(mode="AXE", a=None, b=B2, ext="0202")
    return h


def keyed(h: Harness, digits: str) -> None:
    for d in digits:
        h.digit(d)


def test_extension_in_the_request_uri_routes_at_once() -> None:
    for dialled, to in ((f"{X};ext=101", B1), (f"{X},0202", B2), (f"{X};ext=0202;isub=9", B2)):
        h = axe()
        h.caller_invite(x=dialled)
        inv = h.last("B", SipRequest, method="INVITE")
        assert inv.uri == f"sip:{to}@{CALLEE[0]}"
        assert inv.from_.uri.user == X  # X alone: the extension is not shown to B
        assert not h.media.played and h.last("C", SipResponse).status == 100
        h.callee_reply(inv, 200, body=sdp("bob", 32000))
        h.caller_ack()
        h.in_dialog("C", "BYE", cseq=2)
        (rec,) = h.records
        assert rec["ext"] == (dialled.split("=")[1].split(";")[0] if "=" in dialled
                              else "0202")
        assert "ivr_start_at" not in rec and rec["callee"] == to


def test_wrong_extension_in_the_uri_is_refused_404() -> None:
    h = axe()
    h.caller_invite(x=f"{X};ext=999")
    resp = h.last("C", SipResponse)
    assert resp.status == 404 and 'text="no_extension"' in (resp.headers.get("reason") or "")
    assert h.records[0]["unconnected_cause"] == "no_extension" and not h.to_callee


def test_digits_golden_transcript() -> None:
    """Routing -> collecting -> placing -> ringing -> connected -> ending."""
    h = axe()
    h.caller_invite(x=X)
    ok = h.last("C", SipResponse, status=200)
    assert b"x-local:caller" in ok.body  # the relay's own answer, not anybody's SDP
    h.caller_ack()
    (call,) = h.switch.calls.values()
    assert call.phase is Phase.COLLECTING
    assert h.media.detecting[call.id] is True
    assert h.media.playing[call.id][0] == "enter_extension"
    h.now += 2
    keyed(h, "10")
    assert call.id not in h.media.playing  # the first digit cut the prompt short
    keyed(h, "1#")
    inv = h.last("B", SipRequest, method="INVITE")
    assert inv.uri == f"sip:{B1}@{CALLEE[0]}" and b"x-local:callee" in inv.body
    assert h.media.playing[call.id][0] == "ringback" and h.media.played[-1][2] is True
    assert call.phase is Phase.PLACING
    h.callee_reply(inv, 180)
    assert call.phase is Phase.RINGING
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    assert call.phase is Phase.CONNECTED
    assert call.id not in h.media.playing and h.media.detecting[call.id] is False
    h.in_dialog("B", "BYE", cseq=2)
    assert h.transcript == [
        "C->R INVITE", "R->C 100", "R->C 200", "C->R ACK",
        "R->B INVITE", "B->R 180", "B->R 200", "R->B ACK",
        "B->R BYE", "R->B 200", "R->C BYE",
    ]
    (rec,) = h.records
    assert rec["ext"] == "101" and rec["callee"] == B1 and rec["sip_code"] == 200
    assert rec["ivr_start_at"] == int((h.now - 2) * 1000)
    assert rec["ivr_end_at"] == int(h.now * 1000)
    assert rec["prompts"] == ["enter_extension", "ringback"]
    assert rec["unconnected_cause"] == "none" and rec["released_by"] == "callee"
    kinds = [type(e) for e in h.events]
    assert kinds == [CallRinging, CallAnswered, CallEnded]
    # Digits and prompts never reach B: the callee leg saw only INVITE/ACK/200.
    assert all(b"dtmf" not in data and b"x-local:caller" not in data
               for addr, data in h.raw if addr == CALLEE)


def test_info_digits_and_a_pause_end_the_extension() -> None:
    h = axe(ivr_pause=3.0)
    h.caller_invite(x=X)
    h.caller_ack()
    for cseq, body, ctype in ((2, b"Signal=0\r\nDuration=160\r\n", "application/dtmf-relay"),
                              (3, b"2", "application/dtmf"),
                              (4, b"Signal=0\r\n", "application/dtmf-relay"),
                              (5, b"2", "application/dtmf")):
        h.in_dialog("C", "INFO", cseq=cseq, body=body, content_type=ctype)
        assert h.last("C", SipResponse).status == 200
    assert not h.to_callee
    h.advance(3.1)  # the pause ends it
    inv = h.last("B", SipRequest, method="INVITE")
    assert inv.uri == f"sip:{B2}@{CALLEE[0]}"
    assert all(not data.startswith(b"INFO") and b"Signal" not in data
               for addr, data in h.raw if addr == CALLEE)


def test_wrong_extension_three_times_then_hang_up() -> None:
    h = axe()
    h.caller_invite(x=X)
    h.caller_ack()
    for attempt in range(3):
        keyed(h, "999#")
        assert h.prompt_ends() == "not_found"
        if attempt < 2:
            assert h.prompt_ends() == "enter_extension"
    bye = h.last("C", SipRequest, method="BYE")
    assert "cause=28" in (bye.headers.get("reason") or "")
    h.caller_reply(bye, 200)
    (rec,) = h.records
    assert rec["unconnected_cause"] == "no_extension" and rec["released_by"] == "relay"
    assert rec["end_reason"] == "no_extension" and rec["ext"] is None
    assert rec["prompts"] == ["enter_extension", "not_found"] * 3
    assert not h.to_callee and not h.switch.calls


def test_silence_counts_as_a_try() -> None:
    h = axe(ivr_first_digit=10.0)
    h.caller_invite(x=X)
    h.caller_ack()
    for _ in range(3):
        h.prompt_ends()  # enter_extension ran out
        h.advance(10.5)  # no digit at all
        assert h.prompt_ends() == "not_found"
    bye = h.last("C", SipRequest, method="BYE")
    assert "cause=102" in (bye.headers.get("reason") or "")


def test_lost_200_is_retransmitted_while_collecting_and_caller_hangs_up() -> None:
    h = axe()
    h.drop = lambda tag, data: tag == "C" and data.startswith(b"SIP/2.0 200") and \
        sum(1 for t in h.transcript if t == "R->C 200 (lost)") < 1
    h.caller_invite(x=X)
    assert h.transcript[-1] == "R->C 200 (lost)"
    h.advance(0.6)  # Timer G
    assert h.transcript[-1] == "R->C 200"
    h.caller_ack()
    keyed(h, "1")
    h.in_dialog("C", "BYE", cseq=2)
    (rec,) = h.records
    # The caller gave up before any extension reached a callee.
    assert rec["released_by"] == "caller" and rec["unconnected_cause"] == "no_extension"
    assert rec["ivr_end_at"] == rec["legs"]["caller"]["end_at"]
    assert not h.to_callee


def test_callee_busy_after_ivr_byes_the_caller() -> None:
    h = axe()
    h.caller_invite(x=X)
    h.caller_ack()
    keyed(h, "101#")
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 486)
    bye = h.last("C", SipRequest, method="BYE")
    assert "cause=17" in (bye.headers.get("reason") or "")
    (rec,) = h.records
    assert rec["sip_code"] == 486 and rec["released_by"] == "callee"


def test_ring_timeout_after_ivr() -> None:
    h = axe(ring_timeout=5.0)
    h.caller_invite(x=X)
    h.caller_ack()
    keyed(h, "101#")
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.advance(5.1)
    assert h.last("B", SipRequest, method="CANCEL")
    assert h.last("C", SipRequest, method="BYE")
    assert h.records[0]["end_reason"] == "no_answer"


def test_frozen_extension_is_not_found() -> None:
    h = Harness()
    b = h.bind(mode="AXE", a=None, b=B1, ext="101")
    h.table.apply(b.replace(state=State.FROZEN, version=2))
    h.bind(mode="AXE", a=None, b=B2, ext="0202")
    h.caller_invite(x=X)
    h.caller_ack()
    keyed(h, "101#")
    assert h.prompt_ends() == "not_found" and not h.to_callee


def test_late_offer_axe_call_is_told_to_dial_the_extension() -> None:
    h = axe()
    h.caller_invite(x=X, body=b"")
    assert h.last("C", SipResponse).status == 484


def test_refusal_announced_in_early_media() -> None:
    h = Harness(announce_refusals=True)
    h.caller_invite(x="+8617000009999")
    early = h.last("C", SipResponse, status=183)
    assert b"x-local:caller" in early.body
    assert h.media.played[0][0] == "not_in_service"
    assert not any(isinstance(m, SipResponse) and m.status == 404 for m in h.to_caller)
    h.prompt_ends()
    resp = h.last("C", SipResponse, status=404)
    assert "cause=1" in (resp.headers.get("reason") or "")
    (rec,) = h.records
    assert rec["sip_code"] == 404 and rec["unconnected_cause"] == "no_binding"
    assert rec["recording"] is None and h.media.released == [rec["id"]]


def test_announcement_gives_up_at_its_limit_and_quiet_trunks_get_none() -> None:
    h = Harness(announce_refusals=True, announce_limit=4.0)
    b = h.bind()
    h.table.apply(b.replace(state=State.FROZEN, version=2))
    h.caller_invite()
    assert h.media.played[0][0] == "number_frozen"
    h.advance(4.1)
    assert h.last("C", SipResponse).status == 410
    quiet = Harness(announce_refusals=True, no_early_media=("192.0.2.0/24",))
    quiet.caller_invite(x="+8617000009999")
    # A refusal made at once is stateless (no 100 Trying first; issue 13).
    assert [m.status for m in quiet.to_caller] == [404] and not quiet.media.played


def test_caller_cancels_during_the_announcement() -> None:
    h = Harness(announce_refusals=True)
    req = h.caller_invite(x="+8617000009999")
    cancel = SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                           ("via", "from", "to", "call-id")] +
                        [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])
    h.deliver(bytes(cancel), ("192.0.2.10", 5060))
    assert [m.status for m in h.to_caller if isinstance(m, SipResponse)][-2:] == [200, 487]
    assert h.records and not h.switch.calls


def test_announcement_without_media_falls_back_to_a_plain_refusal() -> None:
    h = Harness(announce_refusals=True)
    h.media.fail["answer_local"] = RuntimeError("no player")
    h.caller_invite(x="+8617000009999")
    assert [m.status for m in h.to_caller] == [100, 404]


def test_phase_table_rejects_illegal_events() -> None:
    with pytest.raises(PhaseError, match="call in phase connected: illegal event collect"):
        transition(Phase.CONNECTED, "collect")
    assert all(nxt in Phase for nxt in TABLE.values())
    assert not any(phase is Phase.ENDED for phase, _ev in TABLE)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*"0123456789*#", "101#", "0202#", "101", "0202",
                                           "1010", "02020"]),
                          st.floats(min_value=0.0, max_value=4.0)), max_size=14))
def test_random_digit_timings_never_bridge_to_the_wrong_binding(
        keys: list[tuple[str, float]]) -> None:  # (digits keyed in one burst, pause before)
    """Whatever the caller keys and however it pauses, the call reaches a callee only
    when the extension it completed names that callee's binding."""
    h = axe(ivr_pause=3.0, ivr_first_digit=10.0)
    h.caller_invite(x=X)
    h.caller_ack()
    completed: list[str] = []
    typed = ""

    def settle() -> None:
        """Let every prompt but the ringback run out (the caller listens to them)."""
        while h.switch.calls:
            playing = h.media.playing.get(next(iter(h.switch.calls)))
            if playing is None or playing[0] == "ringback":
                return
            h.prompt_ends()

    for chunk, wait in keys:
        settle()
        if h.to_callee or not h.switch.calls:
            break
        h.advance(wait)
        if wait >= 3.0 and typed:
            completed.append(typed)
            typed = ""
        for d in chunk:  # a burst: no pause between these digits
            settle()
            if h.to_callee or not h.switch.calls:
                break
            h.digit(d)
            if d == "#":
                completed.append(typed)
                typed = ""
            elif d == "*":
                typed = ""
            elif len(typed + d) >= 8:
                completed.append(typed + d)
                typed = ""
            else:
                typed += d
    invites = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert len({m.call_id for m in invites}) <= 1  # retransmissions (Timer A) aside
    if invites:
        to = invites[0].uri.split(":")[1].split("@")[0]
        assert (to, ) in ((B1,), (B2,))
        assert {B1: "101", B2: "0202"}[to] in completed
    assert A not in "".join(d.decode(errors="replace") for _a, d in h.raw if _a == CALLEE)
