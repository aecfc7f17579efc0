"""Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1), dialogs (§12) and the import ban."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.sip import (
    Dialog,
    DialogState,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    new_branch,
    parse_message,
)


def msg(body: bytes = b"hello", cl: str | None = None) -> bytes:
    length = str(len(body)) if cl is None else cl
    return (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
            b"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n"
            b"l: " + length.encode() + b"\r\n\r\n" + body)


def test_many_messages_in_one_segment_and_one_across_segments() -> None:
    f = StreamFramer()
    one, two = msg(b"one"), msg(b"second")
    assert f.feed(one + two + one[:10]) == [one, two]
    assert f.buffered == 10
    assert f.feed(one[10:40]) == []
    assert f.feed(one[40:]) == [one]
    assert f.buffered == 0
    for m in (one, two):
        assert parse_message(m).body in (b"one", b"second")


def test_byte_by_byte_delivery() -> None:
    f = StreamFramer()
    data = msg() + msg(b"")
    out: list[bytes] = []
    for i in range(len(data)):
        out += f.feed(data[i:i + 1])
    assert out == [msg(), msg(b"")]


def test_keepalives() -> None:
    f = StreamFramer()
    res = f.feed(b"\r\n\r\n")
    assert res == [] and res.pong
    res = f.feed(b"\r\n" + msg())
    assert res == [msg()] and not res.pong  # a single CRLF (a pong) is just skipped
    res = f.feed(b"\r\n")
    assert not res.pong
    assert f.feed(b"\r\n").pong  # the two halves of a ping


@pytest.mark.parametrize("data", [
    msg().replace(b"l: 5\r\n", b""),
    msg(cl="abc"),
    msg(cl=""),
    msg() .replace(b"l: 5\r\n", b"l: 5\r\nContent-Length: 5\r\n"),
])
def test_framing_errors(data: bytes) -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(data)


def test_size_limits() -> None:
    with pytest.raises(SipParseError):
        StreamFramer(max_header_bytes=100).feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 40)
    with pytest.raises(SipParseError):
        StreamFramer(max_body_bytes=3).feed(msg())


INVITE = (
    b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=atag\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: dlg-1@example.com\r\n"
    b"CSeq: 10 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5060>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def as_request(data: bytes) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def as_response(data: bytes) -> SipResponse:
    msg = parse_message(data)
    assert isinstance(msg, SipResponse)
    return msg


def counter_bytes() -> Callable[[int], bytes]:
    state = {"n": 0}

    def rand(n: int) -> bytes:
        state["n"] += 1
        return bytes([state["n"] % 256]) * n
    return rand


def uac_uas() -> tuple[Dialog, Dialog, SipRequest]:
    invite = parse_message(INVITE)
    assert isinstance(invite, SipRequest)
    uas = Dialog.from_uas(invite, local_tag="btag", local_contact="<sip:bob@192.0.2.2>",
                          sent_by="192.0.2.2:5060", random_bytes=counter_bytes())
    ok = build_response(invite, 200, to_tag="btag", extra_headers=[
        ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
        ("Contact", "<sip:bob@192.0.2.2:5060>")])
    uac = Dialog.from_uac(invite, as_response(bytes(ok)), sent_by="192.0.2.1:5060",
                          random_bytes=counter_bytes())
    return uac, uas, invite


def test_dialog_ids_and_route_sets() -> None:
    uac, uas, _ = uac_uas()
    assert uac.id == ("dlg-1@example.com", "atag", "btag")
    assert uas.id == ("dlg-1@example.com", "btag", "atag")
    assert uac.state is DialogState.CONFIRMED
    assert uac.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert uas.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert uac.remote_target == "sip:bob@192.0.2.2:5060"
    assert uas.remote_target == "sip:alice@192.0.2.1:5060"


def test_in_dialog_requests() -> None:
    uac, uas, _ = uac_uas()
    ack = uac.create_ack(10)
    assert ack.cseq.number == 10 and ack.method == "ACK"
    assert ack.uri == "sip:bob@192.0.2.2:5060"
    assert ack.headers.get_all("route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    bye = uac.create_request("BYE")
    reinvite = uac.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert (bye.cseq.number, reinvite.cseq.number) == (11, 12)
    assert bye.top_via.branch != reinvite.top_via.branch != ack.top_via.branch
    assert bye.top_via.branch and bye.top_via.branch.startswith("z9hG4bK")
    assert bye.from_tag == "atag" and bye.to_tag == "btag" and bye.call_id == uac.call_id
    assert reinvite.headers.get("contact") == "<sip:alice@192.0.2.1:5060>"
    wire = parse_message(bytes(reinvite))
    assert isinstance(wire, SipRequest) and wire.body == b"v=0\r\n"
    assert uas.matches(wire)
    assert uas.receive_request(wire) is None
    # a stale CSeq is answered 500 (§12.2.2), ACK/CANCEL are exempt
    assert uas.receive_request(as_request(bytes(bye))) == 500
    assert uas.receive_request(as_request(bytes(ack))) is None
    with pytest.raises(ValueError):
        uac.create_request("ACK")
    uas_bye = uas.create_request("BYE")
    assert uas_bye.from_tag == "btag" and uas_bye.to_tag == "atag"
    assert uas_bye.uri == "sip:alice@192.0.2.1:5060"
    assert uac.receive_request(as_request(bytes(uas_bye))) is None
    assert uac.state is DialogState.TERMINATED


def test_target_refresh_and_strict_router() -> None:
    uac, uas, _ = uac_uas()
    upd = uac.create_request("UPDATE", extra_headers=[])
    upd.headers.set("Contact", "<sip:alice@198.51.100.9:5080>")
    assert uas.receive_request(as_request(bytes(upd))) is None
    assert uas.remote_target == "sip:alice@198.51.100.9:5080"
    uac.route_set = ["<sip:strict.example.com>", "<sip:p2.example.com;lr>"]
    req = uac.create_request("INFO")
    assert req.uri == "sip:strict.example.com"
    assert req.headers.get_all("route") == ["<sip:p2.example.com;lr>",
                                           "<sip:bob@192.0.2.2:5060>"]


def test_new_branch_is_unique_and_marked() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith("z9hG4bK") for b in branches)


def test_early_dialog_is_confirmed_and_route_set_fixed_by_2xx() -> None:
    invite = parse_message(INVITE)
    assert isinstance(invite, SipRequest)
    ringing = parse_message(bytes(build_response(invite, 180, to_tag="btag", extra_headers=[
        ("Record-Route", "<sip:early.example.com;lr>"),
        ("Contact", "<sip:bob@10.0.0.9>")])))
    assert isinstance(ringing, SipResponse)
    dlg = Dialog.from_uac(invite, ringing, sent_by="192.0.2.1:5060")
    assert dlg.state is DialogState.EARLY and dlg.route_set == ["<sip:early.example.com;lr>"]
    ok = parse_message(bytes(build_response(invite, 200, to_tag="btag", extra_headers=[
        ("Record-Route", "<sip:p1.example.com;lr>"),
        ("Record-Route", "<sip:p2.example.com;lr>"),
        ("Contact", "<sip:bob@10.0.0.10>")])))
    assert isinstance(ok, SipResponse)
    assert dlg.matches(ok)
    dlg.receive_response(invite, ok)
    assert dlg.state is DialogState.CONFIRMED
    assert dlg.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert dlg.remote_target == "sip:bob@10.0.0.10"
    assert dlg.next_hop() == "sip:p2.example.com;lr"
    bye = dlg.create_request("BYE")
    gone = parse_message(bytes(build_response(bye, 481)))
    assert isinstance(gone, SipResponse)
    dlg.receive_response(bye, gone)
    assert dlg.state is DialogState.TERMINATED


def test_dialog_requires_a_to_tag() -> None:
    invite = parse_message(INVITE)
    assert isinstance(invite, SipRequest)
    with pytest.raises(ValueError):
        Dialog.from_uac(invite, build_response(invite, 180), sent_by="h")


def test_message_body_may_contain_blank_lines_on_a_stream() -> None:
    body = b"line1\r\n\r\nline3\r\n\r\n"
    data = msg(body)
    f = StreamFramer()
    assert f.feed(data + data[:5]) == [data]
    assert parse_message(data).body == body
