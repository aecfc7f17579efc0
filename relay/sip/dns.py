"""DNS for locating SIP servers (RFC 3263), sans-IO.

Two halves, neither touching a socket or a clock:

- a codec: :func:`encode_query` builds one RFC 1035 query; :func:`decode_message` parses
  a response into a :class:`DnsMessage` (compression pointers followed with a loop guard).
  Every malformed input raises :class:`DnsError`, never IndexError or struct.error: the
  bytes come from the network.
- the RFC 3263 §4 walk: :func:`walk` takes the URI's host, port and transport and the
  record sets found so far, and returns either the ordered targets or the queries still
  needed. The asyncio adapter (``relay/io/dns.py``) loops: ask, feed the answers, walk.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from relay.sip.dialog import RandomBytes, system_random

__all__ = ["AAAA", "CNAME", "NAPTR", "SOA", "SRV", "A", "DnsError", "DnsMessage", "NaptrRecord",
           "Question", "Rcode", "ResourceRecord", "SrvRecord", "Target", "Walk", "decode_message",
           "default_port", "encode_query", "negative_ttl", "order_srv", "records_for",
           "select_targets", "walk"]

# RFC 1035 §3.2.2, RFC 3596 (AAAA), RFC 2782 (SRV), RFC 3403 (NAPTR)
A, CNAME, SOA, AAAA, SRV, NAPTR = 1, 5, 6, 28, 33, 35
CLASS_IN = 1
_HEADER = struct.Struct("!HHHHHH")
_MAX_NAME = 255          # RFC 1035 §2.3.4: octets in a name on the wire
_MAX_JUMPS = 64          # more pointers than a 255-octet name can need: a loop


class DnsError(ValueError):
    """A DNS message that cannot be decoded, or a name that cannot be encoded."""


class Rcode(IntEnum):
    """RFC 1035 §4.1.1 response codes."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    """RFC 3403 §4.1: flags, services and regexp are case-folded text."""

    order: int
    preference: int
    flags: str
    services: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """RFC 2782."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SoaRecord:
    """RFC 1035 §3.3.13; only what negative caching (RFC 2308) needs is kept."""

    mname: str
    minimum: int


RData = NaptrRecord | SrvRecord | SoaRecord | str | bytes  # str: an address or a CNAME


@dataclass(frozen=True, slots=True)
class Question:
    name: str
    rtype: int
    rclass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: RData


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    is_response: bool
    truncated: bool
    rcode: int
    questions: tuple[Question, ...]
    answers: tuple[ResourceRecord, ...]
    authority: tuple[ResourceRecord, ...]
    additional: tuple[ResourceRecord, ...]


class Target(NamedTuple):
    """Where to send: an IP address, a port and "UDP", "TCP" or "TLS"."""

    ip: str
    port: int
    transport: str


# --- codec -----------------------------------------------------------------------------

def _normalise(name: str) -> str:
    """Names compare case-insensitively (RFC 4343) and without the root dot."""
    return name.rstrip(".").lower()


def encode_name(name: str) -> bytes:
    """RFC 1035 §3.1: a sequence of length-prefixed labels ending with the root label."""
    out = bytearray()
    for label in _normalise(name).split(".") if _normalise(name) else []:
        try:
            raw = label.encode("ascii") if label.isascii() else label.encode("idna")
        except UnicodeError as exc:
            raise DnsError(f"bad label in {name!r}") from exc
        if not 0 < len(raw) <= 63:
            raise DnsError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    out.append(0)
    if len(out) > _MAX_NAME:
        raise DnsError(f"name too long: {name!r}")
    return bytes(out)


def encode_query(name: str, rtype: int,
                 random_bytes: RandomBytes = system_random) -> tuple[int, bytes]:
    """One recursive query (RD set) for `name`/`rtype` in class IN: (id, wire bytes).

    The id is random (RFC 5452 §9.2): with the random source port the adapter picks, it is
    what stops an off-path forger.
    """
    query_id = int.from_bytes(random_bytes(2), "big")
    header = _HEADER.pack(query_id, 0x0100, 1, 0, 0, 0)  # RD=1, one question
    return query_id, header + encode_name(name) + struct.pack("!HH", rtype, CLASS_IN)


