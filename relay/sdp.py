"""SDP codec (RFC 4566) and the B2BUA's media-address rewrite (RFC 3264).

Sans-IO. `SessionDescription.parse(data)` keeps every line in order, so
`bytes(SessionDescription.parse(x)) == x` for a CRLF-terminated body; typed views
(origin, connection, media, rtpmap, direction) are read from those lines.

`rewrite_for_peer` builds the SDP that one side of the call sees from the other
side's SDP: only the relay's address and ports, an origin the relay owns for that
leg, no ICE, and only the codecs the relay can carry and record.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Connection",
    "LocalMedia",
    "MediaDescription",
    "NoCommonCodec",
    "Origin",
    "RelayOrigin",
    "RemoteMedia",
    "SdpError",
    "SessionDescription",
    "choose_local_media",
    "local_answer",
    "local_offer",
    "remote_media",
    "rewrite_for_peer",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: Profiles the relay carries in the clear and so can record (RFC 3551, RFC 4585).
RELAYED_PROTOS = ("RTP/AVP", "RTP/AVPF")
#: The only attributes forwarded to the other side. A whitelist, not a blacklist:
#: an unknown attribute may carry an address or the peer's software (a=tool, like
#: User-Agent), and ICE (RFC 8839), rtcp-mux (RFC 5761; we offer plain +1 RTCP),
#: DTLS/SDES keys (RFC 8842, RFC 4568) describe a transport the relay replaces.
_FORWARDED_ATTRS = frozenset({
    *DIRECTIONS, "rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "rtcp-fb", "silenceSupp",
})
#: Lines forwarded besides a=, c= and s= (RFC 4566 §5: times, bandwidth, zone, repeat).
#: i=, u=, e=, p= may name the person (an email, a phone number), k= is a key.
_FORWARDED_LINES = frozenset("tbrz")


class SdpError(ValueError):
    """A remote error: the SDP cannot be used. `status` is the SIP answer it deserves."""

    status = 400
    reason = "Bad Request"


class NoCommonCodec(SdpError):
    """No stream is left that the relay can carry (RFC 3261 §21.4.26: 488)."""

    status = 488
    reason = "Not Acceptable Here"


# RFC 4566 §5: <type>=<value>, type one lowercase letter, no space around "=".
_LINE = re.compile(r"^([a-z])=([^\r\n\x00]*)$", re.ASCII)
# RFC 4566 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
_MEDIA = re.compile(
    r"^([A-Za-z0-9_.-]+) (\d{1,5})(?:/(\d{1,5}))? ([A-Za-z0-9/_.+-]+)((?: [^ ]+)*)$", re.ASCII)
# RFC 4566 §5.7: c=<nettype> <addrtype> <connection-address>
_CONN = re.compile(r"^(\S+) (\S+) (\S+)$")
# RFC 4566 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
_ORIGIN = re.compile(r"^(\S+) (\d{1,30}) (\d{1,30}) (\S+) (\S+) (\S+)$", re.ASCII)


def _is_uint(text: str, limit: int) -> bool:
    """ASCII digits only (str.isdigit also accepts "²") and at most `limit`."""
    return 0 < len(text) <= 6 and text.isascii() and text.isdigit() and int(text) <= limit


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line (RFC 4566 §5.2)."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass(frozen=True, slots=True)
class Connection:
    """The c= line (RFC 4566 §5.7); `address` without any /ttl suffix."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Decode a c= value; raise `SdpError` when it is not three fields."""
        m = _CONN.match(value)
        if not m:
            raise SdpError(f"malformed c= line: {value!r}")
        return cls(m[1], m[2], m[3].split("/", 1)[0])

    @property
    def is_hold(self) -> bool:
        """c=0.0.0.0: the RFC 2543 hold that RFC 3264 §8.4 still asks us to accept."""
        return self.address in ("0.0.0.0", "::")


