"""The sans-IO relay session: latching, strangers, NAT, both directions, RTCP."""

from __future__ import annotations

import time

from relay.rtp.session import RelaySession, Side

CALLER_IP, CALLEE_IP = "10.1.1.1", "10.2.2.2"
PKT = b"\x80\x00" + bytes(170)


def session() -> RelaySession:
    s = RelaySession(100.0)
    s.set_remote(Side.CALLER, CALLER_IP, 4000)
    s.set_remote(Side.CALLEE, CALLEE_IP, 6000, 6005)
    return s


def test_forwards_to_sdp_address_until_the_other_side_latches() -> None:
    s = session()
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 101.0) == (CALLEE_IP, 6000)
    assert s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 101.0) == (CALLER_IP, 4000)
    st = s.stats(Side.CALLER)
    assert (st.packets, st.bytes, st.dropped, st.latched) == (1, len(PKT), 0, (CALLER_IP, 4000))


def test_nat_same_ip_other_port_latches_and_is_used_for_the_reply() -> None:
    s = session()
    assert s.receive(Side.CALLEE, PKT, (CALLEE_IP, 61000), 1.0) == (CALLER_IP, 4000)
    # The reply to the callee goes to where it really sends from, not its SDP port.
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 1.0) == (CALLEE_IP, 61000)
    # Once latched, the SDP port itself is a stranger.
    assert s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 1.0) is None
    assert s.stats(Side.CALLEE).dropped == 1


def test_strangers_are_dropped_and_counted() -> None:
    s = session()
    assert s.receive(Side.CALLER, PKT, ("6.6.6.6", 4000), 1.0) is None  # before latching
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 1.0) is not None
    assert s.receive(Side.CALLER, PKT, ("6.6.6.6", 4000), 1.0) is None
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4002), 1.0) is None
    st = s.stats(Side.CALLER)
    assert (st.packets, st.dropped) == (1, 3)
    assert s.stats(Side.CALLEE).packets == 0


def test_no_sdp_yet_means_drop() -> None:
    s = RelaySession(0.0)
    assert s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 1.0) is None
    assert s.stats(Side.CALLEE).dropped == 1


def test_latch_any_ip_for_peers_behind_nat_with_private_sdp() -> None:
    s = RelaySession(0.0, latch_any_ip=True)
    s.set_remote(Side.CALLER, "192.168.0.10", 4000)
    s.set_remote(Side.CALLEE, CALLEE_IP, 6000)
    assert s.receive(Side.CALLER, PKT, ("203.0.113.5", 33000), 1.0) == (CALLEE_IP, 6000)
    assert s.receive(Side.CALLER, PKT, ("203.0.113.6", 33000), 1.0) is None


def test_rtcp_is_relayed_on_its_own_latch() -> None:
    s = session()
    rr = b"\x80\xc9\x00\x01" + bytes(4)
    # Callee's a=rtcp says 6005; caller's RTCP defaults to RTP + 1 (RFC 3605).
    assert s.receive_rtcp(Side.CALLER, rr, (CALLER_IP, 4001), 1.0) == (CALLEE_IP, 6005)
    assert s.receive_rtcp(Side.CALLEE, rr, (CALLEE_IP, 7777), 1.0) == (CALLER_IP, 4001)
    assert s.receive_rtcp(Side.CALLER, rr, ("6.6.6.6", 4001), 1.0) is None
    assert s.stats(Side.CALLER).rtcp_dropped == 1
    assert s.stats(Side.CALLER).rtcp_packets == 1
    assert s.stats(Side.CALLER).packets == 0  # RTP counters untouched


def test_hold_and_move() -> None:
    s = session()
    s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 1.0)
    s.set_remote(Side.CALLEE, "0.0.0.0", 6000)  # callee holds: send nothing to it
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 2.0) is None
    assert s.stats(Side.CALLER).dropped == 0  # accepted, just not forwarded
    s.set_remote(Side.CALLEE, "10.9.9.9", 8000)  # resumed from a new address
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 3.0) == ("10.9.9.9", 8000)
    assert s.receive(Side.CALLEE, PKT, ("10.9.9.9", 8000), 3.0) == (CALLER_IP, 4000)


