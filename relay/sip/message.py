"""SIP message codec (RFC 3261 §7): ``parse_message(bytes)`` and ``bytes(msg)``.

The start line and the header block are split eagerly (one split on CRLF, a dict
of lower-case name -> raw values); structured values (Via, From/To, CSeq, URIs)
are parsed on first use and cached in the :class:`Headers` object, so a proxying
path that only reads Call-ID and the top Via pays for nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .grammar import (
    METHOD_RE,
    TOKEN_RE,
    AbsoluteUri,
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    parse_content_length,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_commas,
)

__all__ = [
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "build_error_response",
    "build_response",
    "parse_message",
    "stamp_via",
]

T = TypeVar("T")

# RFC 3261 §7.3.3 and §20 compact forms (plus RFC 3515 r, RFC 3892 b, RFC 3891 y,
# RFC 4028 x, RFC 3841 j/d, RFC 3265 o/u) mapped to the canonical full name.
COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "x": "Session-Expires",
    "r": "Refer-To", "b": "Referred-By", "y": "Identity", "d": "Request-Disposition",
    "j": "Reject-Contact", "a": "Accept-Contact",
}
_CANONICAL = {n.lower(): n for n in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route",
    "Record-Route", "Content-Length", "Content-Type", "Content-Encoding", "Subject",
    "Supported", "Require", "Proxy-Require", "Unsupported", "Allow", "Accept",
    "Accept-Encoding", "Accept-Language", "Expires", "Min-Expires", "User-Agent",
    "Server", "Date", "Reason", "Retry-After", "WWW-Authenticate", "Authorization",
    "Proxy-Authenticate", "Proxy-Authorization", "P-Asserted-Identity", "Event",
    "Allow-Events", "Session-Expires", "Refer-To", "Referred-By", "Identity",
    "Request-Disposition", "Reject-Contact", "Accept-Contact", "Warning", "RSeq", "RAck",
    "Timestamp", "Organization", "Priority", "Alert-Info", "Call-Info", "Error-Info",
    "In-Reply-To", "MIME-Version", "Content-Disposition", "Content-Language", "Path",
    "Service-Route", "History-Info", "Diversion", "Remote-Party-ID", "Privacy",
)}
_CANONICAL.update({k: v for k, v in COMPACT.items()})
# lower-case spelling (full or compact) -> (lower-case full name, display name);
# one dict lookup per header line on the hot path.
_KEYMAP: dict[str, tuple[str, str]] = {
    low: (full.lower(), full) for low, full in _CANONICAL.items()
}
# RFC 3261 §7.3.1: only headers whose grammar is a comma-separated list may be
# combined on one line. Others (Date, WWW-Authenticate, Authorization, Subject,
# unknown extension headers) contain commas that are not separators.
LIST_HEADERS = frozenset(n.lower() for n in (
    "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
    "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
    "Content-Encoding", "Content-Language", "Alert-Info", "Call-Info", "Error-Info",
    "In-Reply-To", "Warning", "Reason", "Path", "Service-Route", "Allow-Events",
    "P-Asserted-Identity", "History-Info", "Diversion", "Accept-Contact",
    "Reject-Contact", "Request-Disposition",
))
# Headers that must not appear twice (RFC 4475 §3.1.2.x multi01 / mcl01).
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_VERSION = "SIP/2.0"
_MISSING = object()
_ENC = "utf-8"
_ERRS = "surrogateescape"  # keeps any octet round-trippable (RFC 3261 TEXT-UTF8 is not enforced)


class Headers:
    """Ordered multi-map of header fields with case-insensitive names.

    Raw values are kept one per header line as received (so bytes round-trip);
    :meth:`get_list` splits comma-joined values for list headers. Parsed values are
    cached per name and dropped when that name is modified. Lines of one name stay
    together, names in order of first appearance: RFC 3261 §7.3.1 makes the order
    of different names insignificant, and this keeps lookups one dict access.
    """

    __slots__ = ("_cache", "_names", "_values")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        self._names: dict[str, str] = {}
        self._cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @staticmethod
    def _key(name: str) -> tuple[str, str]:
        low = name.lower()
        return _KEYMAP.get(low) or (low, name)

    def add(self, name: str, value: str) -> None:
        """Append a header line (after existing ones of the same name)."""
        low, canon = _KEYMAP.get(name.lower()) or (name.lower(), name)
        vals = self._values.get(low)
        if vals is None:
            self._values[low] = [value]
            self._names[low] = canon
        else:
            vals.append(value)
        if self._cache:
            self._cache.pop(low, None)

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before existing ones of that name (a new top Via)."""
        low, canon = self._key(name)
        self._names.setdefault(low, canon)
        self._values.setdefault(low, []).insert(0, value)
        self._cache.pop(low, None)

    def set(self, name: str, value: str) -> None:
        """Replace all lines of ``name`` by one."""
        low, canon = self._key(name)
        if low not in self._values:
            self._names[low] = canon
        self._values[low] = [value]
        self._cache.pop(low, None)

    def remove(self, name: str) -> None:
        """Delete every line of ``name`` (no error when absent)."""
        low = self._key(name)[0]
        self._values.pop(low, None)
        self._names.pop(low, None)
        self._cache.pop(low, None)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first list element of ``name`` (e.g. the top Via).

        Only the first header line is rewritten, so other lines keep their bytes.
        """
        low = self._key(name)[0]
        vals = self._values.get(low)
        if not vals:
            return None
        items = split_commas(vals[0]) if low in LIST_HEADERS else [vals[0]]
        if len(items) > 1:
            vals[0] = ", ".join(items[1:])
        elif len(vals) > 1:
            del vals[0]
        else:
            self.remove(low)
        self._cache.pop(low, None)
        return items[0]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first raw line value of ``name``."""
        vals = self._values.get(self._key(name)[0])
        return vals[0] if vals else default

    def get_all(self, name: str) -> list[str]:
        """Every raw line value of ``name``, not comma-split."""
        return list(self._values.get(self._key(name)[0], ()))

    def get_list(self, name: str) -> list[str]:
        """Values of ``name`` with comma-joined list headers split (RFC 3261 §7.3.1)."""
        low = self._key(name)[0]
        vals = self._values.get(low)
        if not vals:
            return []
        if low not in LIST_HEADERS:
            return list(vals)
        if len(vals) == 1 and "," not in vals[0]:
            return [vals[0].strip()]
        out: list[str] = []
        for v in vals:
            out.extend(split_commas(v))
        return out

    def cached(self, low: str, parser: Callable[[Headers, str], T]) -> T:
        """Parse header ``low`` (lower-case full name) once with ``parser``; then cached."""
        # .get() rather than a try block: the first access is always a miss, and
        # raising KeyError costs more than the lookup.
        value = self._cache.get(low, _MISSING)
        if value is _MISSING:
            value = self._cache[low] = parser(self, low)
        return value  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name)[0] in self._values

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for low, vals in self._values.items():
            name = self._names[low]
            for v in vals:
                yield name, v

    def __len__(self) -> int:
        return sum(len(v) for v in self._values.values())

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """A shallow copy (values are immutable strings; the cache is not shared)."""
        h = Headers()
        h._values = {k: list(v) for k, v in self._values.items()}
        h._names = dict(self._names)
        return h


