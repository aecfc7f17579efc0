"""Bencode and rtpengine's ng framing, sans-IO (for the later rtpengine backend).

The ng control protocol (rtpengine's docs, "ng control protocol") sends one UDP
datagram per message: a cookie, one space, then a bencoded dictionary; the reply
echoes the cookie. Bencode itself is BitTorrent's BEP 3 encoding: `i<int>e`,
`<len>:<bytes>`, `l...e`, `d...e`.

Decoding is strict where sloppiness hides bugs (leading zeros, "-0", duplicate keys,
trailing bytes, truncation) and tolerant where rtpengine is known to differ from
BEP 3: dictionary keys need not be sorted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

__all__ = ["BencodeError", "Value", "decode", "decode_ng", "encode", "encode_ng"]

Value = Union[int, bytes, list["Value"], dict[bytes, "Value"]]  # noqa: UP007
_MAX_DEPTH = 64


class BencodeError(ValueError):
    """A remote error: the bytes are not valid bencode (or not an ng message)."""


def encode(value: object) -> bytes:
    """Bencode ints, bytes, str (UTF-8), lists/tuples and dicts (keys sorted, BEP 3)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans; send an int or a string")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode("utf-8"), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            key = k.encode("utf-8") if isinstance(k, str) else k
            if not isinstance(key, bytes):
                raise TypeError(f"bencode dict keys are strings, not {type(k).__name__}")
            items.append((key, v))
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for key, v in items:
            _encode(key, out)
            _encode(v, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """Decode one complete bencoded value; strings come back as bytes."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, i: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i]
    if c == 0x69:  # i<digits>e
        end = data.find(b"e", i + 1)
        if end < 0:
            raise BencodeError("truncated integer")
        digits = data[i + 1 : end]
        body = digits[1:] if digits.startswith(b"-") else digits
        if (not body.isdigit() or (body.startswith(b"0") and len(digits) > 1)
                or len(body) > 64):
            raise BencodeError(f"bad integer {digits[:20]!r}")  # BEP 3: no i03e, no i-0e
        return int(digits), end + 1
    if c == 0x6C:  # l...e
        items: list[Value] = []
        i += 1
        while True:
            if i >= len(data):
                raise BencodeError("truncated list")
            if data[i] == 0x65:
                return items, i + 1
            item, i = _decode(data, i, depth + 1)
            items.append(item)
    if c == 0x64:  # d...e
        result: dict[bytes, Value] = {}
        i += 1
        while True:
            if i >= len(data):
                raise BencodeError("truncated dictionary")
            if data[i] == 0x65:
                return result, i + 1
            key, i = _decode(data, i, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            if key in result:
                raise BencodeError(f"duplicate key {key!r}")
            result[key], i = _decode(data, i, depth + 1)
    if 0x30 <= c <= 0x39:  # <len>:<bytes>
        colon = data.find(b":", i)
        if colon < 0:
            raise BencodeError("truncated string length")
        length = data[i:colon]
        if (not length.isdigit() or (length.startswith(b"0") and len(length) > 1)
                or len(length) > 10):
            raise BencodeError(f"bad string length {length[:20]!r}")
        start = colon + 1
        end = start + int(length)
        if end > len(data):
            raise BencodeError("truncated string")
        return data[start:end], end
    raise BencodeError(f"unexpected byte {bytes([c])!r} at offset {i}")


def encode_ng(cookie: str | bytes, message: Mapping[str, Any] | Mapping[bytes, Any]) -> bytes:
    """One ng datagram: `<cookie> <bencoded dict>`; the cookie must not contain a space."""
    raw = cookie.encode("ascii") if isinstance(cookie, str) else cookie
    if not raw or b" " in raw:
        raise ValueError("an ng cookie is a non-empty token without spaces")
    return raw + b" " + encode(message)


def decode_ng(data: bytes) -> tuple[bytes, dict[bytes, Value]]:
    """Split an ng datagram into (cookie, dictionary); `BencodeError` if malformed."""
    cookie, sep, body = data.partition(b" ")
    if not sep or not cookie:
        raise BencodeError("ng message without a cookie")
    value = decode(body)
    if not isinstance(value, dict):
        raise BencodeError("ng message body is not a dictionary")
    return cookie, value
