"""RFC 3261 §17 transactions over the in-memory pair harness."""

from __future__ import annotations

import random

import pytest
from sip_pair_harness import CLIENT, SERVER, Pair, make_request

from relay.sip import (
    AckReceived,
    CancelReceived,
    Dialog,
    Event,
    LocalProtocolError,
    RequestReceived,
    ResponseReceived,
    SipRequest,
    SipResponse,
    StrayResponse,
    TransactionLayer,
    TransactionStateError,
    TransactionTimeout,
    TransportError,
    build_cancel,
    build_response,
    parse_message,
)
from relay.sip._state import State


def statuses(events: list[Event]) -> list[int]:
    return [e.response.status for e in events if isinstance(e, ResponseReceived)]


def requests(events: list[Event]) -> list[RequestReceived]:
    return [e for e in events if isinstance(e, RequestReceived)]


def test_invite_100_180_200_then_ack_and_cleanup() -> None:
    p = Pair()
    key = p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    assert rr.source == CLIENT and rr.request.method == "INVITE"
    p.server.send_response(build_response(rr.request, 180, to_tag="callee1"), p.now)
    ok = build_response(rr.request, 200, to_tag="callee1",
                        extra_headers=[("Contact", "<sip:b@192.0.2.2>")])
    p.server.send_response(ok, p.now)
    p.flush()
    assert statuses(p.client_events) == [100, 180, 200]
    assert p.client.state_of(key) is State.ACCEPTED
    assert p.server.state_of(rr.key) is State.ACCEPTED
    # The 2xx ACK is end to end: the dialog builds it, the layer only carries it.
    last = p.client_events[-1]
    assert isinstance(last, ResponseReceived)
    dialog = Dialog.from_uac(make_request(), last.response, sent_by="192.0.2.1")
    p.client.send_stateless(dialog.create_ack(1), SERVER)
    p.flush()
    acks = [e for e in p.server_events if isinstance(e, AckReceived)]
    assert len(acks) == 1 and acks[0].key == rr.key
    p.advance(40)
    assert p.sent("s2c", b"SIP/2.0 200") == 1  # ACK stopped the 2xx retransmission
    assert len(p.client) == 0 and len(p.server) == 0
    assert p.client.get_timer() is None and p.server.get_timer() is None


def test_invite_486_lost_ack_is_retransmitted_by_timer_g_then_absorbed() -> None:
    acks_dropped: list[bytes] = []

    def drop(data: bytes, direction: str) -> bool:
        if data.startswith(b"ACK") and not acks_dropped:
            acks_dropped.append(data)
            return True
        return False

    p = Pair(drop=drop)
    key = p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 486, to_tag="busy1"), p.now)
    p.flush()
    assert statuses(p.client_events) == [100, 486]
    assert p.client.state_of(key) is State.COMPLETED
    assert p.server.state_of(rr.key) is State.COMPLETED  # first ACK was lost
    p.advance(0.5)  # timer G = T1: 486 re-sent, client re-ACKs, TU not told again
    assert p.sent("s2c", b"SIP/2.0 486") == 2
    assert statuses(p.client_events) == [100, 486]
    assert p.server.state_of(rr.key) is State.CONFIRMED
    ack = parse_message(acks_dropped[0])
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK" and ack.cseq.number == 1 and ack.to_tag == "busy1"
    assert ack.top_via.branch == "z9hG4bKtest1"  # §17.1.1.3: same branch as the INVITE
    p.advance(40)
    assert p.sent("s2c", b"SIP/2.0 486") == 2
    assert len(p.client) == 0 and len(p.server) == 0


def test_timer_b_times_out_with_a_retransmissions() -> None:
    p = Pair(drop=lambda data, d: d == "c2s")
    key = p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    p.advance(31.9)
    assert not any(isinstance(e, TransactionTimeout) for e in p.client_events)
    p.advance(0.2)
    assert p.client_events == [TransactionTimeout(key, "B")]
    # sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 (A doubles, no cap)
    assert p.sent("c2s", b"INVITE") == 7
    assert len(p.client) == 0


