"""RFC 4475 torture messages: valid ones parse with the right fields, invalid ones
raise SipParseError with the status the RFC asks for, and nothing raises anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.sip import (
    AbsoluteUri,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    TransactionLayer,
    parse_message,
)

HERE = Path(__file__).parent
ALL = sorted(p.stem for p in HERE.glob("*.sip"))

VALID = {
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason", "badbranch", "unkscm", "novelsc",
    "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02",
    "regescrt", "sdp01", "inv2543",
    # §3.1.2.12: a non-GMT Date is a semantic problem; we never interpret Date, and
    # the RFC lets an element that does not care about Date process the request.
    "baddate",
}
INVALID = {  # name -> status the RFC suggests for a request (responses are dropped)
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": 400,
    "quotbal": 400, "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400,
    "escruri": 400, "regbadct": 400, "badaspec": 400, "baddn": 400, "badvers": 505,
    "mismatch01": 400, "mismatch02": 400, "bigcode": 400, "insuf": 400, "multi01": 400,
    "mcl01": 400,
    # §3.1.1.7 says a UDP receiver may discard the octets after Content-Length; this
    # project rejects a datagram whose length disagrees (house style point 7).
    "dblreq": 400,
}


def load(name: str) -> bytes:
    return (HERE / f"{name}.sip").read_bytes()


def test_every_vector_is_classified() -> None:
    assert set(ALL) == VALID | set(INVALID)
    assert len(ALL) >= 45


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_vectors_parse_and_round_trip(name: str) -> None:
    msg = parse_message(load(name))
    again = parse_message(bytes(msg))
    assert type(again) is type(msg)
    assert list(again.headers) == list(msg.headers) and again.body == msg.body


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vectors_raise_with_status(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    assert info.value.status == INVALID[name]


@pytest.mark.parametrize("name", ALL)
def test_layer_never_raises_on_vectors(name: str) -> None:
    layer = TransactionLayer()
    layer.receive_datagram(load(name), ("192.0.2.99", 5060), 0.0)
    replies = layer.datagrams_to_send()
    if name not in INVALID:
        assert layer.stats["malformed"] == 0
        return
    assert layer.stats["malformed"] == 1
    for data, _ in replies:
        # The reply copies the offending raw lines (§8.2.6), so only its status
        # line is checked here.
        assert data.startswith(f"SIP/2.0 {INVALID[name]} ".encode())


def test_wsinv_fields() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, SipRequest) and msg.method == "INVITE"
    assert msg.to_tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    [contact] = msg.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    [route] = msg.routes
    assert isinstance(route.uri, SipUri)
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")


def test_intmeth_fields() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, SipRequest)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = msg.request_uri
    assert isinstance(uri, SipUri) and uri.host == "example.com"
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.from_tag == "_token~1'+`*%!-."
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escaped_uris() -> None:
    esc01 = parse_message(load("esc01"))
    assert isinstance(esc01, SipRequest)
    ruri = esc01.request_uri
    assert isinstance(ruri, SipUri) and ruri.user_unescaped == "sips:user@example.com"
    to_uri = esc01.to.uri
    assert isinstance(to_uri, SipUri) and to_uri.user_unescaped == "user"
    from_uri = esc01.from_.uri
    assert isinstance(from_uri, SipUri) and from_uri.user_unescaped == "I have spaces"
    contact = esc01.contacts[0].uri
    assert isinstance(contact, SipUri) and contact.user_unescaped == "caller"
    assert contact.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    escnull = parse_message(load("escnull"))
    users = [c.uri.user_unescaped for c in escnull.contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]
    semi = parse_message(load("semiuri"))
    assert isinstance(semi, SipRequest) and isinstance(semi.request_uri, SipUri)
    assert semi.request_uri.user == "user;par=u%40example.net"
    assert semi.request_uri.host == "example.com"
    assert len(semi.headers.get_list("accept")) == 6
    regescrt = parse_message(load("regescrt"))
    rc = regescrt.contacts[0].uri
    assert isinstance(rc, SipUri) and rc.headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_esc02_percent_is_not_decoded_in_tokens() -> None:
    msg = parse_message(load("esc02"))
    assert isinstance(msg, SipRequest) and msg.method == "RE%47IST%45R"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    assert len(msg.contacts) == 2 and msg.headers.get("C%6Fntact")
    assert msg.to.display == "%Z%45"


def test_other_valid_details() -> None:
    lws = parse_message(load("lwsdisp"))
    assert lws.from_.display == "caller" and lws.from_tag == "323"
    transports = parse_message(load("transports"))
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert transports.call_id == "transports.kijh4akdnaqjkwendsasfdj"
    mp = parse_message(load("mpart01"))
    assert b"\x00\x01\x02" in mp.body and mp.body.endswith(b"--\r\n")
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, SipResponse) and unreason.status == 200
    assert unreason.reason.endswith("простое")
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, SipResponse) and (noreason.status, noreason.reason) == (100, "")
    longreq = parse_message(load("longreq"))
    assert len(longreq.vias) == 34 and len(longreq.call_id) > 500
    unkscm = parse_message(load("unkscm"))
    assert isinstance(unkscm, SipRequest) and isinstance(unkscm.request_uri, AbsoluteUri)
    unksm2 = parse_message(load("unksm2"))
    assert isinstance(unksm2.to.uri, AbsoluteUri) and unksm2.to.uri.scheme == "isbn"
    assert parse_message(load("zeromf")).max_forwards == 0
    cparam01 = parse_message(load("cparam01")).contacts[0]
    assert cparam01.params == {"unknownparam": None}  # header param: no <> around the URI
    cparam02 = parse_message(load("cparam02")).contacts[0]
    assert isinstance(cparam02.uri, SipUri) and cparam02.uri.params == {"unknownparam": None}
    inv2543 = parse_message(load("inv2543"))
    assert inv2543.top_via.branch is None and inv2543.from_tag is None


def test_dblreq_first_message_with_rfc3261_truncation() -> None:
    msg = parse_message(load("dblreq"), allow_trailing=True)
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER" and msg.body == b""