@dataclass(slots=True)
class MediaDescription:
    """One m= section: the m= fields plus its other lines, in order."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: list[str]
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def m_value(self) -> str:
        """The value of the m= line."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.formats])

    def attributes(self, name: str) -> list[str]:
        """Values of every a=<name>:<value> (or "" for a=<name>) in this section."""
        return _attributes(self.lines, name)

    @property
    def connection(self) -> Connection | None:
        """The media-level c= line, if any."""
        return _connection(self.lines)

    @property
    def direction(self) -> str | None:
        """sendrecv / sendonly / recvonly / inactive if set here (RFC 4566 §6)."""
        return _direction(self.lines)

    @property
    def rtpmap(self) -> dict[str, str]:
        """Payload type -> "encoding/clock[/channels]" from a=rtpmap (RFC 4566 §6)."""
        out: dict[str, str] = {}
        for v in self.attributes("rtpmap"):
            pt, _, enc = v.partition(" ")
            out[pt] = enc.strip()
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        """Payload type -> format parameters from a=fmtp."""
        out: dict[str, str] = {}
        for v in self.attributes("fmtp"):
            pt, _, params = v.partition(" ")
            out[pt] = params.strip()
        return out

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """(port, address or None) from a=rtcp (RFC 3605 §2.1)."""
        for v in self.attributes("rtcp"):
            parts = v.split()
            if not parts or not _is_uint(parts[0], 65535):
                raise SdpError(f"malformed a=rtcp: {v!r}")
            return int(parts[0]), (parts[3] if len(parts) >= 4 else None)
        return None

    def encoding(self, pt: str) -> str | None:
        """The lowercase encoding name of `pt`, from a=rtpmap or the static table."""
        enc = self.rtpmap.get(pt)
        if enc is not None:
            return enc.split("/", 1)[0].lower()
        return _STATIC_PT.get(pt)


# RFC 3551 §6 table 4: the static audio payload types we may meet without rtpmap.
_STATIC_PT = {"0": "pcmu", "3": "gsm", "4": "g723", "8": "pcma", "9": "g722",
              "13": "cn", "18": "g729"}


def _connection(lines: Iterable[tuple[str, str]]) -> Connection | None:
    """The first c= line of a section (session or media level)."""
    for t, v in lines:
        if t == "c":
            return Connection.parse(v)
    return None


def _direction(lines: Iterable[tuple[str, str]]) -> str | None:
    """The direction attribute of a section, if set (RFC 4566 §6)."""
    for t, v in lines:
        if t == "a" and v in DIRECTIONS:
            return v
    return None


def _attributes(lines: Iterable[tuple[str, str]], name: str) -> list[str]:
    out = []
    for t, v in lines:
        if t != "a":
            continue
        key, sep, rest = v.partition(":")
        if key == name:
            out.append(rest if sep else "")
    return out


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP body: session-level lines in order, then the media sections."""

    lines: list[tuple[str, str]]
    media: list[MediaDescription]

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Decode an SDP body; raise `SdpError` (status 400) when it is malformed.

        Tolerant where RFC 4566 §5 lets a parser be: LF line ends, a missing final
        CRLF, trailing blank lines. Strict elsewhere: every line must be `x=value`,
        v=0 first, a valid o= and well-formed m= and c= lines.
        """
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SdpError(f"SDP is not UTF-8: {e}") from None
        else:
            text = data
        raw = text.split("\n")
        while raw and raw[-1].strip() == "":
            raw.pop()
        if not raw:
            raise SdpError("empty SDP")
        session: list[tuple[str, str]] = []
        media: list[MediaDescription] = []
        for n, line in enumerate(raw, 1):
            line = line.removesuffix("\r")
            m = _LINE.match(line)
            if not m:
                raise SdpError(f"line {n} is not <type>=<value>: {line[:40]!r}")
            t, v = m[1], m[2]
            if t == "m":
                mm = _MEDIA.match(v)
                if not mm:
                    raise SdpError(f"malformed m= line: {v!r}")
                port = int(mm[2])
                if port > 65535:
                    raise SdpError(f"m= port {port} out of range")
                formats = mm[5].split()
                if not formats:
                    raise SdpError(f"m= line without formats: {v!r}")
                media.append(MediaDescription(mm[1], port, int(mm[3]) if mm[3] else None,
                                              mm[4], formats))
            elif media:
                media[-1].lines.append((t, v))
            else:
                session.append((t, v))
        sdp = cls(session, media)
        sdp._validate()
        return sdp

    def _validate(self) -> None:
        # RFC 4566 §5: v= first, then o=; s= is mandatory too, but many UAs in the
        # field omit it on re-offers, and nothing here depends on it.
        if not self.lines or self.lines[0] != ("v", "0"):
            raise SdpError("SDP must start with v=0")
        if len(self.lines) < 2 or self.lines[1][0] != "o":
            raise SdpError("o= must follow v=")
        _ = self.origin
        # RFC 4566 §5: exactly one v= and one o=; a second one elsewhere is garbage
        # that a rewrite could otherwise carry across.
        extra = [t for t, _ in self.lines[2:] if t in "vo"]
        extra += [t for md in self.media for t, _ in md.lines if t in "vo"]
        if extra:
            raise SdpError(f"repeated {extra[0]}= line")
        conn = self.connection
        for md in self.media:
            # RFC 4566 §5.7: every active stream needs a c= at session or media level.
            mc = md.connection
            if conn is None and mc is None and md.port != 0:
                raise SdpError(f"no c= line for m={md.media}")
            if md.proto in RELAYED_PROTOS:
                for pt in md.formats:
                    if not _is_uint(pt, 127):
                        raise SdpError(f"bad RTP payload type {pt!r}")
            _ = md.rtcp

    @property
    def origin(self) -> Origin:
        """The o= line."""
        value = self.lines[1][1]
        m = _ORIGIN.match(value)
        if not m:
            raise SdpError(f"malformed o= line: {value!r}")
        return Origin(m[1], int(m[2]), int(m[3]), m[4], m[5], m[6])

    @property
    def connection(self) -> Connection | None:
        """The session-level c= line, if any."""
        return _connection(self.lines)

    @property
    def direction(self) -> str | None:
        """Session-level direction attribute, if any."""
        return _direction(self.lines)

    def __str__(self) -> str:
        out = [f"{t}={v}\r\n" for t, v in self.lines]
        for md in self.media:
            out.append(f"m={md.m_value}\r\n")
            out.extend(f"{t}={v}\r\n" for t, v in md.lines)
        return "".join(out)

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


