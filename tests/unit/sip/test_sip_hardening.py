"""Issue 13, sans-IO: stateless refusals (no 100, no retransmission, the same answer to
a retransmission), the reply cache and the parse memo bounded by bytes, and the
per-source rate limit (pike)."""

from __future__ import annotations

import pytest

from relay.sip import (
    SipRequest,
    TimerConfig,
    TransactionKey,
    TransactionLayer,
    build_response,
    grammar,
)
from relay.sip.grammar import parse_via
from relay.sip.pike import Pike
from relay.sip.transaction import ReplyCache

SRC = ("192.0.2.10", 5060)


def invite(branch: str = "z9hG4bKflood1", call_id: str = "c1@x") -> bytes:
    return (f"INVITE sip:+8617000000001@192.0.2.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+8613800000001@192.0.2.10>;tag=a1\r\n"
            "To: <sip:+8617000000001@192.0.2.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def ack(branch: str = "z9hG4bKflood1", to_tag: str = "t") -> bytes:
    return (f"ACK sip:+8617000000001@192.0.2.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+8613800000001@192.0.2.10>;tag=a1\r\n"
            f"To: <sip:+8617000000001@192.0.2.1>;tag={to_tag}\r\n"
            "Call-ID: c1@x\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()


def refuse_all(layer: TransactionLayer, data: bytes, now: float,
               source: tuple[str, int] = SRC) -> None:
    """A TU that refuses every new request at once with 403 (and asks for the 100s)."""
    for ev in layer.receive_datagram(data, source, now):
        req = getattr(ev, "request", None)
        if isinstance(req, SipRequest) and req.method != "ACK":
            layer.send_response(build_response(req, 403, to_tag="refused1"), now)
    layer.send_trying(now)


def test_a_refusal_made_at_once_is_sent_once_without_100_and_forgotten() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5), stateless_refusals=True)
    refuse_all(layer, invite(), 0.0)
    out = layer.datagrams_to_send()
    assert [d.split(b"\r\n", 1)[0] for d, _ in out] == [b"SIP/2.0 403 Forbidden"]
    assert len(layer) == 0 and layer.get_timer() is None  # nothing retransmits it
    for t in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        layer.handle_timer(t)
    assert layer.datagrams_to_send() == []
    # A retransmission gets the very same bytes (same To tag), its ACK is absorbed.
    refuse_all(layer, invite(), 1.0)
    again = layer.datagrams_to_send()
    assert again == out
    assert layer.receive_datagram(ack(), SRC, 1.1) == []
    assert layer.datagrams_to_send() == []
    # Another source reusing the branch is not answered from the cache.
    refuse_all(layer, invite(), 1.2, ("192.0.2.99", 5060))
    [(data, dest)] = layer.datagrams_to_send()
    assert dest == ("192.0.2.99", 5060) and data.startswith(b"SIP/2.0 403")
    assert layer.stats["stateless_replies"] == 2 and layer.stats["replies_resent"] == 1
    # After 64*T1 the cache forgets: a late copy is processed afresh.
    refuse_all(layer, invite(), 40.0)
    assert layer.stats["stateless_replies"] == 3


def test_an_invite_the_tu_keeps_gets_its_100_and_later_refusals_are_stateful() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5), stateless_refusals=True)
    [ev] = layer.receive_datagram(invite(), SRC, 0.0)
    assert layer.datagrams_to_send() == []  # the 100 waits for the TU
    layer.send_trying(0.0)
    [(trying, _)] = layer.datagrams_to_send()
    assert trying.startswith(b"SIP/2.0 100 Trying")
    # After a provisional the caller no longer retransmits: the refusal is stateful.
    req = ev.request  # type: ignore[attr-defined]
    layer.send_response(build_response(req, 404, to_tag="x"), 0.1)
    layer.handle_timer(0.6)
    sent = [d.split(b"\r\n", 1)[0] for d, _ in layer.datagrams_to_send()]
    assert sent == [b"SIP/2.0 404 Not Found", b"SIP/2.0 404 Not Found"]


def test_without_the_option_the_layer_is_unchanged() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5))
    refuse_all(layer, invite(), 0.0)
    sent = [d.split(b"\r\n", 1)[0] for d, _ in layer.datagrams_to_send()]
    assert sent == [b"SIP/2.0 100 Trying", b"SIP/2.0 403 Forbidden"]
    assert len(layer) == 1


