"""Straight-line Python for each PDU type, generated from its declared body layout.

pdu.py declares every body as a layout of fields (kind, maximum size, the status a bad
value deserves) and encodes and parses it with one generic, checked loop: the grammar
and its exact errors live there. This module writes, per type and as dataclasses does
for `__init__`, the same work without the loop, for the messages that are on the hot
path of a gateway (every submit_sm, deliver_sm and their answers):

- `__init__` and `with_sequence`: the `__init__` dataclasses writes for a frozen class
  calls `object.__setattr__` per field, a type lookup each time, about three times the
  cost of the slot's own descriptor, which is what these call. Same signature.
- `_encode()` / `_decode(body, command_status, sequence)`: the fast encoder and body
  parser. They return None at the first value they would have to judge (a string too
  long, a truncated body, an sm_length over 254...), and the codec then takes the
  checked path, which raises the exact LocalSmppError or SmppError. So a fast path
  never decides anything the checked path would not decide the same way; the unit
  tests compare the two on vectors and on random PDUs.

Sans-IO like the rest of relay/sms: pure functions of the class and its layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING
from dataclasses import fields as dc_fields
from typing import Any

# Field kinds of a PDU body (SMPP 3.4 §3.1): C-Octet string, time (C17: empty or
# exactly 16 characters, §7.1), 1-octet integer, short_message (preceded by sm_length).
CSTR, TIME, U8, SM = "cstr", "time", "u8", "sm"

HEADER_FIELDS = ("sequence", "command_status", "tlvs")

Layout = tuple[tuple[str, str, int, int], ...]


def compile_pdu(cls: Any, layout: Layout, helpers: dict[str, Callable[..., Any]],
                max_size: int) -> None:
    """Install the generated `__init__`, `with_sequence`, `_encode` and `_decode` on `cls`.

    `helpers` are `pack_header(buf, offset, length, command_id, status, sequence)`,
    `tlv_header(tag, length)` and `parse_tlvs(body, pos, end)` from pdu.py.
    """
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls,
                           **{f"_{name}": fn for name, fn in helpers.items()}}
    fields = dc_fields(cls)
    for f in fields:
        if f.default is MISSING or f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: PDU fields need a plain default")
        env[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's descriptor
        env[f"_default_{f.name}"] = f.default
    names = [f.name for f in fields]
    if set(names) != {name for name, *_ in layout} | set(HEADER_FIELDS):
        raise TypeError(f"{cls.__name__}: every field but {HEADER_FIELDS} needs a kind")
    source = "\n".join([
        *_init_source(names),
        *_encode_source(layout, cls.command_id, cls.has_tlvs, max_size),
        *_decode_source(layout, names, cls.has_tlvs), ""])
    exec(source, env)  # generated from the class's own fields, as dataclasses does
    for name in ("__init__", "with_sequence", "_encode", "_decode"):
        env[name].__qualname__ = f"{cls.__qualname__}.{name}"
    cls.__init__ = env["__init__"]
    env["with_sequence"].__doc__ = cls.with_sequence.__doc__
    cls.with_sequence = env["with_sequence"]
    cls._encode = env["_encode"]
    cls._decode = staticmethod(env["_decode"])


def _init_source(names: list[str]) -> list[str]:
    params = ", ".join(f"{n}=_default_{n}" for n in names)
    return [f"def __init__(self, *, {params}):",
            *(f"    _set_{n}(self, {n})" for n in names),
            "def with_sequence(self, sequence):",
            "    new = _new(_cls)",
            *(f"    _set_{n}(new, {'sequence' if n == 'sequence' else 'self.' + n})"
              for n in names),
            "    return new"]


def _encode_source(layout: Layout, command_id: int, has_tlvs: bool,
                   max_size: int) -> list[str]:
    lines = ["def _encode(self):", "    out = bytearray(16)"]  # the header goes in last
    for name, kind, size, _status in layout:
        lines.append(f"    v = self.{name}")
        if kind == U8:
            lines += ["    if not 0 <= v <= 255: return None",
                      "    out.append(v)"]
        elif kind == SM:
            lines += ["    if len(v) > 254: return None",
                      "    out.append(len(v))",
                      "    out += v"]
        else:
            exact = " or len(v) != 16" if kind == TIME else ""
            lines += ["    if v == '':",
                      "        out.append(0)",
                      f"    elif not v.isascii() or len(v) >= {size} or '\\x00' in v{exact}:",
                      "        return None",
                      "    else:",
                      "        out += v.encode('ascii')",
                      "        out.append(0)"]
    tlv_check = "if len(t.value) > 0xFFFF: return None" if has_tlvs else "return None"
    lines += ["    for t in self.tlvs:",
              f"        {tlv_check}",
              "        out += _tlv_header(t.tag, len(t.value))",
              "        out += t.value",
              "    length = len(out)",
              f"    if length > {max_size} or not 0 <= self.sequence <= 0xFFFFFFFF: return None",
              f"    _pack_header(out, 0, length, {command_id}, self.command_status, self.sequence)",
              "    return bytes(out)"]
    return lines


def _decode_source(layout: Layout, names: list[str], has_tlvs: bool) -> list[str]:
    # Offsets are absolute in the whole PDU, as in pdu._parse_body_checked.
    lines = ["def _decode(body, command_status, sequence):", "    pos = 16", "    end = len(body)"]
    for name, kind, size, _status in layout:
        lines.append("    if pos >= end: return None")
        if kind == U8:
            lines.append(f"    f_{name} = body[pos]; pos += 1")
        elif kind == SM:
            lines += ["    n = body[pos]",
                      "    if n > 254 or pos + 1 + n > end: return None",
                      f"    f_{name} = body[pos + 1:pos + 1 + n]; pos += 1 + n"]
        else:
            exact = " or nul - pos != 16" if kind == TIME else ""
            lines += ["    if body[pos] == 0:",
                      f"        f_{name} = ''; pos += 1",
                      "    else:",
                      f"        nul = body.find(b'\\x00', pos, pos + {size})",
                      f"        if nul < 0{exact}: return None",
                      f"        try: f_{name} = body[pos:nul].decode('ascii')",
                      "        except UnicodeDecodeError: return None",
                      "        pos = nul + 1"]
    lines += ["    tlvs = ()",
              "    if pos < end:",
              "        tlvs = _parse_tlvs(body, pos, end)" if has_tlvs else "        return None",
              "    pdu = _new(_cls)",
              *(f"    _set_{n}(pdu, {n if n in HEADER_FIELDS else 'f_' + n})" for n in names),
              "    return pdu"]
    return lines