class _Reader:
    """Bounds-checked reads over one message; every overrun is a DnsError."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def take(self, offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(self.data):
            raise DnsError("truncated message")
        return self.data[offset:offset + size]

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.take(offset, 2), "big")

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.take(offset, 4), "big")

    def name(self, offset: int) -> tuple[str, int]:
        """A possibly compressed name (RFC 1035 §4.1.4) and the offset after it in place."""
        labels: list[str] = []
        end = -1
        jumps = 0
        length = 0
        while True:
            size = self.take(offset, 1)[0]
            if size & 0xC0 == 0xC0:
                target = self.u16(offset) & 0x3FFF
                if end < 0:
                    end = offset + 2
                jumps += 1
                # A pointer must point backwards; with the jump cap this ends every loop.
                if jumps > _MAX_JUMPS or target >= offset:
                    raise DnsError("compression pointer loop")
                offset = target
                continue
            if size & 0xC0:
                raise DnsError("reserved label type")  # RFC 6891 §5: 0x40/0x80 unused
            offset += 1
            if size == 0:
                break
            raw = self.take(offset, size)
            length += size + 1
            if length > _MAX_NAME:
                raise DnsError("name too long")
            labels.append(raw.decode("ascii", "replace").lower())
            offset += size
        return ".".join(labels), (end if end >= 0 else offset)

    def char_string(self, offset: int) -> tuple[str, int]:
        """RFC 1035 §3.3 <character-string>: a length octet and that many octets."""
        size = self.take(offset, 1)[0]
        return self.take(offset + 1, size).decode("ascii", "replace"), offset + 1 + size


def _rdata(reader: _Reader, rtype: int, start: int, size: int) -> RData:
    end = start + size
    reader.take(start, size)  # the whole RDATA is there before any field is read
    data: RData
    if rtype == A:
        if size != 4:
            raise DnsError("A record of wrong size")
        data = str(ipaddress.IPv4Address(reader.take(start, 4)))
        return data
    if rtype == AAAA:
        if size != 16:
            raise DnsError("AAAA record of wrong size")
        return str(ipaddress.IPv6Address(reader.take(start, 16)))
    if rtype == SRV:
        prio, weight, port = struct.unpack("!HHH", reader.take(start, 6))
        target, after = reader.name(start + 6)
        data = SrvRecord(prio, weight, port, target)
    elif rtype == NAPTR:
        order, pref = struct.unpack("!HH", reader.take(start, 4))
        flags, at = reader.char_string(start + 4)
        services, at = reader.char_string(at)
        regexp, at = reader.char_string(at)
        replacement, after = reader.name(at)
        data = NaptrRecord(order, pref, flags.lower(), services.lower(), regexp, replacement)
    elif rtype == CNAME:
        data, after = reader.name(start)
    elif rtype == SOA:
        mname, at = reader.name(start)
        _rname, at = reader.name(at)
        minimum = reader.u32(at + 16)  # serial, refresh, retry, expire, then minimum
        data, after = SoaRecord(mname, minimum), at + 20
    else:
        return reader.take(start, size)
    if after != end:
        raise DnsError(f"RDATA of type {rtype} has the wrong length")
    return data


def decode_message(data: bytes) -> DnsMessage:
    """Parse a DNS message; any malformation raises DnsError."""
    reader = _Reader(bytes(data))
    if len(reader.data) < _HEADER.size:
        raise DnsError("shorter than a DNS header")
    query_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(reader.data)
    offset = _HEADER.size
    questions = []
    for _ in range(qdcount):
        name, offset = reader.name(offset)
        rtype, rclass = reader.u16(offset), reader.u16(offset + 2)
        offset += 4
        questions.append(Question(name, rtype, rclass))
    sections: list[list[ResourceRecord]] = [[], [], []]
    for section, count in zip(sections, (ancount, nscount, arcount), strict=True):
        for _ in range(count):
            name, offset = reader.name(offset)
            rtype, rclass = reader.u16(offset), reader.u16(offset + 2)
            ttl = reader.u32(offset + 4)
            size = reader.u16(offset + 8)
            offset += 10
            rdata = _rdata(reader, rtype, offset, size)
            offset += size
            # RFC 2181 §8: a TTL with the top bit set is treated as zero.
            section.append(ResourceRecord(name, rtype, rclass, 0 if ttl >> 31 else ttl, rdata))
    return DnsMessage(
        id=query_id, is_response=bool(flags & 0x8000), truncated=bool(flags & 0x0200),
        rcode=flags & 0x000F, questions=tuple(questions), answers=tuple(sections[0]),
        authority=tuple(sections[1]), additional=tuple(sections[2]))


def records_for(message: DnsMessage, name: str, rtype: int) -> list[ResourceRecord]:
    """The answers of `rtype` for `name`, following CNAMEs inside the answer section."""
    want = _normalise(name)
    for _ in range(8):  # a CNAME chain longer than this is broken or hostile
        found = [rr for rr in message.answers
                 if rr.rtype == rtype and rr.name == want and rr.rclass == CLASS_IN]
        if found:
            return found
        alias = next((rr.data for rr in message.answers
                      if rr.rtype == CNAME and rr.name == want and isinstance(rr.data, str)),
                     None)
        if alias is None:
            return []
        want = alias
    return []


def negative_ttl(message: DnsMessage) -> int | None:
    """RFC 2308 §5: how long a NXDOMAIN/NODATA answer may be cached, from the SOA in the
    authority section (the lesser of its TTL and MINIMUM); None without one."""
    for rr in message.authority:
        if rr.rtype == SOA and isinstance(rr.data, SoaRecord):
            return min(rr.ttl, rr.data.minimum)
    return None


# --- RFC 3263 §4: which targets, in which order ----------------------------------------

# RFC 3263 §4.1 services and the transports they name
_SERVICES = {"sip+d2u": "UDP", "sip+d2t": "TCP", "sips+d2t": "TLS"}
_SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}

RecordSets = Mapping[tuple[str, int], Sequence[RData]]


def default_port(transport: str) -> int:
    """RFC 3261 §19.1.2: 5061 for TLS, else 5060."""
    return 5061 if transport.upper() == "TLS" else 5060


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def order_srv(records: Sequence[SrvRecord],
              random: Callable[[], float]) -> list[SrvRecord]:
    """RFC 2782 ordering: priority ascending; within one priority, a weighted random
    draw without replacement. `random` returns a float in [0, 1)."""
    usable = [r for r in records if _normalise(r.target)]  # "." : service not offered
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in usable}):
        # RFC 2782 gives weight-0 records "a very small chance"; here they come after
        # every weighted record of their priority, so an operator's 0 means "spare".
        group = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                ordered.extend(group)
                break
            pick = random() * total
            running = 0
            chosen = group[-1]
            for record in group:
                running += record.weight
                if record.weight and running > pick:
                    chosen = record
                    break
            ordered.append(chosen)
            group.remove(chosen)
    return ordered


class Walk(NamedTuple):
    """The outcome of :func:`walk`: queries still needed, else the targets."""

    needed: list[tuple[str, int]]
    targets: list[Target]


def walk(host: str, port: int | None, transport: str | None, found: RecordSets, *,
         secure: bool = False, transports: Sequence[str] = ("UDP", "TCP", "TLS"),
         families: Sequence[int] = (A, AAAA),
         random: Callable[[], float] | None = None) -> Walk:
    """RFC 3263 §4 for a URI's `host`, `port`, `transport` param (None when absent) and
    `secure` (a sips: URI), given the record sets `found` so far: a mapping from
    (name, rtype) to record data (an empty sequence for a name that has none).

    Returns the (name, rtype) queries still needed, or, when none are, the ordered
    targets. `transports` are the ones this side speaks, in order of preference.
    """
    speak = [t.upper() for t in transports if t.upper() in _SRV_PREFIX]
    if secure:
        speak = [t for t in speak if t == "TLS"]
    want = transport.upper() if transport else None
    if secure and want == "TCP":  # RFC 3261 §26.2.2: sips over TCP means TLS
        want = "TLS"
    if want is not None and want not in _SRV_PREFIX:
        raise DnsError(f"unsupported transport {transport!r}")  # a configuration error
    literal = _ip_literal(host)
    # §4.1: a numeric address, or an explicit port, with no transport: UDP (TLS for sips)
    fallback = want or ("TLS" if secure else "UDP")
    if literal is not None:
        return Walk([], [Target(literal, port or default_port(fallback), fallback)])
    name = _normalise(host)
    if port is not None:  # §4.2: a port given means A/AAAA only
        return _addresses([(name, port, fallback)], found, families)
    if want is None:
        needed_naptr = (name, NAPTR)
        if needed_naptr not in found:
            return Walk([needed_naptr], [])
        services = _naptr_services(found[needed_naptr], speak)
    else:
        services = []
    if not services:  # §4.1: no NAPTR (or a transport given): SRV per transport
        services = [(_SRV_PREFIX[t] + name, t) for t in ([want] if want else speak)]
    needed = [(srv_name, SRV) for srv_name, _ in services if (srv_name, SRV) not in found]
    if needed:
        return Walk(needed, [])
    pick = random if random is not None else _system_float
    hosts: list[tuple[str, int, str]] = []
    for srv_name, t in services:
        records = [r for r in found[(srv_name, SRV)] if isinstance(r, SrvRecord)]
        hosts += [(_normalise(r.target), r.port, t) for r in order_srv(records, pick)]
    if not hosts:  # §4.2: no SRV at all: the host itself on the default port
        hosts = [(name, default_port(fallback), fallback)]
    return _addresses(hosts, found, families)


def select_targets(host: str, port: int | None, transport: str | None, found: RecordSets, *,
                   secure: bool = False, transports: Sequence[str] = ("UDP", "TCP", "TLS"),
                   families: Sequence[int] = (A, AAAA),
                   random: Callable[[], float] | None = None) -> list[Target]:
    """The targets of :func:`walk` once nothing is missing; DnsError if something is."""
    result = walk(host, port, transport, found, secure=secure, transports=transports,
                  families=families, random=random)
    if result.needed:
        raise DnsError(f"records still needed: {result.needed}")
    return result.targets


def _naptr_services(records: Sequence[RData], speak: Sequence[str]) -> list[tuple[str, str]]:
    """§4.1: SIP NAPTRs with the "s" flag, for transports we speak, by order/preference."""
    naptrs = sorted((r for r in records if isinstance(r, NaptrRecord)),
                    key=lambda r: (r.order, r.preference))
    out = []
    for r in naptrs:
        t = _SERVICES.get(r.services)
        if t is not None and t in speak and r.flags == "s" and _normalise(r.replacement):
            out.append((_normalise(r.replacement), t))
    return out


def _addresses(hosts: list[tuple[str, int, str]], found: RecordSets,
               families: Sequence[int]) -> Walk:
    needed = [(h, f) for h, _, _ in hosts for f in families if (h, f) not in found]
    if needed:
        return Walk(list(dict.fromkeys(needed)), [])
    targets: list[Target] = []
    for h, p, t in hosts:
        for f in families:
            targets += [Target(ip, p, t) for ip in found[(h, f)] if isinstance(ip, str)]
    return Walk([], list(dict.fromkeys(targets)))


def _system_float() -> float:
    return int.from_bytes(system_random(7), "big") / (1 << 56)