def test_retransmitted_invite_gets_last_response_and_one_event() -> None:
    p = Pair(auto_trying=False)
    req = make_request()
    p.client.send_request(req, SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    # duplicate arrives before any response: absorbed silently (no response yet)
    assert p.server.receive_datagram(bytes(req), CLIENT, p.now) == []
    assert p.server.datagrams_to_send() == []
    p.server.send_response(build_response(rr.request, 180, to_tag="t1"), p.now)
    p.flush()
    assert p.server.receive_datagram(bytes(req), CLIENT, p.now) == []
    [(data, addr)] = p.server.datagrams_to_send()
    assert data.startswith(b"SIP/2.0 180") and addr == CLIENT
    assert len(requests(p.server_events)) == 1


def test_client_retransmission_resends_last_provisional() -> None:
    p = Pair()
    p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    p.advance(0.4)
    assert p.sent("c2s", b"INVITE") == 1  # 100 Trying stopped timer A
    [rr] = requests(p.server_events)
    assert p.sent("s2c", b"SIP/2.0 100") == 1
    p.server.receive(rr.request, CLIENT, p.now)
    assert p.server.datagrams_to_send()[0][0].startswith(b"SIP/2.0 100")


def test_non_invite_timer_e_and_f() -> None:
    p = Pair(drop=lambda data, d: d == "c2s")
    key = p.client.send_request(make_request("OPTIONS", "z9hG4bKopt"), SERVER, p.now)
    p.flush()
    p.advance(40)
    # 0, .5, 1.5, 3.5, 7.5 then every T2=4: 11.5 ... 31.5
    assert p.sent("c2s", b"OPTIONS") == 11
    assert p.client_events == [TransactionTimeout(key, "F")]


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    p = Pair(drop=lambda data, d: d == "c2s" and p.sent("c2s", b"OPTIONS") > 1)
    p.client.send_request(make_request("OPTIONS", "z9hG4bKopt2"), SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 100), p.now)
    p.flush()
    assert statuses(p.client_events) == [100]
    p.advance(0.5)  # the E armed in Trying still fires...
    assert p.sent("c2s", b"OPTIONS") == 2
    p.advance(3.9)  # ...and is re-armed with T2, not 2*T1 (§17.1.2.2)
    assert p.sent("c2s", b"OPTIONS") == 2
    p.advance(0.2)
    assert p.sent("c2s", b"OPTIONS") == 3


def test_non_invite_final_absorbs_retransmission_then_timer_j() -> None:
    p = Pair()
    req = make_request("BYE", "z9hG4bKbye")
    p.client.send_request(req, SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 200), p.now)
    p.flush()
    assert statuses(p.client_events) == [200]
    assert p.server.receive(req, CLIENT, p.now) == []
    assert p.server.datagrams_to_send()[0][0].startswith(b"SIP/2.0 200")
    p.advance(31.9)
    assert len(p.server) == 1  # timer J = 64*T1
    p.advance(0.2)
    assert len(p.server) == 0 and len(p.client) == 0


def test_lost_2xx_is_retransmitted_until_ack() -> None:
    dropped: list[int] = []

    def drop(data: bytes, d: str) -> bool:
        if data.startswith(b"SIP/2.0 200") and not dropped:
            dropped.append(1)
            return True
        return False

    p = Pair(drop=drop)
    p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 200, to_tag="x"), p.now)
    p.flush()
    assert statuses(p.client_events) == [100]
    p.advance(0.5)
    assert statuses(p.client_events) == [100, 200]
    p.advance(64)
    timeouts = [e for e in p.server_events if isinstance(e, TransactionTimeout)]
    assert timeouts == [TransactionTimeout(rr.key, "L")]  # never ACKed: TU should BYE


def test_cancel_matches_invite_server_transaction() -> None:
    p = Pair()
    invite = make_request()
    ikey = p.client.send_request(invite, SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 180, to_tag="c1"), p.now)
    p.flush()
    p.client.send_request(build_cancel(invite), SERVER, p.now)
    p.flush()
    [cancel] = [e for e in p.server_events if isinstance(e, CancelReceived)]
    assert cancel.invite_key == rr.key
    p.server.send_response(build_response(cancel.request, 200, to_tag="c1"), p.now)
    p.server.send_response(build_response(rr.request, 487, to_tag="c1"), p.now)
    p.flush()
    assert sorted(statuses(p.client_events)) == [100, 180, 200, 487]
    assert p.client.state_of(ikey) is State.COMPLETED
    assert p.server.state_of(rr.key) is State.CONFIRMED
    p.advance(40)
    assert len(p.client) == 0 and len(p.server) == 0


def _cancelled_after_180(p: Pair) -> tuple[object, RequestReceived]:
    """INVITE, 100/180 back, then our CANCEL answered 200: the INVITE is in Proceeding."""
    invite = make_request()
    ikey = p.client.send_request(invite, SERVER, p.now)
    p.flush()
    [rr] = requests(p.server_events)
    p.server.send_response(build_response(rr.request, 180, to_tag="c1"), p.now)
    p.flush()
    p.client.send_request(build_cancel(invite), SERVER, p.now)
    p.flush()
    [cancel] = [e for e in p.server_events if isinstance(e, CancelReceived)]
    p.server.send_response(build_response(cancel.request, 200, to_tag="c1"), p.now)
    p.flush()
    assert p.client.state_of(ikey) is State.PROCEEDING
    return ikey, rr


