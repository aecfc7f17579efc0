"""E.164 normalisation and masking.

Numbers travel through the relay as E.164 strings (`+` and 1 to 15 digits, ITU-T E.164 §6)
and are held in memory as the integer of their digits, which is smaller than the string
and makes a cheap dictionary key.
"""

from __future__ import annotations

import re

__all__ = ["InvalidNumber", "mask", "normalise", "normalise_ext", "split_extension", "to_int"]

# ITU-T E.164 §6: at most 15 digits, the country code never starts with 0.
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")
# Visual separators people and gateways put into numbers; anything else is refused.
_SEPARATORS = str.maketrans("", "", " -.()/")
_EXT = re.compile(r"[0-9]{1,8}")


class InvalidNumber(ValueError):
    """A number that is not (and cannot be made) E.164."""


def normalise(raw: str, default_cc: str = "") -> str:
    """Return `raw` as E.164 (`+8613800000001`), or raise InvalidNumber.

    Accepts `+CC...`, `00CC...` (international prefix), a `tel:` or `sip:` user part
    already stripped by the caller, and a national number when `default_cc` is set
    (a single leading trunk `0` is dropped, as in most numbering plans).
    """
    if not isinstance(raw, str):
        raise InvalidNumber("number must be a string")
    s = raw.strip().translate(_SEPARATORS)
    if s.startswith("+"):
        pass
    elif s.startswith("00"):
        s = "+" + s[2:]
    elif default_cc and s.isdigit():
        s = "+" + default_cc + (s[1:] if s.startswith("0") else s)
    if not _E164.fullmatch(s):
        raise InvalidNumber(f"not an E.164 number: {mask_raw(raw)!s}")
    return s


def normalise_ext(raw: str) -> str:
    """An AXE extension: 1 to 8 digits (leading zeros are significant)."""
    if not isinstance(raw, str) or not _EXT.fullmatch(raw):
        raise InvalidNumber("extension must be 1 to 8 digits")
    return raw


def split_extension(user: str) -> tuple[str, str | None]:
    """A dialled string as (number, extension): `X;ext=E` (RFC 3966 §5.1.1: the `ext`
    parameter of a telephone-subscriber, carried in a SIP URI's user part, RFC 3261
    §19.1.6) or `X,E` (the dial-string pause that PBXs and carriers use). Other
    parameters (`;isub=`, `;phone-context=`) are dropped. The extension is checked
    with `normalise_ext`; InvalidNumber for a malformed one."""
    number, sep, rest = user.partition(";")
    ext: str | None = None
    if sep:
        for param in rest.split(";"):
            name, _, value = param.partition("=")
            if name.lower() == "ext":
                ext = normalise_ext(value)
    if "," in number:
        number, _, tail = number.partition(",")
        if ext is None:
            ext = normalise_ext(tail)
    return number, ext


def to_int(e164: str) -> int:
    """`+8613800000001` -> 8613800000001 (the in-memory key form)."""
    return int(e164[1:])


def mask(e164: str | None) -> str | None:
    """Mask the middle of a number for logs and the `ops` role: `+86138****0001`.

    Keeps the country code and operator prefix (the first 5 digits) and the last 4, which
    is what operations staff need to tell numbers apart without learning them.
    """
    if e164 is None:
        return None
    digits = e164[1:] if e164.startswith("+") else e164
    if len(digits) <= 8:
        return "+" + "*" * (len(digits) - 2) + digits[-2:]
    return "+" + digits[:5] + "****" + digits[-4:]


def mask_raw(raw: object) -> str:
    """Mask something that failed validation without echoing it whole into an error."""
    s = str(raw)
    if len(s) <= 4:
        return "*" * len(s)
    return s[:2] + "*" * (len(s) - 4) + s[-2:]