def test_the_reply_cache_is_bounded_by_bytes() -> None:
    layer = TransactionLayer(stateless_refusals=True, reply_cache_bytes=64 * 1024)
    for i in range(5000):
        refuse_all(layer, invite(f"z9hG4bKmany{i}", f"c{i}@x"), i * 0.001)
        layer.datagrams_to_send()
    cache = layer.replies
    assert cache.bytes <= 64 * 1024 and 0 < len(cache) < 5000
    assert len(layer) == 0


def test_reply_cache_expiry_and_replacement() -> None:
    cache = ReplyCache(max_bytes=10_000, ttl=5.0)
    key = TransactionKey("server", "z9hG4bKk", "INVITE", "192.0.2.10:5060")
    cache.put(key, SRC, b"one", 0.0)
    cache.put(key, SRC, b"two", 1.0)
    assert cache.get(key, SRC, 2.0) == b"two" and len(cache) == 1
    assert cache.bytes == 3 + ReplyCache.ENTRY
    assert cache.get(key, SRC, 6.5) is None


def test_the_parse_memo_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grammar, "MEMO_BYTES", 64 * 1024)
    for i in range(3000):
        parse_via(f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbytes{i};x={'p' * 200}")
    cache = parse_via.__closure__[0].cell_contents  # type: ignore[attr-defined, index]
    per = 260 + grammar.MEMO_ENTRY
    assert len(cache) <= 64 * 1024 // per + 1
    # Huge values are parsed but never remembered.
    long = f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKlong;x={'q' * 5000}"
    assert parse_via(long).branch == "z9hG4bKlong" and long not in cache


def test_pike_bans_a_source_over_its_limit_and_lets_others_pass() -> None:
    pike = Pike(limit=10, window=2.0, ban=30.0)
    assert all(pike.allow("192.0.2.66", i * 0.01) for i in range(10))
    assert not pike.allow("192.0.2.66", 0.2)  # the 11th in the window: banned
    assert pike.is_banned("192.0.2.66", 1.0) and pike.banned == 1
    assert pike.allow("192.0.2.67", 0.3)  # a different source is not affected
    assert not pike.allow("192.0.2.66", 25.0)  # still banned (quiet or not)
    assert pike.allow("192.0.2.66", 31.0)  # the ban is over: a fresh window
    # A steady rate under the limit is never banned.
    slow = Pike(limit=10, window=2.0, ban=30.0)
    assert all(slow.allow("192.0.2.70", i * 0.25) for i in range(400))


def test_pike_table_is_bounded() -> None:
    pike = Pike(limit=5, window=1.0, ban=10.0, max_sources=1000)
    for i in range(20_000):
        pike.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i * 0.0001)
    assert len(pike) <= 1000


# -- the call map's admission (relay.b2bua.callmap) ----------------------------------------

def _callmap(**kw: object) -> object:
    from relay.b2bua.callmap import CallMap, Settings
    from relay.bindings.table import BindingTable

    return CallMap(Settings(host="127.0.0.1", port=5060, outbound=("127.0.0.1", 5080),
                            trunks=("127.0.0.1/32",), **kw), BindingTable())  # type: ignore[arg-type]


def test_callmap_refuses_a_stranger_once_and_rate_limits_it_but_not_a_trunk() -> None:
    from relay.b2bua.callmap import CallMap

    sw = _callmap(rate_limit=5, rate_window=10.0, rate_ban=30.0)
    assert isinstance(sw, CallMap)
    stranger = ("192.0.2.10", 5060)
    answers = []
    for n in range(8):
        sw.receive_datagram(invite(f"z9hG4bKcm{n}", f"cm{n}@x"), stranger, n * 0.01)
        answers += [d.split(b"\r\n", 1)[0] for d, _ in sw.datagrams_to_send()]
    # Five 403s (no 100 before them, nothing retransmitted), then silence: banned.
    assert answers == [b"SIP/2.0 403 Forbidden"] * 5
    assert sw.counts["rate_limited"] == 3 and len(sw.layer) == 0
    sw.handle_timer(40.0)
    assert sw.datagrams_to_send() == []
    # A trunk is never limited (an unknown X without SDP: 404 at once, stateless).
    trunk = ("127.0.0.1", 5062)
    for n in range(50):
        data = invite(f"z9hG4bKtr{n}", f"tr{n}@x").replace(b"192.0.2.10", b"127.0.0.1")
        sw.receive_datagram(data, trunk, 1.0 + n * 0.001)
    got = [d.split(b"\r\n", 1)[0] for d, _ in sw.datagrams_to_send()]
    assert got == [b"SIP/2.0 404 Not Found"] * 50