def test_cancelled_invite_without_final_response_ends_64_t1_after_the_cancel() -> None:
    """RFC 3261 §9.1: the peer answers our CANCEL but never the INVITE (seen behind a
    proxy when a 487 lost its Via): the INVITE client transaction must not live for ever."""
    p = Pair()
    p.advance(3.0)
    ikey, _ = _cancelled_after_180(p)
    p.advance(31.9)  # 64*T1 counted from the CANCEL, not from the INVITE
    assert p.client.state_of(ikey) is State.PROCEEDING
    assert not [e for e in p.client_events if isinstance(e, TransactionTimeout)]
    p.advance(0.2)
    assert [e for e in p.client_events if isinstance(e, TransactionTimeout)] == [
        TransactionTimeout(ikey, "B")]
    assert p.client.state_of(ikey) is None and p.client.get_timer() is None
    p.advance(40)  # the server side still ends by itself (its INVITE got no final)
    assert len(p.client) == 0


def test_cancelled_invite_487_or_crossing_200_stops_the_cancel_guard() -> None:
    for status in (487, 200):
        p = Pair()
        ikey, rr = _cancelled_after_180(p)
        p.server.send_response(build_response(rr.request, status, to_tag="c1"), p.now)
        p.flush()
        assert p.client.state_of(ikey) is (State.COMPLETED if status == 487
                                           else State.ACCEPTED)
        p.advance(40)  # Timer B must not fire in Completed or Accepted
        assert not [e for e in p.client_events if isinstance(e, TransactionTimeout)]
        assert len(p.client) == 0


def test_cancel_without_invite_has_no_invite_key() -> None:
    layer = TransactionLayer()
    events = layer.receive(build_cancel(make_request()), CLIENT, 0.0)
    assert isinstance(events[0], CancelReceived) and events[0].invite_key is None


def test_reliable_transport_skips_retransmissions_and_zero_timers() -> None:
    p = Pair(reliable=True, drop=lambda data, d: d == "c2s")
    key = p.client.send_request(make_request(), SERVER, p.now)
    p.flush()
    p.advance(31.9)
    assert p.sent("c2s", b"INVITE") == 1
    p.advance(0.2)
    assert p.client_events == [TransactionTimeout(key, "B")]
    q = Pair(reliable=True)
    q.client.send_request(make_request("OPTIONS", "z9hG4bKo"), SERVER, q.now)
    q.flush()
    [rr] = requests(q.server_events)
    q.server.send_response(build_response(rr.request, 200), q.now)
    q.flush()
    assert len(q.server) == 0 and len(q.client) == 0  # J and K are zero on TCP
    r = Pair(reliable=True)
    r.client.send_request(make_request(), SERVER, r.now)
    r.flush()
    [rr] = requests(r.server_events)
    r.server.send_response(build_response(rr.request, 603, to_tag="d"), r.now)
    r.flush()
    assert len(r.server) == 0 and len(r.client) == 0  # D and I are zero on TCP


def test_thousand_transactions_under_loss_complete_without_leak() -> None:
    p = Pair(loss=0.1, dup=0.1, reorder=0.3, seed=7)
    rng = random.Random(3)
    answered: set = set()

    def on_server(ev: object) -> None:
        if isinstance(ev, RequestReceived) and ev.key not in answered:
            answered.add(ev.key)
            code = rng.choice([200, 486]) if ev.request.method == "INVITE" else 200
            p.server.send_response(build_response(ev.request, code, to_tag="t"), p.now)
        elif isinstance(ev, AckReceived):
            pass

    def on_client(ev: object) -> None:
        if isinstance(ev, ResponseReceived) and ev.response.status == 200 \
                and ev.key.method == "INVITE":
            ack = make_request("ACK", "z9hG4bKack" + ev.response.call_id,
                               call_id=ev.response.call_id)
            p.client.send_stateless(ack, SERVER)

    p.on_server, p.on_client = on_server, on_client
    keys = []
    for i in range(1000):
        method = "INVITE" if i % 2 else "OPTIONS"
        keys.append(p.client.send_request(
            make_request(method, f"z9hG4bK{i}", call_id=f"c{i}"), SERVER, p.now))
        p.now += 0.001
    p.flush()
    p.advance(200)
    finals = {e.key for e in p.client_events
              if isinstance(e, ResponseReceived) and e.response.status >= 200}
    timeouts = {e.key for e in p.client_events if isinstance(e, TransactionTimeout)}
    assert finals | timeouts == set(keys)
    assert len(finals) > 990  # 10% loss each way is recovered by retransmission
    assert len(p.client) == 0 and len(p.server) == 0
    assert p.client.get_timer() is None and p.server.get_timer() is None
    assert not p.client._heap and not p.server._heap and not p.server._accepted


