"""Text codecs for SMS: GSM 03.38 7-bit (unpacked and packed), Latin-1, UCS-2.

SMPP 3.4 §5.2.19 data_coding: 0 = SMSC default alphabet (GSM 03.38 here, carried
unpacked, one septet per octet, as SMSCs and gateways such as Kannel do), 3 = Latin-1,
8 = UCS-2. UCS-2 is written as UTF-16 big-endian so characters outside the BMP
(emoji) travel as surrogate pairs, which every current handset decodes.
"""

from __future__ import annotations

from relay.sms import constants as c

# GSM 03.38 §6.2.1 default alphabet, indexed by septet value.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# GSM 03.38 §6.2.1.1 extension table: reached by ESC followed by this septet.
GSM_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}

_ENCODE: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(GSM_BASIC) if i != ESCAPE}
_ENCODE.update({ch: bytes([ESCAPE, code]) for code, ch in GSM_EXTENSION.items()})
# The same tables for str.translate, so a whole message is converted in one C pass; the
# per-character loops remain for what the tables cannot say (which character is not
# GSM, what an escape stands for).
_GSM_CHARS = frozenset(_ENCODE)
_ENCODE_TRANSLATE = {ord(ch): code.decode("latin-1") for ch, code in _ENCODE.items()}
_DECODE_TRANSLATE = {i: ch for i, ch in enumerate(GSM_BASIC)}


class TextEncodingError(ValueError):
    """Text that the requested alphabet cannot carry, or octets that do not decode."""


def gsm_fits(text: str) -> bool:
    """True if every character of `text` is in the GSM default or extension table."""
    return _GSM_CHARS.issuperset(text)


def gsm_encode(text: str) -> bytes:
    """Encode to unpacked GSM septets (one per octet); extension chars become ESC+code."""
    if _GSM_CHARS.issuperset(text):
        return text.translate(_ENCODE_TRANSLATE).encode("latin-1")
    try:
        return b"".join(_ENCODE[ch] for ch in text)
    except KeyError as exc:
        raise TextEncodingError(f"{exc.args[0]!r} is not in the GSM 03.38 alphabet") from None


def gsm_units(text: str) -> list[bytes]:
    """Per-character GSM encodings (1 or 2 septets), the indivisible units for splitting."""
    try:
        return [_ENCODE[ch] for ch in text]
    except KeyError as exc:
        raise TextEncodingError(f"{exc.args[0]!r} is not in the GSM 03.38 alphabet") from None


def gsm_decode(septets: bytes) -> str:
    """Decode unpacked GSM septets. An unknown escape shows the basic character
    (GSM 03.38 §6.2.1.1: a receiver without the extension displays the default one)."""
    if septets.isascii() and ESCAPE not in septets:
        return septets.decode("ascii").translate(_DECODE_TRANSLATE)
    out: list[str] = []
    escaped = False
    for b in septets:
        if b > 0x7F:
            raise TextEncodingError(f"octet 0x{b:02X} is not a septet")
        if escaped:
            out.append(GSM_EXTENSION.get(b, GSM_BASIC[b] if b != ESCAPE else " "))
            escaped = False
        elif b == ESCAPE:
            escaped = True
        else:
            out.append(GSM_BASIC[b])
    return "".join(out)


def gsm_septet_length(text: str) -> int:
    """Number of septets `text` needs in GSM 7-bit (extension chars count two)."""
    return len(gsm_encode(text))


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets into octets, LSB first (GSM 03.38 §6.1.2.1.1).

    `fill_bits` zero bits come first, so a message after a UDH starts on a septet
    boundary (GSM 03.40 §9.2.3.24: a 6-octet UDH, 48 bits, needs 1 fill bit).
    """
    acc = 0
    nbits = fill_bits
    out = bytearray()
    for s in septets:
        if s > 0x7F:
            raise TextEncodingError(f"0x{s:02X} is not a septet")
        acc |= s << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def unpack_septets(octets: bytes, count: int | None = None, fill_bits: int = 0) -> bytes:
    """Unpack `count` septets (all that fit if None) from packed octets."""
    total_bits = len(octets) * 8 - fill_bits
    available = total_bits // 7
    if count is None:
        count = available
    elif count > available:
        raise TextEncodingError(f"{count} septets do not fit in {len(octets)} octets")
    value = int.from_bytes(octets, "little") >> fill_bits
    return bytes((value >> (7 * i)) & 0x7F for i in range(count))


def ucs2_encode(text: str) -> bytes:
    """UCS-2 as UTF-16BE: non-BMP characters become surrogate pairs."""
    return text.encode("utf-16-be")


def ucs2_decode(data: bytes) -> str:
    """Decode UTF-16BE; a lone surrogate or odd length is an error, never a guess."""
    if len(data) % 2:
        raise TextEncodingError("UCS-2 text with an odd number of octets")
    try:
        return data.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise TextEncodingError(f"bad UCS-2: {exc.reason}") from None


def encode_text(text: str) -> tuple[int, bytes]:
    """Pick the alphabet for `text`: GSM 7-bit (data_coding 0) if it fits, else UCS-2 (8)."""
    if gsm_fits(text):
        return c.DATA_CODING_DEFAULT, gsm_encode(text)
    return c.DATA_CODING_UCS2, ucs2_encode(text)


def decode_text(data_coding: int, data: bytes) -> str:
    """Decode a short_message body per SMPP 3.4 §5.2.19 data_coding."""
    if data_coding == c.DATA_CODING_DEFAULT:
        return gsm_decode(data)
    if data_coding == c.DATA_CODING_UCS2:
        return ucs2_decode(data)
    if data_coding in (c.DATA_CODING_LATIN1, 0x01):  # 1 = IA5/ASCII, a Latin-1 subset
        return data.decode("latin-1")
    raise TextEncodingError(f"data_coding 0x{data_coding:02X} is not text this relay decodes")
