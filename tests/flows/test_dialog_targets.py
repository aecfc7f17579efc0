"""Where in-dialog requests go (RFC 3261 §12.2.1.1): the route set's first hop, else the
remote target (the peer's Contact); to the source address only for trunks configured
`symmetric` (NAT) and on TCP. Issue 18, point 1."""

from __future__ import annotations

from b2bua_harness import CALLEE, CALLER, RELAY, A, B, Harness, X, sdp

from relay.sip import SipRequest, SipResponse, build_response, parse_message

CONTACT = ("192.0.2.77", 5099)  # the caller's Contact: not where its INVITE came from


def _answered(h: Harness, contact: tuple[str, int] = CONTACT,
              extra: list[tuple[str, str]] | None = None) -> SipRequest:
    h.caller_side.add(contact)
    h.caller_invite(contact=f"<sip:{A}@{contact[0]}:{contact[1]}>", extra=extra)
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    return inv


def _sent(h: Harness, method: str) -> list[tuple[tuple[str, int], SipRequest]]:
    out = []
    for addr, data in h.raw:
        if data.startswith(method.encode() + b" "):
            msg = parse_message(data)
            assert isinstance(msg, SipRequest)
            out.append((addr, msg))
    return out


def test_bye_to_the_caller_goes_to_its_contact_not_its_source() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("B", "BYE", cseq=5)
    ((addr, bye),) = _sent(h, "BYE")[-1:]
    assert addr == CONTACT
    assert bye.uri == f"sip:{A}@{CONTACT[0]}:{CONTACT[1]}"


def test_a_symmetric_trunk_gets_in_dialog_requests_at_its_source() -> None:
    h = Harness(symmetric=("192.0.2.10/32",))
    h.bind()
    _answered(h)
    h.in_dialog("B", "BYE", cseq=5)
    addr, bye = _sent(h, "BYE")[-1]
    assert addr == CALLER
    assert bye.uri == f"sip:{A}@{CONTACT[0]}:{CONTACT[1]}"  # the target is still the Contact


def test_a_strict_router_gets_the_request_uri_and_the_target_as_last_route() -> None:
    h = Harness()
    h.bind()
    strict = ("192.0.2.8", 5062)
    h.caller_side.add(strict)
    _answered(h, extra=[("Record-Route", f"<sip:{strict[0]}:{strict[1]}>")])
    h.in_dialog("B", "BYE", cseq=5)
    addr, bye = _sent(h, "BYE")[-1]
    assert addr == strict
    assert bye.uri == f"sip:{strict[0]}:{strict[1]}"
    assert bye.headers.get_list("route") == [f"<sip:{A}@{CONTACT[0]}:{CONTACT[1]}>"]


def test_the_callee_legs_route_set_comes_from_its_2xx() -> None:
    """§12.1.2: the UAC side's route set is the 2xx's Record-Route reversed; ACK and BYE
    go to its first hop, with the callee's Contact as Request-URI."""
    h = Harness()
    h.bind()
    h.caller_invite()
    inv = h.last("B", SipRequest, method="INVITE")
    proxy = ("192.0.2.21", 5070)
    rr = [f"<sip:{proxy[0]}:{proxy[1]};lr>", "<sip:192.0.2.22;lr>"]  # as the 2xx lists them
    ok = build_response(inv, 200, to_tag="btag1", body=sdp("bob", 32000), extra_headers=[
        ("Contact", f"<sip:{B}@192.0.2.23:5090>"), ("Content-Type", "application/sdp"),
        *(("Record-Route", r) for r in rr)])
    h.deliver(bytes(ok), CALLEE)
    h.caller_ack()
    h.in_dialog("C", "BYE", cseq=2)
    (ack_addr, ack), = _sent(h, "ACK")[-1:]
    bye_addr, bye = _sent(h, "BYE")[-1]
    # The harness files anything not sent to the caller's side under the callee's.
    assert ack_addr == ("192.0.2.22", 5060) and bye_addr == ("192.0.2.22", 5060)
    for req in (ack, bye):
        assert req.uri == f"sip:{B}@192.0.2.23:5090"
        assert req.headers.get_list("route") == list(reversed(rr))
    for addr, data in h.raw:  # nothing of the callee's path reaches the caller
        if addr in h.caller_side:
            assert b"192.0.2.2" not in data, data


def test_a_contact_by_name_falls_back_to_the_source_address() -> None:
    """No resolver in the core: a host name in the Contact sends to the source."""
    h = Harness()
    h.bind()
    h.caller_invite(contact=f"<sip:{A}@pbx.caller.example>")
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    h.caller_ack()
    h.in_dialog("B", "BYE", cseq=5)
    addr, bye = _sent(h, "BYE")[-1]
    assert addr == CALLER and bye.uri == f"sip:{A}@pbx.caller.example"


def test_tcp_callers_are_answered_on_their_connection() -> None:
    h = Harness()
    h.bind()
    h.caller_side.add(CONTACT)
    req = SipRequest("INVITE", f"sip:{X}@{RELAY[0]}", [
        ("Via", f"SIP/2.0/TCP {CALLER[0]}:{CALLER[1]};branch=z9hG4bKtcp1"),
        ("Max-Forwards", "70"), ("From", f"<sip:{A}@caller.example>;tag=atcp"),
        ("To", f"<sip:{X}@{RELAY[0]}>"), ("Call-ID", "tcp-call@caller"),
        ("CSeq", "1 INVITE"), ("Contact", f"<sip:{A}@{CONTACT[0]}:{CONTACT[1]};transport=tcp>"),
        ("Content-Type", "application/sdp")], sdp("alice", 30000))
    h.switch.receive_datagram(bytes(req), CALLER, h.now, reliable=True)
    h.pump()
    inv = h.last("B", SipRequest, method="INVITE")
    h.callee_reply(inv, 200, body=sdp("bob", 32000))
    ok = h.last("C", SipResponse, status=200)
    assert ok.headers.get("contact", "").endswith(";transport=tcp>")
    h.in_dialog("B", "BYE", cseq=5)
    addr, bye = _sent(h, "BYE")[-1]
    assert addr == CALLER
    assert bye.top_via.transport == "TCP"  # RFC 3261 §18.1.1: the transport it goes on


def test_no_contact_in_the_route_set_leaks_to_the_callee() -> None:
    h = Harness()
    h.bind()
    _answered(h)
    h.in_dialog("C", "BYE", cseq=2)
    for addr, data in h.raw:
        if addr == CALLEE:
            assert b"192.0.2.77" not in data