def test_illegal_local_transition_names_state_and_event() -> None:
    layer = TransactionLayer()
    req = make_request("OPTIONS", "z9hG4bKill")
    layer.receive(req, CLIENT, 0.0)
    layer.send_response(build_response(req, 200), 0.0)
    with pytest.raises(TransactionStateError, match=r"Completed.*send_3456"):
        layer.send_response(build_response(req, 500), 0.0)


def test_local_errors() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(make_request("OPTIONS", "nocookie"), SERVER, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(make_request("ACK"), SERVER, 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_response(build_response(make_request(), 200), 0.0)


def test_stray_response_and_stray_ack_reach_the_tu() -> None:
    layer = TransactionLayer()
    resp = build_response(make_request(), 200, to_tag="z")
    [ev] = layer.receive(resp, SERVER, 0.0)
    assert isinstance(ev, StrayResponse) and ev.response is resp
    [ack] = layer.receive(make_request("ACK", "z9hG4bKnew"), CLIENT, 0.0)
    assert isinstance(ack, AckReceived) and ack.key is None


def test_garbage_datagram_gets_400_or_nothing() -> None:
    layer = TransactionLayer()
    assert layer.receive_datagram(b"\x00\xffgarbage", CLIENT, 0.0) == []
    assert layer.datagrams_to_send() == []
    bad = bytes(make_request()).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    assert layer.receive_datagram(bad, CLIENT, 0.0) == []
    [(data, addr)] = layer.datagrams_to_send()
    reply = parse_message(data)
    assert isinstance(reply, SipResponse)
    assert addr == CLIENT and reply.status == 400 and reply.call_id == "call-1@example.com"
    assert layer.stats["malformed"] == 2


def test_rfc2543_request_without_cookie_is_matched_by_call_id_cseq_from_tag() -> None:
    layer = TransactionLayer()
    req = make_request("INVITE", "legacy-branch")
    req.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060")  # no branch at all
    [ev] = [e for e in layer.receive(req, CLIENT, 0.0) if isinstance(e, RequestReceived)]
    assert ev.key.branch.startswith("rfc2543;")
    layer.datagrams_to_send()
    assert layer.receive(req, CLIENT, 0.1) == []  # retransmission absorbed
    [(trying, _)] = layer.datagrams_to_send()
    assert trying.startswith(b"SIP/2.0 100")
    layer.send_response(build_response(req, 404, to_tag="nf"), 0.2)
    assert layer.datagrams_to_send()[0][0].startswith(b"SIP/2.0 404")
    ack = make_request("ACK", "other")
    ack.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060")
    assert layer.receive(ack, CLIENT, 0.3) == []
    assert layer.state_of(ev.key) is State.CONFIRMED


def test_retransmitted_invite_after_final_gets_the_final_again() -> None:
    layer = TransactionLayer(auto_trying=False)
    req = make_request()
    layer.receive(req, CLIENT, 0.0)
    layer.send_response(build_response(req, 486, to_tag="b"), 0.0)
    layer.datagrams_to_send()
    assert layer.receive(req, CLIENT, 0.2) == []
    [(data, addr)] = layer.datagrams_to_send()
    assert data.startswith(b"SIP/2.0 486") and addr == CLIENT


def test_transport_error_terminates_and_reports() -> None:
    layer = TransactionLayer()
    key = layer.send_request(make_request("OPTIONS", "z9hG4bKterr"), SERVER, 0.0)
    assert layer.transport_error(key, 0.1) == [TransportError(key)]
    assert len(layer) == 0 and layer.get_timer() is None
    assert layer.transport_error(key, 0.2) == []  # already gone: nothing to report


def test_get_timer_is_earliest_live_deadline() -> None:
    layer = TransactionLayer()
    assert layer.get_timer() is None
    layer.send_request(make_request("OPTIONS", "z9hG4bKt1"), SERVER, 1.0)
    assert layer.get_timer() == 1.5  # timer E = T1
    key = layer.send_request(make_request("INVITE", "z9hG4bKt2"), SERVER, 1.2)
    assert layer.get_timer() == 1.5
    layer.transport_error(key, 1.3)
    assert layer.handle_timer(1.49) == []
    layer.handle_timer(1.5)
    assert layer.get_timer() == 2.5  # E doubled to 2*T1
