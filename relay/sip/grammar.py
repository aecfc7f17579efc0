"""SIP grammar pieces (RFC 3261 §25.1 ABNF): tokens, URIs, name-addr, Via, params.

Every parser here takes a header *value* (already unfolded) and returns a small
structured object, raising :class:`SipParseError` (a remote error with a 400 hint)
when the peer sent something the ABNF does not allow. Nothing is repaired.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

_T = TypeVar("_T")

__all__ = [
    "AbsoluteUri",
    "CSeq",
    "NameAddr",
    "SipParseError",
    "SipUri",
    "Via",
    "parse_cseq",
    "parse_max_forwards",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_commas",
    "unescape",
]


class SipParseError(ValueError):
    """The peer sent something unparsable (a *remote* error).

    ``status``/``reason`` are the SIP answer it deserves (400 unless stated);
    ``headers`` holds what could be read of the header block, so a caller can
    still build that answer (RFC 3261 §8.2.6 needs Via, From, To, Call-ID, CSeq).
    """

    def __init__(self, reason: str, status: int = 400, *, headers: object = None,
                 is_request: bool | None = None, method: str | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.is_request = is_request
        self.method = method


# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{TOKEN_CHARS}]+")
# RFC 3261 §25.1: Method = INVITEm / ... / extension-method; extension-method = token
METHOD_RE = TOKEN_RE
# RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# (written as an unrolled loop: the per-character alternation is several times slower)
QUOTED_RE = re.compile(r'"[^"\\\r\n]*(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\\r\n]*)*"')
# RFC 3261 §25.1: host = hostname / IPv4address / IPv6reference (loosely: the
# labels and dotted quads share one character class; an IPv6 reference is bracketed)
HOST_PAT = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?"
HOST_RE = re.compile(HOST_PAT)
# RFC 3261 §25.1: generic-param = token [ EQUAL gen-value ];
# gen-value = token / host / quoted-string. SEMI and EQUAL allow SWS around them.
_PARAM_RE = re.compile(
    rf"[ \t]*;[ \t]*([{TOKEN_CHARS}]+)"
    rf"(?:[ \t]*=[ \t]*((?:[{TOKEN_CHARS}:\[\]]+)|{QUOTED_RE.pattern}))?[ \t]*"
)
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}:\[\]]+)?)*")
# RFC 3261 §25.1: uri-parameter = transport-param / ... / other-param;
# other-param = pname [ "=" pvalue ]; pname/pvalue = 1*paramchar (unreserved,
# escaped, "[" "]" "/" ":" "&" "+" "$"). No whitespace is allowed inside a URI.
_PARAMCHAR = r"A-Za-z0-9\-_.!~*'()%\[\]/:&+$"
_URI_PARAM_RE = re.compile(rf";([{_PARAMCHAR}]+)(?:=([{_PARAMCHAR}]*))?")
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved );
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
# RFC 3261 §25.1: headers = "?" header *( "&" header ); hname/hvalue use hnv-unreserved
_HEADER_PART_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
# RFC 3986 §3.1 scheme (RFC 3261 §25.1 absoluteURI)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# RFC 3261 §25.1: absoluteURI = scheme ":" ( hier-part / opaque-part ); any
# visible character except the ones that would end a header token
_OPAQUE_RE = re.compile(r"[^\s<>\"]+")
# RFC 3261 §25.1 SIP-URI / SIPS-URI in one pattern for the hot path:
# scheme ":" [ userinfo "@" ] hostport uri-parameters [ headers ]
_SIP_URI_RE = re.compile(
    r"([Ss][Ii][Pp][Ss]?):"
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,%]*))?@)?"
    rf"({HOST_PAT})(?::([0-9]{{1,5}}))?"
    rf"((?:;[{_PARAMCHAR}]+(?:=[{_PARAMCHAR}]*)?)*)"
    r"(?:\?(.*))?",
    re.DOTALL,
)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# RFC 3261 §25.1: Via = via-parm; sent-protocol = protocol-name SLASH protocol-version
# SLASH transport; SLASH = SWS "/" SWS; sent-by = host [ COLON port ]; LWS before sent-by
_VIA_RE = re.compile(
    rf"[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)[ \t]*/[ \t]*([{TOKEN_CHARS}]+)"
    rf"[ \t]+({HOST_PAT})(?:[ \t]*:[ \t]*([0-9]{{1,5}}))?"
)
# RFC 3261 §25.1: CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
_CSEQ_RE = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+([{TOKEN_CHARS}]+)[ \t]*")
_DIGITS_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]*")

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


def unescape(text: str) -> str:
    """Decode %HH escapes (RFC 3261 §19.1.2, §25.1 escaped) into characters."""
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Escapes encode octets; re-read them as UTF-8 when they form valid UTF-8.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def split_commas(value: str) -> list[str]:
    """Split a list header value on commas outside quoted strings and <...>.

    RFC 3261 §7.3.1: a header with a comma-separated list may be written as one line;
    commas inside quoted-string or inside LAQUOT/RAQUOT (a URI) do not separate.
    """
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    start = 0
    in_quote = in_angle = False
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1  # quoted-pair: skip the escaped character
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


#: Entries per memo before it is emptied (see _memo).
MEMO_LIMIT = 20_000
#: Bytes a memo may hold (its keys, plus a flat estimate of each parsed object)
#: before it is emptied: a barrage of distinct header values must not grow it.
MEMO_BYTES = 1 << 20
#: Estimated bytes of one parsed value and its dict slot (objects are a few hundred).
MEMO_ENTRY = 512
#: Values longer than this are parsed each time: they rarely repeat, and a few
#: huge ones would otherwise fill the memo with one message's garbage.
MEMO_MAX_VALUE = 1024


def _memo(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """Remember ``parse``'s result per input string, up to MEMO_LIMIT entries.

    A call repeats the same header values many times (From, To, Contact and CSeq of
    each dialog, our own Via in every response to our requests), and parsing them
    was most of the relay's signalling CPU. The parsed objects are therefore shared
    between messages and must be treated as immutable: build a new one to change
    it. Errors are not remembered (they raise each time). Emptying the whole memo
    when full (MEMO_LIMIT entries or MEMO_BYTES estimated bytes) keeps it bounded
    without bookkeeping per hit.
    """
    cache: dict[str, _T] = {}
    size = 0

    def parsed(value: str) -> _T:
        nonlocal size
        hit = cache.get(value)
        if hit is None:
            if len(value) > MEMO_MAX_VALUE:
                return parse(value)
            hit = parse(value)
            size += len(value) + MEMO_ENTRY
            if len(cache) >= MEMO_LIMIT or size > MEMO_BYTES:
                cache.clear()
                size = len(value) + MEMO_ENTRY
            cache[value] = hit
        return hit

    parsed.__doc__ = parse.__doc__
    parsed.__name__ = parse.__name__
    parsed.__wrapped__ = parse  # type: ignore[attr-defined]
    return parsed


def parse_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` from ``text[pos:]`` (RFC 3261 §25.1).

    Names are lower-cased (they compare case-insensitively, §7.3.1); the whole
    remainder must be consumed, else the header is malformed.
    """
    params: dict[str, str | None] = {}
    n = len(text)
    if _SIMPLE_PARAMS_RE.fullmatch(text, pos):
        # Common case: no whitespace, no quoted values; plain splitting is exact.
        if pos < n:
            for item in text[pos + 1:].split(";"):
                name, eq, value = item.partition("=")
                params[name.lower()] = value if eq else None
        return params
    match = _PARAM_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise SipParseError(f"bad parameter near {text[pos:pos + 20]!r}")
            break
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