def test_reinvite_to_a_new_port_relatches_and_same_sdp_keeps_the_latch() -> None:
    s = session()
    s.receive(Side.CALLER, PKT, (CALLER_IP, 40000), 1.0)  # NAT port
    s.set_remote(Side.CALLER, CALLER_IP, 4000)  # a session refresh: nothing moved
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 40000), 2.0) is not None
    s.set_remote(Side.CALLER, CALLER_IP, 4100)  # the phone moved its media port
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 41000), 3.0) is not None
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 40000), 3.0) is None


def test_hold_with_the_same_address_keeps_the_latch() -> None:
    s = session()
    s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 1.0)
    s.set_remote(Side.CALLEE, None, 6000)
    # The holding side may still send (music on hold); it is accepted and relayed.
    assert s.receive(Side.CALLEE, PKT, (CALLEE_IP, 6000), 2.0) == (CALLER_IP, 4000)
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 2.0) is None
    s.set_remote(Side.CALLEE, CALLEE_IP, 6000)  # resume
    assert s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 3.0) == (CALLEE_IP, 6000)


def test_idle_timer_counts_from_start_then_from_last_packet() -> None:
    s = session()
    assert s.idle_for(130.0) == 30.0
    s.receive(Side.CALLER, PKT, (CALLER_IP, 4000), 140.0)
    assert s.idle_for(150.0) == 10.0
    assert s.side_idle_for(Side.CALLEE, 150.0) == 50.0
    s.receive(Side.CALLER, PKT, ("6.6.6.6", 1), 149.0)  # strangers do not keep it alive
    assert s.idle_for(150.0) == 10.0
    s.mark_active(148.0)  # answered: the clock restarts
    assert s.idle_for(150.0) == 2.0


def test_telephone_event_passes_unchanged_and_tap_sees_accepted_packets_only() -> None:
    seen: list[tuple[int, bytes, float]] = []
    s = session()
    s.tap = lambda side, data, now: seen.append((side, data, now))
    dtmf = bytes.fromhex("80e50001000000a0cafebabe058a0320")
    assert s.receive(Side.CALLER, dtmf, (CALLER_IP, 4000), 5.0) == (CALLEE_IP, 6000)
    s.receive(Side.CALLER, dtmf, ("6.6.6.6", 4000), 5.0)
    assert len(seen) == 1 and seen[0][1] is dtmf  # the same object, no copy


def test_hot_path_cost() -> None:
    """Guards against an accidental slow path; the real figure is in the report."""
    s = session()
    src = (CALLER_IP, 4000)
    s.receive(Side.CALLER, PKT, src, 0.0)
    n = 100_000
    recv = s.receive
    t = time.perf_counter()
    for _ in range(n):
        recv(0, PKT, (CALLER_IP, 4000), 1.0)
    per_packet_us = (time.perf_counter() - t) / n * 1e6
    assert per_packet_us < 20
    assert s.stats(Side.CALLER).packets == n + 1


def test_rtcp_latches_on_the_a_rtcp_address() -> None:
    s = RelaySession(0.0)
    s.set_remote(Side.CALLER, CALLER_IP, 4000, 4555, "10.1.1.99")
    s.set_remote(Side.CALLEE, CALLEE_IP, 6000)
    rr = b"\x80\xc9\x00\x01" + bytes(4)
    assert s.receive_rtcp(Side.CALLER, rr, (CALLER_IP, 4001), 1.0) is None
    assert s.receive_rtcp(Side.CALLER, rr, ("10.1.1.99", 4555), 1.0) == (CALLEE_IP, 6001)
    assert s.receive_rtcp(Side.CALLEE, rr, (CALLEE_IP, 6001), 1.0) == ("10.1.1.99", 4555)


def test_accept_and_destination_are_receive_in_two_halves() -> None:
    s, plain = session(), session()
    taps: list[tuple[int, bytes]] = []
    s.tap = lambda side, data, now: taps.append((side, data))
    src = (CALLER_IP, 4000)
    assert s.accept(Side.CALLER, PKT, src, 1.0) is True
    assert s.destination(Side.CALLEE) == plain.receive(Side.CALLER, PKT, src, 1.0)
    assert s.accept(Side.CALLER, PKT, ("6.6.6.6", 1), 1.0) is False  # latched: a stranger
    assert taps == [(Side.CALLER, PKT)]
    assert (s.stats(Side.CALLER).packets, s.stats(Side.CALLER).dropped) == (1, 1)
    s.set_remote(Side.CALLEE, None, 0)  # hold: nothing is sent to it
    assert s.destination(Side.CALLEE) is None
