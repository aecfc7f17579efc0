"""Message codec: round trip, compact forms, folding, lists, quoting, strictness."""

from __future__ import annotations

import pytest

from relay.sip import (
    AbsoluteUri,
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    build_error_response,
    build_response,
    parse_message,
)
from relay.sip.grammar import parse_name_addr, parse_uri, parse_via, split_commas

BODY = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"


def invite(extra: str = "", body: bytes = BODY, cl: int | None = None) -> bytes:
    length = len(body) if cl is None else cl
    return (
        "INVITE sip:+8613800000001@192.0.2.10;user=phone SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:+8613800000001@192.0.2.10;user=phone>\r\n"
        'From: "Seller, 42" <sip:+8617000000042@198.51.100.7>;tag=1928301774\r\n'
        "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:+8617000000042@198.51.100.7:5060>\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_round_trip_is_byte_exact_for_canonical_input() -> None:
    data = invite()
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    assert bytes(msg) == data
    assert msg.method == "INVITE" and msg.body == BODY
    assert msg.top_via.branch == "z9hG4bK776asdhds" and msg.top_via.port == 5060
    assert msg.top_via.has_rport and msg.top_via.rport is None
    assert msg.from_.display == "Seller, 42" and msg.from_tag == "1928301774"
    assert msg.to_tag is None
    assert msg.cseq.number == 314159 and msg.cseq.method == "INVITE"
    assert msg.max_forwards == 70
    ruri = msg.request_uri
    assert isinstance(ruri, SipUri) and ruri.user == "+8613800000001"
    assert ruri.params == {"user": "phone"}


def test_compact_forms_expand_to_full_names() -> None:
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP host.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: sip:x@example.com\r\ni: cid\r\n"
        b"CSeq: 1 OPTIONS\r\nm: <sip:a@10.0.0.1>\r\nk: timer\r\ns: hi\r\nc: text/plain\r\n"
        b"e: gzip\r\no: presence\r\nu: dialog\r\nx: 1800\r\nr: <sip:r@example.com>\r\n"
        b"b: <sip:b@example.com>\r\ny: abc\r\nd: proxy\r\nj: *;audio\r\nl: 2\r\n\r\nhi"
    )
    msg = parse_message(data)
    names = [n for n, _ in msg.headers]
    assert names[:6] == ["Via", "From", "To", "Call-ID", "CSeq", "Contact"]
    for full in ("Supported", "Subject", "Content-Type", "Content-Encoding", "Event",
                 "Allow-Events", "Session-Expires", "Refer-To", "Referred-By", "Identity",
                 "Request-Disposition", "Reject-Contact", "Content-Length"):
        assert full in names
    assert msg.call_id == "cid" and msg.headers.get("Supported") == "timer"
    assert msg.headers.get("i") == "cid"  # lookups accept compact names too
    assert b"\r\nCall-ID: cid\r\n" in bytes(msg)


def test_line_folding_is_unfolded_to_single_space() -> None:
    data = invite("Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n")
    msg = parse_message(data)
    assert msg.headers.get("subject") == \
        "I know you're there, pick up the phone and talk to me!"


def test_folded_via_parses() -> None:
    data = invite().replace(
        b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport",
        b"Via: SIP / 2.0\r\n /UDP\r\n    198.51.100.7 : 5060 ;\r\n branch = z9hG4bK776asdhds")
    via = parse_message(data).top_via
    assert (via.transport, via.host, via.port, via.branch) == \
        ("UDP", "198.51.100.7", 5060, "z9hG4bK776asdhds")


def test_comma_joined_and_repeated_list_headers() -> None:
    data = invite("Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa, SIP/2.0/TCP "
                  "[2001:db8::9]:5061;branch=z9hG4bKb;received=192.0.2.9\r\n"
                  'Record-Route: <sip:p1.example.com;lr>, "A, B" <sip:p2@x;lr>\r\n'
                  "Record-Route: <sip:p3.example.com;lr>\r\n")
    msg = parse_message(data)
    vias = msg.vias
    assert [v.host for v in vias] == ["198.51.100.7", "p1.example.com", "[2001:db8::9]"]
    assert vias[2].port == 5061 and vias[2].received == "192.0.2.9"
    assert vias[2].transport == "TCP"
    rr = msg.record_routes
    assert [r.display for r in rr] == [None, "A, B", None]
    assert [str(r.uri) for r in rr] == ["sip:p1.example.com;lr", "sip:p2@x;lr",
                                        "sip:p3.example.com;lr"]