# --- what the relay needs to know about a peer ---


@dataclass(frozen=True, slots=True)
class RemoteMedia:
    """Where a peer wants its RTP (from its SDP): the relay's session needs this.

    `address` is None when the peer asked for nothing to be sent (port 0, hold with
    c=0.0.0.0). `payload_types` are the formats kept after codec filtering.
    """

    address: str | None
    rtp_port: int
    rtcp_port: int | None
    rtcp_address: str | None
    direction: str
    payload_types: tuple[int, ...]
    codec: str | None  # "PCMU" or "PCMA", the first audio codec listed


def _relayable_formats(md: MediaDescription) -> list[str]:
    """Formats the relay can carry and record: PCMU, PCMA and telephone-event (RFC 4733)."""
    kept = []
    rtpmap = md.rtpmap  # once: each read scans the section's lines
    for pt in md.formats:
        mapped = rtpmap.get(pt)
        enc = mapped.split("/", 1)[0].lower() if mapped is not None else _STATIC_PT.get(pt)
        g711 = (pt == "0" and enc == "pcmu") or (pt == "8" and enc == "pcma")
        # RFC 4733 §2.1: events share the audio clock; only the 8 kHz one fits G.711.
        dtmf = (enc == "telephone-event" and _is_uint(pt, 127) and int(pt) >= 96
                and (mapped or "").split("/")[1:2] == ["8000"])
        if g711 or dtmf:
            kept.append(pt)
    return kept


def _has_audio_codec(formats: list[str]) -> bool:
    return "0" in formats or "8" in formats


def _relayed(sdp: SessionDescription) -> tuple[int, list[str]] | None:
    """The one m= line the relay carries (the first usable audio stream): its index
    and its relayable formats."""
    for i, md in enumerate(sdp.media):
        if md.media == "audio" and md.port != 0 and md.proto in RELAYED_PROTOS:
            formats = _relayable_formats(md)
            if _has_audio_codec(formats):
                return i, formats
    return None


