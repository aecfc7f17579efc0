"""Named policies on the SIP path, in memory (DESIGN.md "Policies", "Refusals").

T0 is 2027-01-15 08:00 UTC, 16:00 in Asia/Shanghai: a 15:00-17:00 quiet window there
holds it and ends an hour later.
"""

from __future__ import annotations

from b2bua_harness import A, B, Harness, X, sdp
from test_axe_flows import B1, keyed

from dialplan.policy import parse_policy
from relay.counters import FrequencyView, MemoryCounters
from relay.sip import SipRequest, SipResponse

QUIET = parse_policy("quiet", {"quiet_hours": {"from": "15:00", "to": "17:00",
                                               "tz": "Asia/Shanghai"}})
ONE_WAY = parse_policy("one_way", {"directions": ["a_to_b"]})
LIMITS = parse_policy("limits", {"ring_timeout": 5, "max_call_seconds": 30})
BOOK = {p.name: p for p in (QUIET, ONE_WAY, LIMITS)}


def test_quiet_hours_480_with_retry_after_and_b_calls_back() -> None:
    h = Harness(policies=BOOK, announce_refusals=True)  # a policy refusal is never announced
    h.bind(policy="quiet")
    h.caller_invite()
    resp = h.last("C", SipResponse)
    assert resp.status == 480 and resp.headers.get("retry-after") == "3600"
    assert 'text="quiet_hours"' in (resp.headers.get("reason") or "")
    assert not h.to_callee and not h.media.played
    (rec,) = h.records
    assert rec["unconnected_cause"] == "policy" and rec["policy_reason"] == "quiet_hours"
    h.caller_invite(caller=B, call_id="b-calls-back@x", branch="z9hG4bKb1")
    inv = h.last("B", SipRequest, method="INVITE")
    assert inv.uri.startswith(f"sip:{A}@")


def test_one_way_binding_refuses_the_other_way_403() -> None:
    h = Harness(policies=BOOK)
    h.bind(policy="one_way")
    h.caller_invite(caller=B)
    resp = h.last("C", SipResponse)
    assert resp.status == 403 and 'cause=21;text="direction"' in (resp.headers.get("reason")
                                                                   or "")
    assert h.records[0]["policy_reason"] == "direction"
    h.caller_invite(call_id="a-call-2@x", branch="z9hG4bKa2")
    assert h.last("B", SipRequest, method="INVITE")


def test_unknown_policy_name_routes_without_rules() -> None:
    h = Harness(policies=BOOK)
    h.bind(policy="nobody-made-this")
    h.caller_invite()
    assert h.last("B", SipRequest, method="INVITE")


def test_policy_ring_timeout_and_max_call_seconds_act_on_the_call() -> None:
    h = Harness(policies=BOOK, ring_timeout=60.0)
    h.bind(policy="limits")
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 180)
    h.advance(5.1)
    assert h.last("B", SipRequest, method="CANCEL")
    assert h.last("C", SipResponse, status=480)

    h = Harness(policies=BOOK)
    h.bind(policy="limits", max_call_seconds=600)  # both caps hold: the policy's is smaller
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    h.advance(29.0)
    assert not h.records
    h.advance(2.0)
    assert h.last("C", SipRequest, method="BYE")
    assert h.records[0]["end_reason"] == "max_duration"


def test_axe_keyed_extension_in_quiet_hours_hangs_up_without_try_again() -> None:
    h = Harness(policies=BOOK)
    h.bind(mode="AXE", a=None, b=B1, ext="101", policy="quiet")
    h.caller_invite(x=X)
    h.caller_ack()
    h.now += 1
    keyed(h, "101#")
    assert h.last("C", SipRequest, method="BYE")
    assert not any(isinstance(m, SipRequest) and m.method == "INVITE" for m in h.to_callee)
    (rec,) = h.records
    assert rec["unconnected_cause"] == "policy" and rec["policy_reason"] == "quiet_hours"
    assert rec["ext"] == "101"


def test_axe_extension_in_the_uri_under_quiet_hours_480() -> None:
    h = Harness(policies=BOOK)
    h.bind(mode="AXE", a=None, b=B1, ext="101", policy="quiet")
    h.caller_invite(x=f"{X};ext=101")
    resp = h.last("C", SipResponse)
    assert resp.status == 480 and resp.headers.get("retry-after") == "3600"


def test_blocked_caller_603_then_through_after_unblock() -> None:
    from dialplan.blocklist import Block

    h = Harness(policies=BOOK)
    h.bind()
    h.policies.block(Block(A, "harassment"))
    h.caller_invite()
    resp = h.last("C", SipResponse)
    assert resp.status == 603 and 'cause=21;text="blocked"' in (resp.headers.get("reason") or "")
    assert h.records[0]["policy_reason"] == "blocked" and not h.to_callee
    h.policies.unblock(A, None)
    h.caller_invite(call_id="a-call-2@x", branch="z9hG4bKa2")
    assert h.last("B", SipRequest, method="INVITE")


