"""Bencode (BEP 3) and rtpengine ng framing (relay/media/bencode.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.media.bencode import BencodeError, decode, decode_ng, encode, encode_ng


def test_vectors() -> None:
    assert encode(0) == b"i0e" and encode(-42) == b"i-42e"
    assert encode("spam") == b"4:spam" and encode(b"") == b"0:"
    assert encode(["spam", 3]) == b"l4:spami3ee"
    assert encode({"spam": ["a", "b"], "cow": "moo"}) == b"d3:cow3:moo4:spaml1:a1:bee"
    assert decode(b"d3:cow3:moo4:spaml1:a1:bee") == {b"cow": b"moo", b"spam": [b"a", b"b"]}


def test_rtpengine_offer_round_trip() -> None:
    msg = {"command": "offer", "call-id": "abc@host", "from-tag": "t1",
           "sdp": "v=0\r\n", "flags": ["trust-address"], "replace": ["origin"]}
    data = encode_ng("5323_1", msg)
    assert data.startswith(b"5323_1 d7:call-id8:abc@host")
    cookie, body = decode_ng(data)
    assert cookie == b"5323_1" and body[b"command"] == b"offer"
    assert body[b"flags"] == [b"trust-address"]
    # rtpengine does not sort its keys; that is accepted.
    assert decode_ng(b"c1 d6:result2:ok3:sdp3:v=0e")[1] == {b"result": b"ok", b"sdp": b"v=0"}


@pytest.mark.parametrize(("data", "error"), [
    (b"i03e", "bad integer"), (b"i-0e", "bad integer"), (b"ie", "bad integer"),
    (b"i12", "truncated integer"), (b"5:abc", "truncated string"),
    (b"03:abc", "bad string length"), (b"l", "truncated list"), (b"d1:a", "truncated"),
    (b"d1:ai1e1:ai2ee", "duplicate key"), (b"di1ei2ee", "not a string"),
    (b"i1ei2e", "trailing data"), (b"x", "unexpected byte"), (b"", "truncated"),
    (b"l" * 100 + b"e" * 100, "nested too deeply"),
    (b"i" + b"9" * 5000 + b"e", "bad integer"), (b"9" * 5000 + b":", "bad string length"),
])
def test_invalid_bencode(data: bytes, error: str) -> None:
    with pytest.raises(BencodeError, match=error):
        decode(data)


def test_ng_framing_errors() -> None:
    with pytest.raises(BencodeError, match="cookie"):
        decode_ng(b"d1:ai1ee")
    with pytest.raises(BencodeError, match="not a dictionary"):
        decode_ng(b"c1 li1ee")
    with pytest.raises(ValueError):
        encode_ng("a b", {})
    with pytest.raises(TypeError):
        encode(True)


values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


@given(values)
def test_round_trip_property(value: object) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=30))
def test_decode_fails_only_with_bencode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert decode(encode(value)) == value