def remote_media(sdp: SessionDescription) -> RemoteMedia:
    """The peer's media address for the stream the relay carries; `NoCommonCodec` if none."""
    relayed = _relayed(sdp)
    if relayed is None:
        raise NoCommonCodec("no audio stream with PCMU or PCMA")
    i, formats = relayed
    md = sdp.media[i]
    conn = md.connection or sdp.connection
    assert conn is not None  # _validate guarantees it for an active stream
    direction = md.direction or sdp.direction or "sendrecv"
    address: str | None = None if conn.is_hold else conn.address
    rtcp = md.rtcp
    codec = next(("PCMU" if pt == "0" else "PCMA" for pt in formats if pt in ("0", "8")), None)
    return RemoteMedia(address, md.port, rtcp[0] if rtcp else None, rtcp[1] if rtcp else None,
                       direction, tuple(int(pt) for pt in formats), codec)


# --- the rewrite ---


@dataclass(slots=True)
class RelayOrigin:
    """The o= identity the relay owns for one outgoing leg (RFC 3264 §8).

    The session id stays fixed for the leg; the version goes up by one whenever the
    body sent changes, and stays put when an identical SDP is sent again (§8: "if the
    SDP is unchanged, the version MUST stay the same").
    """

    sess_id: int
    version: int
    _last_body: str | None = None

    def stamp(self, body: str) -> int:
        """The version to put in o= for `body` (the SDP text below the o= line)."""
        if self._last_body is not None and body != self._last_body:
            self.version += 1
        self._last_body = body
        return self.version


@functools.lru_cache(maxsize=1024)
def _addrtype(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a hostname: RFC 4566 allows it; assume IPv4


def rewrite_for_peer(sdp: SessionDescription, *, relay_address: str, relay_port: int,
                     origin: RelayOrigin) -> SessionDescription:
    """The SDP to send to the other side of the call, built from one side's `sdp`.

    - o= is "-", the relay's session id, its version and address (RFC 3264 §8).
    - s= becomes "-"; only whitelisted lines and attributes cross (`_FORWARDED_*`):
      i=, u=, e=, p=, k=, a=tool, ICE, DTLS and unknown attributes do not.
    - c= shows `relay_address`, except a hold c=0.0.0.0, which is carried (§8.4).
    - the relayed audio stream's port becomes `relay_port`, a=rtcp becomes +1
      (RFC 3605).
    - formats are filtered to PCMU, PCMA and telephone-event; their rtpmap/fmtp stay.
    - every other m= line is kept but disabled with port 0 (RFC 3264 §6: the number
      and order of m= lines must be preserved in offer and answer).
    - direction attributes are carried unchanged, so hold (sendonly/inactive) crosses.

    Raises `NoCommonCodec` (488) when no audio stream with PCMU or PCMA is left.
    """
    relayed = _relayed(sdp)
    if relayed is None:
        raise NoCommonCodec("no audio stream with PCMU or PCMA")
    index, kept = relayed
    addrtype = _addrtype(relay_address)

    def conn_value(c: Connection) -> str:
        if c.is_hold:
            return f"IN {'IP6' if c.address == '::' else 'IP4'} {c.address}"
        return f"IN {addrtype} {relay_address}"

    session: list[tuple[str, str]] = []
    for t, v in sdp.lines[2:]:
        if t == "s":
            session.append(("s", "-"))
        elif t == "c":
            session.append(("c", conn_value(Connection.parse(v))))
        elif (t == "a" and v in DIRECTIONS) or t in _FORWARDED_LINES:
            session.append((t, v))
    if not any(t == "s" for t, _ in session):
        session.insert(0, ("s", "-"))  # RFC 4566 §5.3: we always send s=

    media: list[MediaDescription] = []
    for i, md in enumerate(sdp.media):
        if i != index:
            # Disabled stream: port 0, one format, no attributes (RFC 3264 §8.2).
            media.append(MediaDescription(md.media, 0, None, md.proto, md.formats[:1]))
            continue
        kept_set = set(kept)
        lines: list[tuple[str, str]] = []
        has_conn = False
        for t, v in md.lines:
            if t == "c":
                has_conn = True
                lines.append(("c", conn_value(Connection.parse(v))))
                continue
            if t != "a":
                if t in _FORWARDED_LINES:
                    lines.append((t, v))
                continue
            name, _, rest = v.partition(":")
            if name not in _FORWARDED_ATTRS:
                continue
            if name == "rtcp":
                lines.append(("a", f"rtcp:{relay_port + 1}"))
            elif name in ("rtpmap", "fmtp", "rtcp-fb"):
                pt = rest.split(" ", 1)[0]
                if pt in kept_set or (name == "rtcp-fb" and pt == "*"):
                    lines.append((t, v))
            else:
                lines.append((t, v))
        if not has_conn and sdp.connection is None:
            lines.insert(0, ("c", f"IN {addrtype} {relay_address}"))
        media.append(MediaDescription(md.media, relay_port, None, md.proto, kept, lines))

    return _stamped(SessionDescription([("v", "0"), ("o", ""), *session], media),
                    origin, relay_address)


def _stamped(out: SessionDescription, origin: RelayOrigin,
             relay_address: str) -> SessionDescription:
    """Fill in the relay's o= line, its version stamped from the body below it."""
    version = origin.stamp(str(out))
    out.lines[1] = ("o", f"- {origin.sess_id} {version} IN {_addrtype(relay_address)} "
                         f"{relay_address}")
    return out


# --- the relay's own media (it answers and offers itself: prompts, digits) ---


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """The format the relay settled on when it answered a side itself."""

    codec: str  # "PCMU" or "PCMA"
    payload_type: int  # 0 or 8
    event_pt: int | None  # the offer's telephone-event payload type (RFC 4733), if any


#: RFC 3264 §6.1: the answer's direction for each offered one.
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}