def _one(h: Headers, low: str) -> str:
    vals = h._values.get(low)
    if not vals:
        raise SipParseError(f"missing {h._names.get(low, low)} header")
    return vals[0]


def _p_via(h: Headers, low: str) -> list[Via]:
    return [parse_via(v) for v in h.get_list(low)]


def _p_name_addr(h: Headers, low: str) -> NameAddr:
    return parse_name_addr(_one(h, low))


def _p_name_addr_list(h: Headers, low: str) -> list[NameAddr]:
    out = []
    for v in h.get_list(low):
        if v == "*" and low == "contact":
            continue  # RFC 3261 §10.2.2 wildcard Contact; see SipMessage.contact_star
        out.append(parse_name_addr(v))
    return out


def _p_cseq(h: Headers, low: str) -> CSeq:
    return parse_cseq(_one(h, low))


def _p_max_forwards(h: Headers, low: str) -> int | None:
    vals = h._values.get(low)
    return parse_max_forwards(vals[0]) if vals else None


class SipMessage:
    """Common part of requests and responses: headers, body, cached accessors."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body

    # -- structured accessors (lazy, cached in self.headers) --------------------------
    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (RFC 3261 §20.42)."""
        h = self.headers
        v = h._cache.get("via")
        if v is None:
            v = h._cache["via"] = _p_via(h, "via")
        return v  # type: ignore[no-any-return]

    @property
    def top_via(self) -> Via:
        """The topmost Via; raises SipParseError when there is none."""
        vias = self.vias
        if not vias:
            raise SipParseError("missing Via header")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        """The From value (RFC 3261 §20.20)."""
        h = self.headers
        v = h._cache.get("from")
        if v is None:
            v = h._cache["from"] = _p_name_addr(h, "from")
        return v  # type: ignore[no-any-return]

    @property
    def to(self) -> NameAddr:
        """The To value (RFC 3261 §20.39)."""
        h = self.headers
        v = h._cache.get("to")
        if v is None:
            v = h._cache["to"] = _p_name_addr(h, "to")
        return v  # type: ignore[no-any-return]

    @property
    def from_tag(self) -> str | None:
        """The From tag."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag (absent on an out-of-dialog request)."""
        return self.to.tag

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8), stripped."""
        return _one(self.headers, "call-id").strip()

    @property
    def cseq(self) -> CSeq:
        """The CSeq (RFC 3261 §20.16)."""
        h = self.headers
        v = h._cache.get("cseq")
        if v is None:
            v = h._cache["cseq"] = _p_cseq(h, "cseq")
        return v  # type: ignore[no-any-return]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards, None when absent (RFC 3261 §20.22)."""
        return self.headers.cached("max-forwards", _p_max_forwards)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values, without a '*' wildcard (RFC 3261 §20.10)."""
        return self.headers.cached("contact", _p_name_addr_list)

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values in header order (RFC 3261 §20.30)."""
        return self.headers.cached("record-route", _p_name_addr_list)

    @property
    def routes(self) -> list[NameAddr]:
        """Route values in header order (RFC 3261 §20.34)."""
        return self.headers.cached("route", _p_name_addr_list)

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """Serialise; Content-Length is always written from the body (RFC 3261 §20.14)."""
        parts = [self._start_line()]
        append = parts.append
        names = self.headers._names
        length = f"Content-Length: {len(self.body)}"
        has_length = False
        for low, vals in self.headers._values.items():
            if low == "content-length":
                # Written in place, from the body: never trust a stale value.
                append(length)
                has_length = True
                continue
            name = names[low]
            if len(vals) == 1:
                append(f"{name}: {vals[0]}")
            else:
                for v in vals:
                    append(f"{name}: {v}")
        if not has_length:
            append(length)
        append("\r\n")
        return "\r\n".join(parts).encode(_ENC, _ERRS) + self.body