@dataclass(slots=True)
class AbsoluteUri:
    """A URI with a scheme we do not interpret (RFC 3261 §25.1 absoluteURI)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


@dataclass(slots=True)
class SipUri:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966 for tel).

    For tel: URIs ``user`` holds the number and ``host`` is empty. ``user`` is kept
    escaped as on the wire; :attr:`user_unescaped` decodes it.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %HH escapes decoded."""
        return None if self.user is None else unescape(self.user)

    @property
    def hostport(self) -> str:
        """``host[:port]`` as it would appear in a Via sent-by."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts += (":", self.password)
                parts.append("@")
            parts.append(self.hostport)
        for k, v in self.params.items():
            parts.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)


def _parse_uri_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    pos, n = 0, len(text)
    while pos < n:
        m = _URI_PARAM_RE.match(text, pos)
        if m is None:
            raise SipParseError(f"bad URI parameter near {text[pos:pos + 20]!r}")
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


@_memo
def parse_uri(text: str) -> SipUri | AbsoluteUri:
    """Parse a Request-URI or addr-spec (RFC 3261 §19.1.1, §25.1 SIP-URI/SIPS-URI).

    Unknown schemes are kept opaque (RFC 3261 §8.2.2.1 lets the TU answer 416).
    """
    m = _SIP_URI_RE.fullmatch(text)
    if m is None:
        return _parse_other_uri(text)
    if "%" in text and _BAD_ESCAPE_RE.search(text):
        raise SipParseError(f"bad escape in URI {text[:40]!r}")
    scheme, user, password, host, port_text, ptext, htext = m.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SipParseError("bad URI port")
    params: dict[str, str | None] = {}
    if ptext:
        for item in ptext[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    headers: dict[str, str] = {}
    if htext is not None:
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or not _HEADER_PART_RE.fullmatch(name) \
                    or not _HEADER_PART_RE.fullmatch(value):
                raise SipParseError("bad URI header")
            headers[name] = value
    return SipUri(scheme.lower(), user, host.lower(), port, params, headers, password)


def _parse_other_uri(text: str) -> SipUri | AbsoluteUri:
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text, 0, colon):
        raise SipParseError(f"bad URI {text[:40]!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1:]
    if scheme in ("sip", "sips"):
        raise SipParseError(f"bad SIP URI {text[:40]!r}")
    if scheme == "tel":
        # RFC 3966 §3: telephone-uri = "tel:" telephone-subscriber; par = ";" ...
        number, _, ptext = rest.partition(";")
        if not number or not _USER_RE.fullmatch(number):
            raise SipParseError(f"bad tel URI {text[:40]!r}")
        tel_params = _parse_uri_params(";" + ptext) if ptext else {}
        return SipUri("tel", number, "", None, tel_params)
    if not _OPAQUE_RE.fullmatch(rest):
        raise SipParseError(f"bad URI {text[:40]!r}")
    return AbsoluteUri(scheme, rest)


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value: display name, URI, header parameters.

    RFC 3261 §25.1: (name-addr / addr-spec) *(SEMI param). ``bracketed`` records
    whether the URI was in <...> so that serialisation keeps URI params apart
    from header params.
    """

    uri: SipUri | AbsoluteUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), if any."""
        return self.params.get("tag")

    def __str__(self) -> str:
        uri = str(self.uri)
        if self.display is not None:
            head = f'"{_quote(self.display)}" <{uri}>'
        elif self.bracketed or (isinstance(self.uri, SipUri)
                                and (self.uri.params or self.uri.headers)):
            head = f"<{uri}>"
        else:
            head = uri
        tail = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return head + tail


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


# RFC 3261 §25.1 name-addr = [ display-name ] LAQUOT addr-spec RAQUOT, the common
# shapes in one pattern; anything else takes the step-by-step path below.
_NAME_ADDR_RE = re.compile(
    rf'[ \t]*(?:({QUOTED_RE.pattern})[ \t]*|([{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*)[ \t]*)?'
    r"<([^<>\s]+)>"
)
_DISPLAY_TOKENS_RE = re.compile(rf"[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*")


@_memo
def parse_name_addr(value: str) -> NameAddr:
    """Parse ``(name-addr / addr-spec) *(SEMI generic-param)`` (RFC 3261 §20.10, §25.1).

    display-name = *(token LWS) / quoted-string. An addr-spec without <> may not
    contain ',' '?' or ';' of its own (RFC 3261 §20): a ';' starts header params.
    """
    m = _NAME_ADDR_RE.match(value)
    if m is not None:
        quoted, tokens, inner = m.groups()
        display = _unquote(quoted) if quoted is not None else tokens
        return NameAddr(parse_uri(inner), display, parse_params(value.rstrip(" \t"), m.end()))
    s = value.strip(" \t")
    display = None
    if s.startswith('"'):
        m = QUOTED_RE.match(s)
        if m is None:
            raise SipParseError("unterminated quoted display name")
        display = _unquote(m.group(0))
        s = s[m.end():].lstrip(" \t")
        if not s.startswith("<"):
            raise SipParseError("quoted display name without <URI>")
    if s.startswith("<") or ("<" in s and display is None):
        lt = s.find("<")
        if lt > 0:
            name = s[:lt].strip(" \t")
            if not _DISPLAY_TOKENS_RE.fullmatch(name):
                raise SipParseError(f"bad display name {name[:40]!r}")
            display = name
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("missing > in name-addr")
        inner = s[lt + 1:gt]
        # RFC 3261 §25.1: LAQUOT addr-spec RAQUOT, no LWS inside the brackets
        # (RFC 4475 §3.1.2.14 badaspec).
        if not inner or inner[0] in " \t" or inner[-1] in " \t":
            raise SipParseError("whitespace inside <addr-spec>")
        uri = parse_uri(inner)
        return NameAddr(uri, display, parse_params(s, gt + 1), True)
    semi = s.find(";")
    text = s if semi < 0 else s[:semi]
    text = text.rstrip(" \t")
    if "?" in text or "," in text or " " in text or "\t" in text:
        raise SipParseError("addr-spec with '?' ',' or LWS must be in <>")
    uri = parse_uri(text)
    params = parse_params(s, semi) if semi >= 0 else {}
    return NameAddr(uri, None, params, False)


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): sent-protocol, sent-by and params."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The branch parameter (RFC 3261 §8.1.1.7)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received parameter (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        """The maddr parameter (RFC 3261 §18.2.2)."""
        return self.params.get("maddr")

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581); None when absent or empty."""
        v = self.params.get("rport")
        return int(v) if v and v.isascii() and v.isdigit() else None

    @property
    def has_rport(self) -> bool:
        """True when rport is present, even without a value (RFC 3581 §3)."""
        return "rport" in self.params

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) of sent-by, used in server transaction matching (§17.2.3)."""
        return (self.host, self.port)

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        tail = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.protocol}/{self.transport} {hp}{tail}"


@_memo
def parse_via(value: str) -> Via:
    """Parse one via-parm (RFC 3261 §25.1), not a comma list."""
    m = _VIA_RE.match(value)
    if m is None:
        raise SipParseError(f"bad Via {value[:40]!r}")
    port = None
    if m.group(5) is not None:
        port = int(m.group(5))
        if port > 65535:
            raise SipParseError("bad Via port")
    params = parse_params(value, m.end())
    # RFC 3261 §25.1: via-ttl = "ttl" EQUAL ttl (1*3DIGIT, 0-255)
    ttl = params.get("ttl")
    if ttl is not None and not (ttl.isascii() and ttl.isdigit() and int(ttl) <= 255):
        raise SipParseError("bad Via ttl")
    return Via(m.group(3).upper(), m.group(4).lower(), port, params,
               f"{m.group(1).upper()}/{m.group(2)}")


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq number and method (RFC 3261 §20.16)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@_memo
def parse_cseq(value: str) -> CSeq:
    """Parse CSeq; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipParseError("bad CSeq")
    number = int(m.group(1))
    if number >= 2**31:
        raise SipParseError("CSeq number too large")
    return CSeq(number, m.group(2))


def parse_max_forwards(value: str) -> int:
    """Parse Max-Forwards (RFC 3261 §20.22: 1*DIGIT, 0-255 in practice)."""
    m = _DIGITS_RE.fullmatch(value)
    if m is None or int(m.group(1)) > 255:
        raise SipParseError("bad Max-Forwards")
    return int(m.group(1))


def parse_content_length(value: str) -> int:
    """Parse Content-Length (RFC 3261 §20.14: 1*DIGIT)."""
    m = _DIGITS_RE.fullmatch(value)
    if m is None:
        raise SipParseError("bad Content-Length")
    return int(m.group(1))