def choose_local_media(offer: SessionDescription) -> LocalMedia:
    """PCMU if offered, else PCMA, plus telephone-event if offered; `NoCommonCodec` if
    neither codec is there."""
    relayed = _relayed(offer)
    if relayed is None:
        raise NoCommonCodec("no audio stream with PCMU or PCMA")
    _, formats = relayed
    pt = 0 if "0" in formats else 8
    event = next((int(f) for f in formats if f not in ("0", "8")), None)
    return LocalMedia("PCMU" if pt == 0 else "PCMA", pt, event)


def _local_audio(media: LocalMedia, port: int, proto: str, direction: str) -> MediaDescription:
    formats = [str(media.payload_type)]
    lines = [("a", f"rtpmap:{media.payload_type} {media.codec}/8000")]
    if media.event_pt is not None:
        formats.append(str(media.event_pt))
        # RFC 4733 §2.4.1, §7.1.1: we receive (and detect) the DTMF events 0-15.
        lines += [("a", f"rtpmap:{media.event_pt} telephone-event/8000"),
                  ("a", f"fmtp:{media.event_pt} 0-15")]
    lines += [("a", "ptime:20"), ("a", direction)]
    return MediaDescription("audio", port, None, proto, formats, lines)


def _local_session(relay_address: str) -> list[tuple[str, str]]:
    return [("v", "0"), ("o", ""), ("s", "-"),
            ("c", f"IN {_addrtype(relay_address)} {relay_address}"), ("t", "0 0")]


def local_answer(offer: SessionDescription, *, relay_address: str, relay_port: int,
                 origin: RelayOrigin) -> tuple[SessionDescription, LocalMedia]:
    """The relay's own answer to `offer` (RFC 3264 §6): one codec, its port, its o=.

    The relayed stream gets `choose_local_media`'s formats (payload types as offered,
    §6.1) and the mirrored direction; every other m= line is refused with port 0, so
    the answer has as many m= lines as the offer.
    """
    media = choose_local_media(offer)
    relayed = _relayed(offer)
    assert relayed is not None  # choose_local_media raised otherwise
    index = relayed[0]
    sections = []
    for i, md in enumerate(offer.media):
        if i != index:
            sections.append(MediaDescription(md.media, 0, None, md.proto, md.formats[:1]))
            continue
        offered = md.direction or offer.direction or "sendrecv"
        sections.append(_local_audio(media, relay_port, md.proto, _ANSWER_DIRECTION[offered]))
    out = SessionDescription(_local_session(relay_address), sections)
    return _stamped(out, origin, relay_address), media


def local_offer(media: LocalMedia, *, relay_address: str, relay_port: int,
                origin: RelayOrigin) -> SessionDescription:
    """A fresh offer from the relay: one audio stream with the settled codec (and
    telephone-event), sendrecv, at `relay_port`. The o= version goes up whenever the
    body differs from what `origin` last stamped (RFC 3264 §8)."""
    audio = _local_audio(media, relay_port, "RTP/AVP", "sendrecv")
    return _stamped(SessionDescription(_local_session(relay_address), [audio]),
                    origin, relay_address)
