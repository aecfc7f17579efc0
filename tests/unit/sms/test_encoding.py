"""GSM 03.38 7-bit (unpacked, packed, extension table), Latin-1 and UCS-2 with surrogates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.sms import constants as c
from relay.sms.encoding import (
    GSM_BASIC,
    GSM_EXTENSION,
    TextEncodingError,
    decode_text,
    encode_text,
    gsm_decode,
    gsm_encode,
    gsm_septet_length,
    pack_septets,
    ucs2_decode,
    ucs2_encode,
    unpack_septets,
)


def test_basic_table_positions() -> None:
    # Spot checks against GSM 03.38 §6.2.1: 0x00 '@', 0x01 '£', 0x11 '_', 0x1B escape,
    # 0x24 '¤', 0x40 '¡', 0x5F '§', 0x60 '¿', 0x7F 'à'.
    assert len(GSM_BASIC) == 128
    assert gsm_encode("@£_¤¡§¿à") == bytes([0x00, 0x01, 0x11, 0x24, 0x40, 0x5F, 0x60, 0x7F])


def test_extension_chars_escape_pairs() -> None:
    assert gsm_encode("€[]{}^~|\\") == bytes.fromhex("1b65 1b3c 1b3e 1b28 1b29 1b14 1b3d 1b40 1b2f")
    assert gsm_decode(bytes.fromhex("1b65 1b3c 1b3e 1b28 1b29 1b14 1b3d 1b40 1b2f")) == "€[]{}^~|\\"
    assert gsm_septet_length("a€") == 3
    assert len(GSM_EXTENSION) == 10


def test_unknown_escape_falls_back_to_basic_char() -> None:
    # GSM 03.38 §6.2.1.1: an unknown extension shows the basic-table character.
    assert gsm_decode(b"\x1b\x41") == "A"


def test_not_gsm() -> None:
    with pytest.raises(TextEncodingError):
        gsm_encode("中")
    with pytest.raises(TextEncodingError):
        gsm_decode(b"\x80")


def test_packed_septets_classic_vector() -> None:
    # "hellohello" packed is the textbook GSM 03.38 example: E8 32 9B FD 46 97 D9 EC 37.
    packed = pack_septets(gsm_encode("hellohello"))
    assert packed == bytes.fromhex("e8329bfd4697d9ec37")
    assert gsm_decode(unpack_septets(packed, 10)) == "hellohello"


def test_packed_with_fill_bit_after_udh() -> None:
    # After a 6-octet UDH one fill bit aligns the first septet: 'A' (0x41) << 1 = 0x82.
    assert pack_septets(b"\x41", fill_bits=1) == b"\x82"
    assert unpack_septets(b"\x82", 1, fill_bits=1) == b"\x41"
    with pytest.raises(TextEncodingError):
        unpack_septets(b"\x82", 2)


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)))
def test_pack_unpack_round_trip(septets: bytes) -> None:
    assert unpack_septets(pack_septets(septets), len(septets)) == septets


def test_ucs2_chinese_and_emoji() -> None:
    assert ucs2_encode("你好") == bytes.fromhex("4f60597d")
    # U+1F600 outside the BMP: the surrogate pair D83D DE00.
    assert ucs2_encode("😀") == bytes.fromhex("d83dde00")
    assert ucs2_decode(bytes.fromhex("4f60597dd83dde00")) == "你好😀"


@pytest.mark.parametrize("bad", [bytes.fromhex("d83d"), bytes.fromhex("de00 0041"), b"\x00"])
def test_ucs2_refuses_lone_surrogates_and_odd_length(bad: bytes) -> None:
    with pytest.raises(TextEncodingError):
        ucs2_decode(bad)


def test_encode_text_picks_alphabet() -> None:
    assert encode_text("Price: 5€ [ok]") == (c.DATA_CODING_DEFAULT, gsm_encode("Price: 5€ [ok]"))
    assert encode_text("订单已送达") == (c.DATA_CODING_UCS2, "订单已送达".encode("utf-16-be"))
    assert encode_text("hi 😀")[0] == c.DATA_CODING_UCS2


def test_decode_text_by_data_coding() -> None:
    assert decode_text(0, gsm_encode("a€")) == "a€"
    assert decode_text(3, "café".encode("latin-1")) == "café"
    assert decode_text(8, ucs2_encode("你好")) == "你好"
    with pytest.raises(TextEncodingError):
        decode_text(4, b"\x00\x01")


@given(st.text(alphabet=st.sampled_from(GSM_BASIC.replace("\x1b", "") + "€[]{}^~|\\")))
def test_gsm_round_trip(text: str) -> None:
    assert gsm_decode(gsm_encode(text)) == text


@given(st.text())
def test_encode_text_round_trip(text: str) -> None:
    try:
        dc, data = encode_text(text)
    except UnicodeEncodeError:
        return  # lone surrogates in a Python str cannot be sent at all
    assert decode_text(dc, data) == text
