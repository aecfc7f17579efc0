"""Many outbound trunks (issue 18 point 3): the plan a call follows, failover on 408,
503 and silence before anything rang, OPTIONS probes, and the trunk in the record."""

from __future__ import annotations

import pytest
from b2bua_harness import CALLEE, Harness, sdp

from relay.b2bua.trunks import Trunk, TrunkSet, parse_trunks
from relay.sip import SipRequest, SipResponse, build_response

SECOND = ("192.0.2.30", 5090)


def _trunks(*items: dict[str, object]) -> tuple[Trunk, ...]:
    return tuple(parse_trunks(items))


def _two(probe: float = 0.0) -> Harness:
    h = Harness(outbound_trunks=_trunks(
        {"name": "first", "host": CALLEE[0], "port": CALLEE[1], "priority": 1},
        {"name": "second", "host": SECOND[0], "port": SECOND[1], "priority": 2}),
        probe_interval=probe)
    h.bind()
    return h


def _invites_to(h: Harness, addr: tuple[str, int]) -> list[SipRequest]:
    seen: dict[str, SipRequest] = {}
    for a, data in h.raw:
        if a == addr and data.startswith(b"INVITE "):
            from relay.sip import parse_message
            msg = parse_message(data)
            assert isinstance(msg, SipRequest)
            seen.setdefault(str(msg.top_via.params.get("branch")), msg)
    return list(seen.values())


def test_a_503_from_the_first_trunk_fails_over_to_the_second() -> None:
    h = _two()
    h.caller_invite()
    (first,) = _invites_to(h, CALLEE)
    h.callee_reply(first, 503)
    (second,) = _invites_to(h, SECOND)
    assert second.call_id != first.call_id  # a new dialog, the same offer
    assert second.body == first.body
    assert second.uri.endswith(f"@{SECOND[0]}")
    # The caller heard nothing of the first trunk's 503.
    assert not [m for m in h.to_caller if isinstance(m, SipResponse) and m.status >= 300]
    ok = build_response(second, 200, to_tag="t2", body=sdp("bob", 32000), extra_headers=[
        ("Contact", f"<sip:b@{SECOND[0]}:{SECOND[1]}>"), ("Content-Type", "application/sdp")])
    h.deliver(bytes(ok), SECOND)
    assert h.last("C", SipResponse, status=200)
    h.caller_ack()
    h.in_dialog("C", "BYE", cseq=2)
    assert any(a == SECOND and d.startswith(b"BYE") for a, d in h.raw)
    (rec,) = h.records
    assert rec["trunk"] == "second" and rec["failovers"] == 1 and rec["sip_code"] == 200
    assert not h.switch.dialog_count  # the first trunk's dialog was forgotten too
    assert not h.switch.trunks.by_name["first"].up  # marked down until a probe says up


def test_a_silent_trunk_fails_over_at_timer_b() -> None:
    h = _two()
    h.caller_invite()
    h.drop = lambda tag, _data: tag == "B"  # the first trunk never hears anything
    h.advance(33)  # Timer B (64*T1)
    assert _invites_to(h, SECOND)


def test_after_a_ring_there_is_no_failover() -> None:
    h = _two()
    h.caller_invite()
    (first,) = _invites_to(h, CALLEE)
    h.callee_reply(first, 180)
    h.callee_reply(first, 503)
    assert not _invites_to(h, SECOND)
    assert h.last("C", SipResponse).status == 503
    assert h.records[0]["trunk"] == "first"


def test_a_busy_callee_is_not_a_trunk_failure() -> None:
    h = _two()
    h.caller_invite()
    (first,) = _invites_to(h, CALLEE)
    h.callee_reply(first, 486)
    assert not _invites_to(h, SECOND) and h.last("C", SipResponse).status == 486


def test_the_last_trunk_failing_gives_the_caller_503() -> None:
    h = _two()
    h.caller_invite()
    h.callee_reply(_invites_to(h, CALLEE)[0], 503)
    second = _invites_to(h, SECOND)[0]
    h.deliver(bytes(build_response(second, 503, to_tag="t2")), SECOND)
    resp = h.last("C", SipResponse)
    assert resp.status == 503 and "retry-after" not in resp.headers
    assert h.records[0]["failovers"] == 1 and h.records[0]["trunk"] == "second"


def test_probes_mark_trunks_and_the_plan_skips_a_down_one() -> None:
    h = _two(probe=10.0)
    h.advance(0.01)  # the first probes go out at once
    probes = [(a, d) for a, d in h.raw if d.startswith(b"OPTIONS ")]
    assert {a for a, _ in probes} == {CALLEE, SECOND}
    for addr, data in probes:
        from relay.sip import parse_message
        req = parse_message(data)
        assert isinstance(req, SipRequest)
        assert b"+86" not in data  # a probe names no party
        status = 503 if addr == CALLEE else 404  # any answer but 503 means "there"
        h.deliver(bytes(build_response(req, status, to_tag="p")), addr)
    assert [t.up for t in h.switch.trunks.trunks] == [False, True]
    h.caller_invite()
    assert not _invites_to(h, CALLEE) and _invites_to(h, SECOND)
    h.advance(10)  # the next round goes out again
    assert len([d for _a, d in h.raw if d.startswith(b"OPTIONS ")]) >= 4


def test_a_lone_outbound_address_is_never_probed() -> None:
    h = Harness()
    h.advance(100)
    assert not [d for _a, d in h.raw if d.startswith(b"OPTIONS ")]


