"""relay.sip.dns: the RFC 1035 codec on hand-built wire bytes, and the RFC 3263 walk."""

from __future__ import annotations

import functools
import struct

import pytest

from relay.sip.dns import (
    AAAA,
    CNAME,
    NAPTR,
    SOA,
    SRV,
    A,
    DnsError,
    NaptrRecord,
    Rcode,
    SrvRecord,
    Target,
    decode_message,
    encode_query,
    negative_ttl,
    order_srv,
    records_for,
    select_targets,
    walk,
)


def name(text: str) -> bytes:
    """Uncompressed wire name, built by hand (not with the module under test)."""
    out = b"".join(bytes([len(p)]) + p.encode() for p in text.split(".") if p)
    return out + b"\x00"


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def header(qid: int = 0x1234, flags: int = 0x8180, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


PTR_QNAME = b"\xc0\x0c"  # the question's name, right after the 12-octet header


def srv_response() -> bytes:
    """Two SRV answers for _sip._udp.trunk.test, owner and targets compressed."""
    q = name("_sip._udp.trunk.test") + struct.pack("!HH", SRV, 1)
    # "trunk.test" starts 10 octets into the question name (after \x04_sip\x04_udp)
    trunk = struct.pack("!H", 0xC000 | (12 + 10))
    a1 = rr(PTR_QNAME, SRV, 60, struct.pack("!HHH", 10, 60, 5071) + b"\x01b" + trunk)
    a2 = rr(PTR_QNAME, SRV, 30, struct.pack("!HHH", 20, 0, 5072) + b"\x01c" + trunk)
    return header(an=2) + q + a1 + a2


# --- codec ----------------------------------------------------------------------------

def test_encode_query_is_rfc1035_wire() -> None:
    qid, wire = encode_query("Trunk.Test.", NAPTR, random_bytes=lambda n: b"\xab\xcd"[:n])
    assert qid == 0xABCD
    assert wire == (b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                    + b"\x05trunk\x04test\x00" + b"\x00\x23\x00\x01")


def test_encode_rejects_bad_names() -> None:
    with pytest.raises(DnsError):
        encode_query("a..b", A)
    with pytest.raises(DnsError):
        encode_query("x" * 64 + ".test", A)
    with pytest.raises(DnsError):
        encode_query(".".join(["abcdefghi"] * 30), A)


def test_decode_srv_with_compression_pointers() -> None:
    msg = decode_message(srv_response())
    assert msg.id == 0x1234 and msg.is_response and not msg.truncated
    assert msg.rcode == Rcode.NOERROR
    assert msg.questions[0].name == "_sip._udp.trunk.test"
    assert [(r.name, r.ttl, r.data) for r in msg.answers] == [
        ("_sip._udp.trunk.test", 60, SrvRecord(10, 60, 5071, "b.trunk.test")),
        ("_sip._udp.trunk.test", 30, SrvRecord(20, 0, 5072, "c.trunk.test")),
    ]


def test_decode_naptr_a_aaaa_and_cname() -> None:
    q = name("trunk.test") + struct.pack("!HH", NAPTR, 1)
    naptr = (struct.pack("!HH", 50, 10) + b"\x01S" + b"\x07SIP+D2U" + b"\x00"
             + name("_sip._udp.trunk.test"))
    alias = rr(name("alias.test"), CNAME, 5, name("host.test"))
    host_ptr = struct.pack("!H", 0xC000 | (len(header() + q) + len(rr(PTR_QNAME, NAPTR, 1,
                                                                       naptr))
                                           + len(name("alias.test")) + 10))
    a = rr(host_ptr, A, 7, bytes([192, 0, 2, 1]))
    aaaa = rr(host_ptr, AAAA, 8, bytes.fromhex("20010db8" + "00" * 11 + "01"))
    wire = header(an=4) + q + rr(PTR_QNAME, NAPTR, 100, naptr) + alias + a + aaaa
    msg = decode_message(wire)
    assert msg.answers[0].data == NaptrRecord(50, 10, "s", "sip+d2u", "",
                                              "_sip._udp.trunk.test")
    assert [r.data for r in msg.answers[1:]] == ["host.test", "192.0.2.1", "2001:db8::1"]
    assert [r.name for r in msg.answers[2:]] == ["host.test", "host.test"]
    # a CNAME in the answer is followed to the address records
    assert [r.data for r in records_for(msg, "ALIAS.test.", A)] == ["192.0.2.1"]
    assert records_for(msg, "alias.test", SRV) == []


def test_pointer_loop_raises() -> None:
    # the question name is a pointer to itself
    with pytest.raises(DnsError, match="loop"):
        decode_message(header() + b"\xc0\x0c" + struct.pack("!HH", A, 1))
    # two labels pointing at each other: a label, then a pointer back to the label
    looped = header() + b"\x01a\xc0\x0c" + struct.pack("!HH", A, 1)
    with pytest.raises(DnsError):
        decode_message(looped)
    # a forward pointer
    with pytest.raises(DnsError):
        decode_message(header() + b"\xc0\x20" + b"\x00" * 30)


def test_every_truncation_raises_dns_error() -> None:
    wire = srv_response()
    for cut in range(len(wire)):
        with pytest.raises(DnsError):
            decode_message(wire[:cut])


def test_malformed_rdata_raises() -> None:
    q = name("h.test") + struct.pack("!HH", A, 1)
    with pytest.raises(DnsError, match="A record"):
        decode_message(header(an=1) + q + rr(PTR_QNAME, A, 1, b"\x01\x02\x03"))
    with pytest.raises(DnsError, match="AAAA"):
        decode_message(header(an=1) + q + rr(PTR_QNAME, AAAA, 1, b"\x00" * 4))
    # an SRV whose RDLENGTH claims more than its fields use
    srv = struct.pack("!HHH", 1, 1, 5060) + name("x.test") + b"\x00"
    with pytest.raises(DnsError, match="length"):
        decode_message(header(an=1) + q + rr(PTR_QNAME, SRV, 1, srv))
    with pytest.raises(DnsError, match="reserved"):
        decode_message(header() + b"\x41a\x00" + struct.pack("!HH", A, 1))


def test_nxdomain_with_soa_gives_negative_ttl() -> None:
    q = name("gone.test") + struct.pack("!HH", SRV, 1)
    soa = name("ns.test") + name("admin.test") + struct.pack("!IIIII", 1, 2, 3, 4, 30)
    wire = header(flags=0x8183, ns=1) + q + rr(name("test"), SOA, 120, soa)
    msg = decode_message(wire)
    assert msg.rcode == Rcode.NXDOMAIN and msg.answers == ()
    assert negative_ttl(msg) == 30  # min(SOA TTL 120, MINIMUM 30), RFC 2308 §5
    assert negative_ttl(decode_message(header(flags=0x8183) + q)) is None


def test_tc_bit_and_top_bit_ttl() -> None:
    q = name("h.test") + struct.pack("!HH", A, 1)
    wire = header(flags=0x8380, an=1) + q + rr(PTR_QNAME, A, 0x80000001, b"\x7f\x00\x00\x01")
    msg = decode_message(wire)
    assert msg.truncated
    assert msg.answers[0].ttl == 0  # RFC 2181 §8


def test_query_round_trips_through_decoder() -> None:
    qid, wire = encode_query("_sip._tcp.example.com", SRV)
    msg = decode_message(wire)
    assert msg.id == qid and not msg.is_response
    assert (msg.questions[0].name, msg.questions[0].rtype) == ("_sip._tcp.example.com", SRV)


# --- RFC 2782 ordering ------------------------------------------------------------------

def test_srv_priority_first_then_weight() -> None:
    records = [SrvRecord(20, 0, 1, "z.test"), SrvRecord(10, 1, 2, "a.test"),
               SrvRecord(10, 3, 3, "b.test")]
    # draw 0.0: running sum > 0 picks the first weighted record in the group (a, w=1)
    assert [r.target for r in order_srv(records, lambda: 0.0)] == ["a.test", "b.test",
                                                                   "z.test"]
    # draw 0.5 of 4: running 1 (a) <= 2, 4 (b) > 2: b first
    assert [r.target for r in order_srv(records, lambda: 0.5)] == ["b.test", "a.test",
                                                                   "z.test"]


def test_srv_weights_spread_in_proportion() -> None:
    import random as stdlib_random

    rng = stdlib_random.Random(7)
    records = [SrvRecord(1, 90, 1, "heavy.test"), SrvRecord(1, 10, 1, "light.test")]
    firsts = [order_srv(records, rng.random)[0].target for _ in range(2000)]
    assert 1600 < firsts.count("heavy.test") < 1950


def test_srv_weight_zero_and_dot_target() -> None:
    records = [SrvRecord(1, 0, 1, "zero.test"), SrvRecord(1, 5, 1, "five.test"),
               SrvRecord(1, 0, 1, ".")]
    # weight-0 is picked after the weighted ones on any draw; "." is dropped
    for draw in (0.0, 0.5, 0.999):
        fixed = functools.partial(float, draw)
        assert [r.target for r in order_srv(records, fixed)] == ["five.test", "zero.test"]
    assert order_srv([SrvRecord(1, 0, 1, "a"), SrvRecord(1, 0, 1, "b")],
                     lambda: 0.3) == [SrvRecord(1, 0, 1, "a"), SrvRecord(1, 0, 1, "b")]


# --- RFC 3263 §4 ------------------------------------------------------------------------

def test_numeric_hosts_need_no_dns() -> None:
    assert walk("192.0.2.7", None, None, {}).targets == [Target("192.0.2.7", 5060, "UDP")]
    assert walk("[2001:db8::1]", 5080, "tcp", {}).targets == [Target("2001:db8::1", 5080,
                                                                     "TCP")]
    assert walk("192.0.2.7", None, None, {}, secure=True).targets == [
        Target("192.0.2.7", 5061, "TLS")]


def test_port_given_means_addresses_only() -> None:
    step = walk("Trunk.test", 5090, None, {})
    assert step.needed == [("trunk.test", A), ("trunk.test", AAAA)]
    found = {("trunk.test", A): ["192.0.2.1"], ("trunk.test", AAAA): ["2001:db8::9"]}
    assert select_targets("trunk.test", 5090, None, found) == [
        Target("192.0.2.1", 5090, "UDP"), Target("2001:db8::9", 5090, "UDP")]


def test_transport_given_skips_naptr() -> None:
    assert walk("trunk.test", None, "TCP", {}).needed == [("_sip._tcp.trunk.test", SRV)]
    assert walk("trunk.test", None, "tcp", {}, secure=True).needed == [
        ("_sips._tcp.trunk.test", SRV)]


def test_naptr_then_srv_then_addresses() -> None:
    found: dict = {}
    assert walk("trunk.test", None, None, found).needed == [("trunk.test", NAPTR)]
    found[("trunk.test", NAPTR)] = [
        NaptrRecord(20, 10, "s", "sip+d2u", "", "_sip._udp.trunk.test"),
        NaptrRecord(10, 50, "s", "sip+d2t", "", "_sip._tcp.trunk.test"),
        NaptrRecord(10, 10, "s", "sips+d2t", "", "_sips._tcp.trunk.test"),
        NaptrRecord(5, 10, "s", "sip+d2s", "", "_sip._sctp.trunk.test"),  # not spoken
        NaptrRecord(5, 10, "u", "sip+d2u", "!.*!sip:x!", ""),  # not an "s" record
    ]
    assert walk("trunk.test", None, None, found).needed == [
        ("_sips._tcp.trunk.test", SRV), ("_sip._tcp.trunk.test", SRV),
        ("_sip._udp.trunk.test", SRV)]
    found[("_sips._tcp.trunk.test", SRV)] = []
    found[("_sip._tcp.trunk.test", SRV)] = [SrvRecord(1, 0, 5070, "t.trunk.test")]
    found[("_sip._udp.trunk.test", SRV)] = [SrvRecord(2, 0, 5071, "u.trunk.test"),
                                            SrvRecord(1, 0, 5072, "t.trunk.test")]
    assert walk("trunk.test", None, None, found).needed == [
        ("t.trunk.test", A), ("t.trunk.test", AAAA), ("u.trunk.test", A),
        ("u.trunk.test", AAAA)]
    found.update({("t.trunk.test", A): ["192.0.2.1"], ("t.trunk.test", AAAA): [],
                  ("u.trunk.test", A): ["192.0.2.2"], ("u.trunk.test", AAAA): []})
    assert select_targets("trunk.test", None, None, found, random=lambda: 0.0) == [
        Target("192.0.2.1", 5070, "TCP"), Target("192.0.2.1", 5072, "UDP"),
        Target("192.0.2.2", 5071, "UDP")]
    # a peer that speaks only UDP skips the TCP and TLS NAPTRs
    assert select_targets("trunk.test", None, None, found, transports=("UDP",),
                          random=lambda: 0.0) == [Target("192.0.2.1", 5072, "UDP"),
                                                  Target("192.0.2.2", 5071, "UDP")]


def test_no_naptr_tries_srv_per_transport_then_a_record() -> None:
    found: dict = {("trunk.test", NAPTR): []}
    assert walk("trunk.test", None, None, found).needed == [
        ("_sip._udp.trunk.test", SRV), ("_sip._tcp.trunk.test", SRV),
        ("_sips._tcp.trunk.test", SRV)]
    found.update({(n, SRV): [] for n in ("_sip._udp.trunk.test", "_sip._tcp.trunk.test",
                                          "_sips._tcp.trunk.test")})
    assert walk("trunk.test", None, None, found).needed == [("trunk.test", A),
                                                             ("trunk.test", AAAA)]
    found.update({("trunk.test", A): ["192.0.2.3"], ("trunk.test", AAAA): []})
    assert select_targets("trunk.test", None, None, found) == [
        Target("192.0.2.3", 5060, "UDP")]
    assert select_targets("trunk.test", None, None, found, families=(A,),
                          secure=True) == [Target("192.0.2.3", 5061, "TLS")]


def test_select_targets_refuses_when_records_are_missing() -> None:
    with pytest.raises(DnsError, match="needed"):
        select_targets("trunk.test", None, None, {})


def test_unknown_transport_is_a_dns_error() -> None:
    with pytest.raises(DnsError, match="transport"):
        walk("trunk.test", None, "sctp", {})