LIMITED = parse_policy("limited", {"max_calls": {"count": 2, "per": "1h"}})


def _call_and_hang_up(h: Harness, n: int, caller: str = A) -> SipResponse:
    h.caller_invite(caller=caller, call_id=f"c{n}@x", branch=f"z9hG4bKc{n}")
    resp = h.last("C", SipResponse)
    if resp.status == 100:  # routed: the callee refuses at once, the attempt still counts
        inv = h.last("B", SipRequest, method="INVITE")
        h.callee_reply(inv, 486)
        resp = h.last("C", SipResponse)
    return resp


def test_third_call_under_max_calls_2_is_603_and_the_window_slides() -> None:
    h = Harness(policies={"limited": LIMITED})
    h.bind(policy="limited")
    assert _call_and_hang_up(h, 1).status == 486
    h.advance(600)
    assert _call_and_hang_up(h, 2).status == 486
    resp = _call_and_hang_up(h, 3)
    assert resp.status == 603 and 'text="frequency"' in (resp.headers.get("reason") or "")
    assert h.records[-1]["policy_reason"] == "frequency"
    assert _call_and_hang_up(h, 4, caller=B).status == 486  # B's counter is its own
    h.advance(3000.5)  # the first call left the window
    assert _call_and_hang_up(h, 5).status == 486
    assert _call_and_hang_up(h, 6).status == 603


def test_a_stale_counter_view_fails_open_or_closed_and_is_counted() -> None:
    # A view that never reached its store (relay.counters.FrequencyView, not opened)
    # is stale: "open" decides from what it knows, "closed" refuses; both are counted.
    for fail_open, code in ((True, 486), (False, 603)):
        h = Harness(policies={"limited": LIMITED})
        view = FrequencyView(MemoryCounters(), fail_open=fail_open)
        h.policies.frequency = view
        h.bind(policy="limited")
        assert _call_and_hang_up(h, 1).status == code
        assert view.errors == 1
    assert _call_and_hang_up(h, 2).status == 603 and view.errors == 2


def test_axe_by_digits_over_the_limit_hangs_up() -> None:
    h = Harness(policies={"limited": LIMITED})
    h.bind(mode="AXE", a=None, b=B1, ext="101", policy="limited")
    for n in range(3):
        h.caller_invite(x=X, call_id=f"axe{n}@x", branch=f"z9hG4bKaxe{n}")
        h.caller_ack()
        h.now += 1
        cid = list(h.switch.calls)[-1]
        for d in "101#":
            h.digit(d, cid)
    invites = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert len(invites) == 2
    assert h.records[-1]["policy_reason"] == "frequency"


def test_max_score_refuses_above_it_before_counting() -> None:
    both = parse_policy("both", {"max_score": 40, "max_calls": {"count": 1, "per": "1h"}})
    h = Harness(policies={"both": both})
    h.bind(policy="both")
    h.scores[A] = 41
    resp = _call_and_hang_up(h, 1)
    assert resp.status == 603 and 'text="score"' in (resp.headers.get("reason") or "")
    assert h.records[-1]["policy_reason"] == "score"
    h.scores[A] = 40  # at the limit is allowed, and the refused call was not counted
    assert _call_and_hang_up(h, 2).status == 486
    assert _call_and_hang_up(h, 3).status == 603  # now the counter is full
    assert h.records[-1]["policy_reason"] == "frequency"
    for fail_open, code in ((True, 486), (False, 603)):
        h = Harness(policies={"both": both}, counter_fail_open=fail_open)
        h.bind(policy="both")
        h.media.fail["score"] = TimeoutError()
        assert _call_and_hang_up(h, 1).status == code
        assert h.switch.counts["counter_errors"] == 1


def test_decision_hook_allows_refuses_or_falls_back_and_never_sees_b() -> None:
    h = Harness(policies={"limited": LIMITED}, hook=True)
    h.bind(policy="limited", out_id="order-7")
    assert _call_and_hang_up(h, 1).status == 486
    (asked,) = h.hook_asked
    assert asked["caller"] == A and asked["x"] == X and asked["out_id"] == "order-7"
    assert B not in repr(asked)
    h.hook_allows = False
    resp = _call_and_hang_up(h, 2)
    assert resp.status == 603 and 'text="hook"' in (resp.headers.get("reason") or "")
    assert h.records[-1]["policy_reason"] == "hook"
    h.hook_allows = True
    assert _call_and_hang_up(h, 3).status == 486  # the refused call was not counted
    assert _call_and_hang_up(h, 4).status == 603  # 1 and 3 fill max_calls 2
    assert h.records[-1]["policy_reason"] == "frequency"
    for allow, code in ((True, 486), (False, 603)):
        h = Harness(hook=True, hook_fallback_allow=allow)
        h.bind()
        h.media.fail["hook"] = TimeoutError()
        assert _call_and_hang_up(h, 1).status == code
        assert h.switch.counts["hook_errors"] == 1