def test_non_list_headers_are_not_split() -> None:
    data = invite("Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
                  'WWW-Authenticate: Digest realm="a, b", nonce="x"\r\n'
                  "X-Custom: one, two\r\n")
    h = parse_message(data).headers
    assert h.get_list("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get_list("www-authenticate") == ['Digest realm="a, b", nonce="x"']
    assert h.get_list("X-Custom") == ["one, two"]


def test_split_commas_respects_quotes_escapes_and_brackets() -> None:
    assert split_commas(r'"a \", b" <sip:x@y;p=1,2>;q=1, <sip:z@w>') == \
        [r'"a \", b" <sip:x@y;p=1,2>;q=1', "<sip:z@w>"]


def test_quoted_display_name_with_escaped_quote() -> None:
    na = parse_name_addr(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8')
    assert na.display == 'J Rosenberg \\"' and na.tag == "98asjd8"
    assert parse_name_addr(str(na)).display == na.display


def test_name_addr_and_addr_spec_params() -> None:
    bare = parse_name_addr("sip:alice@example.com;tag=abc")
    assert bare.tag == "abc" and isinstance(bare.uri, SipUri) and bare.uri.params == {}
    inner = parse_name_addr("<sip:alice@example.com;transport=tcp>;tag=abc")
    assert isinstance(inner.uri, SipUri) and inner.uri.params == {"transport": "tcp"}
    tokens = parse_name_addr("Alice Smith <tel:+8613800000001;phone-context=+86>")
    assert tokens.display == "Alice Smith"
    assert isinstance(tokens.uri, SipUri) and tokens.uri.scheme == "tel"
    assert tokens.uri.user == "+8613800000001"
    with pytest.raises(SipParseError):
        parse_name_addr("Bell, Alexander <sip:a@b>")
    with pytest.raises(SipParseError):
        parse_name_addr("< sip:a@b >")
    with pytest.raises(SipParseError):
        parse_name_addr('"unterminated <sip:a@b>')


def test_uri_parsing() -> None:
    u = parse_uri("sips:user:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y")
    assert isinstance(u, SipUri)
    assert (u.scheme, u.user, u.password, u.host, u.port) == \
        ("sips", "user", "pw", "[2001:db8::1]", 5061)
    assert u.params == {"transport": "tls", "lr": None}
    assert u.headers == {"subject": "hi", "x": "y"}
    assert str(u) == "sips:user:pw@[2001:db8::1]:5061;transport=tls;lr?subject=hi&x=y"
    e = parse_uri("sip:%61lice;par=u%40example.net@example.com")
    assert isinstance(e, SipUri) and e.user == "%61lice;par=u%40example.net"
    assert e.user_unescaped == "alice;par=u@example.net"
    assert isinstance(parse_uri("urn:service:sos"), AbsoluteUri)
    for bad in ("sip:", "sip:a@", "sip:host:99999", "sip:a b@c", "<sip:a@b>", "sip:a%zz@b",
                "tel:", "nocolon"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_via_parsing() -> None:
    v = parse_via("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;rport=3333;maddr=224.2.0.1;ttl=1")
    assert v.sent_by == ("192.0.2.1", 5070) and v.rport == 3333 and v.maddr == "224.2.0.1"
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;rport=3333;maddr=224.2.0.1;ttl=1"
    for bad in ("SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host;;", "SIP/2.0/UDP h;ttl=999"):
        with pytest.raises(SipParseError):
            parse_via(bad)


@pytest.mark.parametrize("cl", [len(BODY) - 1, len(BODY) + 1, 9999])
def test_content_length_mismatch_is_an_error(cl: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite(cl=cl))
    assert info.value.status == 400


def test_trailing_octets_can_be_discarded_on_request() -> None:
    data = invite(cl=len(BODY) - 4)
    with pytest.raises(SipParseError):
        parse_message(data)
    assert parse_message(data, allow_trailing=True).body == BODY[:-4]


def test_missing_content_length_means_rest_of_datagram() -> None:
    data = invite().replace(f"Content-Length: {len(BODY)}\r\n".encode(), b"")
    msg = parse_message(data)
    assert msg.body == BODY
    assert f"Content-Length: {len(BODY)}".encode() in bytes(msg)


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_400(name: str) -> None:
    lines = [ln for ln in invite().split(b"\r\n") if not ln.startswith(name.encode() + b":")]
    with pytest.raises(SipParseError) as info:
        parse_message(b"\r\n".join(lines))
    assert info.value.status == 400 and name in info.value.reason


def test_duplicate_single_headers_rejected() -> None:
    with pytest.raises(SipParseError):
        parse_message(invite("Call-ID: second@example.com\r\n"))
    with pytest.raises(SipParseError):
        parse_message(invite("l: 0\r\n"))


def test_start_line_errors() -> None:
    good = invite()
    for bad_line, status in ((b"INVITE  sip:a@b SIP/2.0", 400), (b"INVITE sip:a@b SIP/2.0 ", 400),
                             (b"INVITE <sip:a@b> SIP/2.0", 400), (b"INVITE sip:a@b SIP/7.0", 505),
                             (b"INV\x01TE sip:a@b SIP/2.0", 400)):
        data = bad_line + good[good.index(b"\r\n"):]
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert info.value.status == status, bad_line


def test_response_parsing_and_reason_phrases() -> None:
    base = (b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    r = parse_message(b"SIP/2.0 180 Ringing now\r\n" + base)
    assert isinstance(r, SipResponse) and (r.status, r.reason) == (180, "Ringing now")
    noreason = parse_message(b"SIP/2.0 100 \r\n" + base)
    assert isinstance(noreason, SipResponse) and noreason.reason == ""
    for bad in (b"SIP/2.0 4294967301 big\r\n", b"SIP/2.0 99 low\r\n", b"SIP/2.0 700 x\r\n",
                "SIP/2.0 1\u00b23 superscript\r\n".encode()):
        with pytest.raises(SipParseError):
            parse_message(bad + base)


def test_bare_lf_and_missing_blank_line_rejected() -> None:
    with pytest.raises(SipParseError):
        parse_message(invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"))
    with pytest.raises(SipParseError):
        parse_message(invite(body=b"").rstrip(b"\r\n"))


def test_build_response_copies_headers_and_adds_to_tag() -> None:
    req = parse_message(invite("Via: SIP/2.0/UDP p1;branch=z9hG4bKp\r\nTimestamp: 54\r\n"))
    assert isinstance(req, SipRequest)
    resp = build_response(req, 486, to_tag="t1", extra_headers=[("Retry-After", "30")])
    assert resp.reason == "Busy Here"
    assert resp.headers.get_all("via") == req.headers.get_all("via")
    assert resp.to_tag == "t1" and resp.from_tag == "1928301774"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.headers.get("retry-after") == "30"
    trying = build_response(req, 100, to_tag="t1")
    assert trying.to_tag is None and trying.headers.get("timestamp") == "54"
    again = parse_message(bytes(resp))
    assert isinstance(again, SipResponse) and again.status == 486


def test_parse_error_carries_enough_for_a_400() -> None:
    data = invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    reply = build_error_response(info.value)
    assert reply is not None and reply.status == 400
    assert reply.call_id == "a84b4c76e66710@pc33.example.com"
    assert build_error_response(SipParseError("x")) is None


def test_headers_multimap_operations() -> None:
    h = Headers([("Via", "a"), ("X-A", "1"), ("via", "b")])
    assert h.get_all("VIA") == ["a", "b"] and len(h) == 3
    h.prepend("v", "top")
    assert h.get_list("via") == ["top", "a", "b"]
    assert h.pop_first("via") == "top"
    h.set("X-A", "2")
    h.remove("nope")
    assert list(h) == [("Via", "a"), ("Via", "b"), ("X-A", "2")]
    assert "x-a" in h and "X-B" not in h


def test_cache_invalidated_on_change() -> None:
    msg = parse_message(invite())
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    msg.headers.prepend("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew")
    assert msg.top_via.branch == "z9hG4bKnew"
    assert isinstance(msg, SipRequest)
    msg.uri = "sip:other@example.org"
    assert isinstance(msg.request_uri, SipUri) and msg.request_uri.host == "example.org"


def test_stamp_via_received_and_rport() -> None:
    from relay.sip import stamp_via
    req = parse_message(invite())  # Via: 198.51.100.7:5060 ... ;rport
    assert isinstance(req, SipRequest)
    stamp_via(req, ("203.0.113.5", 40000))
    assert req.top_via.received == "203.0.113.5" and req.top_via.rport == 40000
    assert req.top_via.branch == "z9hG4bK776asdhds"
    same = parse_message(invite().replace(b";rport", b""))
    assert isinstance(same, SipRequest)
    before = bytes(same)
    stamp_via(same, ("198.51.100.7", 5060))
    assert bytes(same) == before  # sent-by already right, no rport: untouched
    stamp_via(same, ("198.51.100.8", 5060))
    assert same.top_via.received == "198.51.100.8" and not same.top_via.has_rport
    assert "received=198.51.100.8" in (build_response(same, 200).headers.get("via") or "")
