"""Splitting long text and reassembling parts from UDH (8/16-bit ref) or SAR TLVs."""

from __future__ import annotations

import random

import pytest

from relay.sms import constants as c
from relay.sms.concat import (
    ConcatError,
    Reassembler,
    Segment,
    parse_udh,
    sar_segment,
    split_text,
    udh_8bit,
)
from relay.sms.encoding import decode_text


def _join(parts: list[bytes]) -> bytes:
    return b"".join(parse_udh(p)[1] for p in parts)


def test_short_text_is_one_part_without_udh() -> None:
    assert split_text("a" * 160, 1) == (0, [b"a" * 160])
    assert split_text("中" * 70, 1) == (8, ["中".encode("utf-16-be") * 70])


def test_gsm_split_153_septets_with_udh() -> None:
    dc, parts = split_text("x" * 400, ref=0x2A)
    assert dc == 0 and len(parts) == 3
    assert [p[:6] for p in parts] == [udh_8bit(0x2A, 3, i) for i in (1, 2, 3)]
    assert parts[0][:6] == bytes.fromhex("0500032a0301")
    assert [len(p) - 6 for p in parts] == [153, 153, 94]


def test_gsm_split_never_breaks_escape_pair() -> None:
    text = "a" * 152 + "€" + "b" * 100  # '€' would occupy septets 153 and 154
    _, parts = split_text(text, 1)
    assert len(parts[0]) - 6 == 152
    assert parts[1][6:8] == b"\x1b\x65"
    assert decode_text(0, _join(parts)) == text


def test_ucs2_split_67_chars_and_never_breaks_surrogate_pair() -> None:
    _, parts = split_text("中" * 150, 1)
    assert [len(p) - 6 for p in parts] == [134, 134, 32]
    text = "中" * 66 + "😀" + "文" * 80  # the emoji's pair would straddle octet 134
    _, parts = split_text(text, 2)
    assert len(parts[0]) - 6 == 132
    assert parts[1][6:10] == bytes.fromhex("d83dde00")
    assert decode_text(8, _join(parts)) == text


def test_too_long() -> None:
    with pytest.raises(ConcatError):
        split_text("x" * 153 * 256, 1)


def test_parse_udh_16bit_reference() -> None:
    seg, body = parse_udh(bytes.fromhex("060804abcd0302") + b"hi")
    assert seg == Segment(0xABCD, 3, 2) and body == b"hi"


def test_parse_udh_skips_other_ies() -> None:
    # IEI 0x05 (application port, 16-bit) then the concatenation IE.
    seg, body = parse_udh(bytes.fromhex("0b 0504 0b840000 0003 07 02 01") + b"x")
    assert seg == Segment(7, 2, 1) and body == b"x"


@pytest.mark.parametrize("bad", [
    b"", bytes.fromhex("05000307"), bytes.fromhex("0300020102"), bytes.fromhex("0500030703 00"),
    bytes.fromhex("0500030702 03"), bytes.fromhex("01 00"),
])
def test_parse_udh_malformed(bad: bytes) -> None:
    with pytest.raises(ConcatError):
        parse_udh(bad)


def test_sar_segment() -> None:
    assert sar_segment({}) is None
    full = {c.TAG_SAR_MSG_REF_NUM: 300, c.TAG_SAR_TOTAL_SEGMENTS: 2, c.TAG_SAR_SEGMENT_SEQNUM: 2}
    assert sar_segment(full) == Segment(300, 2, 2)
    with pytest.raises(ConcatError):
        sar_segment({c.TAG_SAR_MSG_REF_NUM: 300})
    with pytest.raises(ConcatError):
        sar_segment({**full, c.TAG_SAR_SEGMENT_SEQNUM: 3})


def test_reassemble_out_of_order_with_duplicates() -> None:
    text = "订单" * 200
    dc, parts = split_text(text, 9)
    order = [*range(len(parts)), 0, 2]
    random.Random(5).shuffle(order)
    r = Reassembler(timeout=60)
    done = None
    seen: set[int] = set()
    for i in order:
        seg, body = parse_udh(parts[i])
        assert seg is not None
        result = r.add(("gw", "A", "X", seg.ref), seg, dc, body, now=1.0, context=i)
        if i in seen:
            assert result is None
        seen.add(i)
        if result is not None:
            assert done is None
            done = result
            assert len(seen) == len(parts)
    assert done is not None
    assert decode_text(done.data_coding, done.payload) == text
    assert done.contexts == tuple(range(len(parts)))
    assert len(r) == 0


def test_keys_keep_messages_apart_and_timeout_drops_incomplete() -> None:
    r = Reassembler(timeout=10)
    assert r.add(("A", "X", 1), Segment(1, 2, 1), 0, b"a1", now=0.0) is None
    assert r.add(("B", "X", 1), Segment(1, 2, 2), 0, b"b2", now=5.0) is None
    assert r.next_deadline() == 10.0
    assert r.expire(9.9) == []
    expired = r.expire(10.0)
    assert [k for k, _ in expired] == [("A", "X", 1)]
    assert r.next_deadline() == 15.0
    done = r.add(("B", "X", 1), Segment(1, 2, 1), 0, b"b1", now=6.0)
    assert done is not None and done.payload == b"b1b2"
    assert r.next_deadline() is None