def test_weights_share_a_priority_and_priorities_order_it() -> None:
    picks = iter([0.1])
    ts = TrunkSet(list(_trunks({"name": "a", "host": "192.0.2.1", "weight": 1},
                               {"name": "b", "host": "192.0.2.2", "weight": 3},
                               {"name": "c", "host": "192.0.2.3", "priority": 2})),
                  rand=lambda: next(picks))
    assert [t.name for t, _a in ts.plan()] == ["a", "b", "c"]  # 0.1*4 < 1: a first
    picks = iter([0.9])
    ts._rand = lambda: next(picks)
    assert [t.name for t, _a in ts.plan()] == ["b", "a", "c"]
    ts.mark(ts.by_name["a"], False)
    assert [t.name for t, _a in ts.plan()] == ["b", "c", "a"]  # a down one only last


def test_weight_zero_trunks_come_last_in_their_priority_and_once() -> None:
    ts = TrunkSet(list(_trunks({"name": "z1", "host": "192.0.2.1", "weight": 0},
                               {"name": "z2", "host": "192.0.2.2", "weight": 0},
                               {"name": "w", "host": "192.0.2.3", "weight": 5})),
                  rand=lambda: 0.99)
    assert [t.name for t, _a in ts.plan()] == ["w", "z1", "z2"]


def test_a_named_trunk_waits_for_its_address() -> None:
    ts = TrunkSet(list(_trunks({"name": "dns", "host": "trunk.example", "priority": 1},
                               {"name": "ip", "host": "192.0.2.9", "priority": 2})))
    assert [t.name for t, _a in ts.plan()] == ["ip"]
    ts.set_targets("dns", [("192.0.2.77", 5071)])
    assert [t.name for t, _a in ts.plan()] == ["dns", "ip"]
    assert ts.by_name["dns"].address == ("192.0.2.77", 5071)


SRV_A, SRV_B = ("192.0.2.41", 5060), ("192.0.2.42", 5060)


def _srv_trunk(probe: float = 0.0) -> Harness:
    """One trunk named by DNS whose name resolved to two targets (SRV order A, B)."""
    h = Harness(outbound_trunks=_trunks({"name": "carrier", "host": "carrier.example"}),
                probe_interval=probe)
    h.switch.trunks.set_targets("carrier", [SRV_A, SRV_B])
    h.bind()
    return h


def test_a_failed_srv_target_is_tried_last_by_the_next_call_not_the_trunk() -> None:
    """RFC 3263 §4.3: up and down are per target. The first call fails over from A to B;
    the next goes to B first (no failover, no wait for A's Timer B); the trunk stays up
    while B is; A answering a later call brings it back to the front."""
    h = _srv_trunk()
    h.caller_invite()
    (first,) = _invites_to(h, SRV_A)
    h.deliver(bytes(build_response(first, 503, to_tag="a1")), SRV_A)
    (to_b,) = _invites_to(h, SRV_B)
    trunks = h.switch.trunks
    carrier = trunks.by_name["carrier"]
    assert carrier.up and carrier.down == {SRV_A: "call failed 503"}
    assert [a for _t, a in trunks.plan()] == [SRV_B, SRV_A]
    h.deliver(bytes(build_response(to_b, 486, to_tag="b1")), SRV_B)
    h.caller_invite(call_id="second-call", branch="z9hG4bKa2")
    assert len(_invites_to(h, SRV_A)) == 1 and len(_invites_to(h, SRV_B)) == 2
    trunks.mark(carrier, False, "OPTIONS timeout", SRV_B)
    assert not carrier.up and carrier.down[SRV_A] == "call failed 503"
    assert [a for _t, a in trunks.plan()] == [SRV_A, SRV_B]  # all down: resolver order
    trunks.mark(carrier, True, target=SRV_A)
    assert carrier.up and carrier.address == SRV_A
    trunks.set_targets("carrier", [SRV_A])  # B no longer resolved: its state goes too
    assert carrier.down == {}


def test_probes_go_to_every_srv_target_and_mark_each() -> None:
    h = _srv_trunk(probe=10.0)
    h.advance(0.01)
    probes = [(a, d) for a, d in h.raw if d.startswith(b"OPTIONS ")]
    assert {a for a, _ in probes} == {SRV_A, SRV_B}
    from relay.sip import parse_message
    for addr, data in probes:
        if addr == SRV_B:
            req = parse_message(data)
            assert isinstance(req, SipRequest)
            h.deliver(bytes(build_response(req, 200, to_tag="p")), addr)
    h.drop = lambda tag, _data: tag == "B"  # A never answers: Timer F
    h.advance(33)
    carrier = h.switch.trunks.by_name["carrier"]
    assert carrier.down == {SRV_A: "OPTIONS timeout"} and carrier.up
    h.drop = lambda tag, _data: False
    h.caller_invite()
    assert _invites_to(h, SRV_B) and not _invites_to(h, SRV_A)


def test_no_trunk_with_an_address_refuses_503() -> None:
    h = Harness(outbound_trunks=_trunks({"name": "dns", "host": "trunk.example"}))
    h.bind()
    h.caller_invite()
    assert h.last("C", SipResponse).status == 503
    assert not [d for _a, d in h.raw if d.startswith(b"INVITE ")]


@pytest.mark.parametrize("item, words", [
    ({"port": 5060}, "host is required"),
    ({"host": "192.0.2.1", "port": 0}, "port"),
    ({"host": "192.0.2.1", "weight": -1}, "weight"),
    ({"host": "192.0.2.1", "prio": 1}, "unknown keys"),
])
def test_bad_trunk_tables_are_named(item: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_trunks([item])