class SipRequest(SipMessage):
    """A SIP request (RFC 3261 §7.1). ``uri`` is the raw Request-URI text."""

    __slots__ = ("_ruri", "_ruri_text", "method", "uri", "version")

    def __init__(self, method: str, uri: str | SipUri,
                 headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"", version: str = _VERSION) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = str(uri)
        self.version = version
        self._ruri: SipUri | AbsoluteUri | None = uri if isinstance(uri, SipUri) else None
        self._ruri_text = self.uri

    @property
    def request_uri(self) -> SipUri | AbsoluteUri:
        """The parsed Request-URI (cached; re-parsed if ``uri`` was reassigned)."""
        r = self._ruri
        if r is None or self._ruri_text is not self.uri:
            r = self._ruri = parse_uri(self.uri)
            self._ruri_text = self.uri
        return r

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


class SipResponse(SipMessage):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status", "version")

    def __init__(self, status: int, reason: str,
                 headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"", version: str = _VERSION) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


def _parse_version(text: str, *, headers: Headers | None, is_request: bool,
                   method: str | None) -> None:
    # RFC 3261 §7.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; only 2.0 is ours.
    if text == _VERSION:
        return
    upper = text.upper()
    if upper == _VERSION:
        return
    if upper.startswith("SIP/") and "." in upper:
        raise SipParseError("Version Not Supported", 505, headers=headers,
                            is_request=is_request, method=method)
    raise SipParseError(f"bad SIP version {text[:20]!r}", headers=headers,
                        is_request=is_request, method=method)


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (RFC 3261 §7.3.1: folding LWS is equivalent to one SP)."""
    out: list[str] = []
    for line in lines:
        if line and (line[0] == " " or line[0] == "\t"):
            if not out:
                raise SipParseError("continuation line before any header")
            out[-1] = out[-1].rstrip(" \t") + " " + line.lstrip(" \t")
        else:
            out.append(line)
    return out


def _split_headers(lines: list[str], headers: Headers) -> None:
    values = headers._values
    names = headers._names
    keymap = _KEYMAP
    token = TOKEN_RE.fullmatch
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon {line[:30]!r}")
        # RFC 3261 §7.3.1 / §25.1: header-name HCOLON value; HCOLON = *( SP / HTAB ) ":" SWS
        name = name.rstrip(" \t")
        known = keymap.get(name.lower())
        if known is None:
            if not token(name):
                raise SipParseError(f"bad header name {name[:30]!r}")
            low, canon = name.lower(), name
        else:
            low, canon = known
        value = value.strip(" \t")
        vals = values.get(low)
        if vals is None:
            values[low] = [value]
            names[low] = canon
        else:
            vals.append(value)


def parse_message(data: bytes, *, allow_trailing: bool = False) -> SipRequest | SipResponse:
    """Parse one SIP message from a datagram (RFC 3261 §7, §18.3).

    The body must be exactly Content-Length octets; without Content-Length the body
    is the rest of the datagram. ``allow_trailing=True`` instead discards octets past
    Content-Length as RFC 3261 §18.3 permits on UDP (RFC 4475 §3.1.1.7 dblreq).
    Raises :class:`SipParseError` (and nothing else) on malformed input.
    """
    # RFC 3261 §7.5: CRLFs before the start-line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no end of header block")
    try:
        head = data[start:end].decode(_ENC, _ERRS)
    except UnicodeError as exc:  # surrogateescape cannot fail on bytes, but be explicit
        raise SipParseError("undecodable header block") from exc
    body = data[end + 4:]
    lines = head.split("\r\n")
    first = lines[0]
    if head.count("\r") != len(lines) - 1 or head.count("\n") != len(lines) - 1:
        # A bare CR or LF is not a line ending in SIP (RFC 3261 §7: CRLF only).
        raise SipParseError("bare CR or LF in header block")
    headers = Headers()
    msg: SipRequest | SipResponse
    if first.startswith("SIP/") or first[:4].upper() == "SIP/":
        is_request = False
        method = None
        # RFC 3261 §7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        parts = first.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("bad status line")
        code = parts[1]
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or not "100" <= code <= "699":
            raise SipParseError(f"bad status code {code[:12]!r}")
        _parse_version(parts[0], headers=None, is_request=False, method=None)
        msg = SipResponse(int(code), parts[2] if len(parts) == 3 else "", headers, b"", parts[0])
    else:
        is_request = True
        # RFC 3261 §7.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF;
        # exactly one SP between elements (RFC 4475 §3.1.2.9 lwsstart, §3.1.2.10 trws).
        parts = first.split(" ")
        if len(parts) != 3 or not METHOD_RE.fullmatch(parts[0]):
            raise SipParseError("bad request line")
        method = parts[0]
        msg = SipRequest(method, parts[1], headers, b"", parts[2])
    try:
        header_lines = lines[1:]
        if "\r\n " in head or "\r\n\t" in head:
            header_lines = _unfold(header_lines)
        _split_headers(header_lines, headers)
    except SipParseError as exc:
        exc.headers, exc.is_request, exc.method = headers, is_request, method
        raise
    try:
        _validate(msg, body, allow_trailing)
    except SipParseError as exc:
        exc.headers, exc.is_request, exc.method = headers, is_request, method
        raise
    return msg


def _validate(msg: SipRequest | SipResponse, body: bytes, allow_trailing: bool) -> None:
    h = msg.headers
    values = h._values
    for name in _MANDATORY:
        if name not in values:
            raise SipParseError(f"missing {h._key(name)[1]} header")
    for name in _SINGLE:
        vals = values.get(name)
        if vals is not None and len(vals) > 1:
            raise SipParseError(f"more than one {h._names[name]} header")
    cl = values.get("content-length")
    if cl is not None:
        length = parse_content_length(cl[0])
        # RFC 3261 §18.3: a datagram body shorter than Content-Length is an error;
        # longer is rejected too unless the caller asked for §18.3 truncation.
        if len(body) < length or (len(body) > length and not allow_trailing):
            raise SipParseError("Content-Length does not match the body")
        body = body[:length]
    msg.body = body
    if isinstance(msg, SipRequest):
        _parse_version(msg.version, headers=h, is_request=True, method=msg.method)
        # RFC 3261 §25.1: Request-URI = SIP-URI / SIPS-URI / absoluteURI; RFC 4475
        # §3.1.2.7 ltgtruri and §3.1.2.11 escruri: no <> and no ?headers here.
        ruri = msg.request_uri
        if isinstance(ruri, SipUri) and ruri.headers:
            raise SipParseError("headers in Request-URI")
        if msg.cseq.method != msg.method:
            # RFC 3261 §8.1.1.5 / RFC 4475 §3.1.2.17 mismatch01
            raise SipParseError("CSeq method does not match the request method")
        msg.max_forwards  # noqa: B018 - validates the value (RFC 4475 §3.1.2.4 scalar02)
    else:
        msg.cseq  # noqa: B018 - validates CSeq
    if not msg.call_id:
        raise SipParseError("empty Call-ID")
    msg.vias  # noqa: B018 - parse every Via now: transactions need the top one
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    if "contact" in values:
        msg.contacts  # noqa: B018


def stamp_via(request: SipRequest, source: tuple[str, int]) -> None:
    """Record the real source in the top Via (RFC 3261 §18.2.1, RFC 3581 §4).

    ``received`` is added when sent-by differs from the source address, or when the
    client asked for ``rport`` (which then gets the source port). Responses built
    with :func:`build_response` copy the stamped Via.
    """
    via = request.top_via
    host, port = source
    sent_host = via.host[1:-1] if via.host.startswith("[") else via.host
    if sent_host == host.lower() and not via.has_rport:
        return
    params = dict(via.params)
    params["received"] = host
    if via.has_rport:
        params["rport"] = str(port)
    stamped = Via(via.transport, via.host, via.port, params, via.protocol)
    request.headers.pop_first("via")
    request.headers.prepend("via", str(stamped))


# RFC 3261 §8.2.6.2: what a response copies from its request, in this order.
_COPIED = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"),
           ("cseq", "CSeq"))


def build_response(request: SipRequest, status: int, reason: str | None = None, *,
                   to_tag: str | None = None,
                   extra_headers: Iterable[tuple[str, str]] = (),
                   body: bytes = b"", record_route: bool = False) -> SipResponse:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Via (all values, in order), From, To, Call-ID and CSeq are copied; ``to_tag`` is
    added to To when the request's To has no tag (§8.2.6.2; 100 Trying gets none).
    ``record_route`` copies the request's Record-Route values too, in order: a UAS
    must, in every response that establishes a dialog (§12.1.1: 18x with a tag, 2xx),
    or the proxies that asked to stay in the path never see the dialog's requests.
    """
    src = request.headers
    h = Headers()
    values, names, src_values = h._values, h._names, src._values
    for low, canon in _COPIED:
        vals = src_values.get(low)
        if vals:
            values[low] = list(vals)
            names[low] = canon
    if to_tag is not None and status != 100 and "to" in values and request.to_tag is None:
        values["to"] = [f"{values['to'][0]};tag={to_tag}"]
    if record_route:
        rr = src_values.get("record-route")
        if rr:
            values["record-route"] = list(rr)
            names["record-route"] = "Record-Route"
    if status == 100 and "timestamp" in src_values:
        # RFC 3261 §8.2.6.1: a 100 Trying copies Timestamp.
        h.add("timestamp", src_values["timestamp"][0])
    for name, value in extra_headers:
        h.add(name, value)
    return SipResponse(status, reason if reason is not None else REASONS.get(status, ""), h, body)


def build_error_response(error: SipParseError, *, to_tag: str | None = None) -> SipResponse | None:
    """The answer a malformed request deserves, or None (responses are dropped).

    Possible only when the request's Via, From, To, Call-ID and CSeq lines were read
    (RFC 3261 §8.2.6); the raw lines are copied unparsed.
    """
    h = error.headers
    if not error.is_request or not isinstance(h, Headers) or error.method == "ACK":
        return None  # RFC 3261 §17.2.1: never answer an ACK
    if any(n not in h._values for n in _MANDATORY):
        return None
    fake = SipRequest(error.method or "INVITE", "sip:invalid", h)
    try:
        return build_response(fake, error.status, error.reason, to_tag=to_tag)
    except SipParseError:
        return build_response(fake, error.status, error.reason)


REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}
