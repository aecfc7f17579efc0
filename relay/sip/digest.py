"""Digest authentication as a SIP client (RFC 3261 §22.2, RFC 7616, RFC 8760). Sans-IO.

The outbound trunk may answer our INVITE (or an in-dialog request) with 401 and a
WWW-Authenticate, or 407 and a Proxy-Authenticate. :func:`parse_challenge` reads one
such header, :func:`choose` picks the first challenge we can answer (RFC 8760 §2.4:
the server lists its preferred algorithm first; SHA-256 and MD5, and their -sess
forms), and :func:`authorization` computes the Authorization/Proxy-Authorization value.
The client nonce is an argument: this module draws no randomness and reads no clock.

RFC 7616 §3.4.1:  response = KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2))
                  KD(secret, data) = H(secret ":" data)
                  A1 = username ":" realm ":" password
                       (-sess: H(that) ":" nonce ":" cnonce)
                  A2 = method ":" digest-uri  (auth-int: ":" H(body) too)
Without qop (RFC 2069, still allowed by RFC 3261 §22.4): response = KD(H(A1), nonce ":" H(A2)).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Challenge", "Credentials", "DigestError", "authorization", "choose",
           "credentials_from", "parse_challenge"]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    # RFC 8760 §2.3 also names SHA-512-256; hashlib's sha512_256 is not everywhere.
}
# RFC 7616 §3.3: auth-param = token BWS "=" BWS ( token / quoted-string )
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*(?:,|$)')


class DigestError(ValueError):
    """A challenge we cannot parse or answer."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # upper case; "-SESS" suffix for the session variants
    qop: tuple[str, ...] = ()  # offered qop values, lower case
    opaque: str | None = None
    stale: bool = False

    @property
    def supported(self) -> bool:
        """Whether we can answer it (a known algorithm; qop absent, auth or auth-int)."""
        base = self.algorithm.removesuffix("-SESS")
        return base in _HASHES and (not self.qop or bool({"auth", "auth-int"} & set(self.qop)))


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the trunk knows us by: one user and password, and any per realm.
    The password never appears in a repr (it could end up in a log)."""

    user: str
    password: str = field(repr=False)
    realms: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def for_realm(self, realm: str) -> tuple[str, str]:
        """(user, password) for `realm`: its own entry, else the default pair."""
        return self.realms.get(realm, (self.user, self.password))


def credentials_from(sip: dict[str, Any]) -> Credentials | None:
    """`[sip] trunk_auth_user`, `trunk_auth_password` and `trunk_auth_realms`
    (`{realm = {user, password}}`) as Credentials; None when unset; ValueError when
    half set (a user without a password is a mistake, not "no auth")."""
    user, password = sip.get("trunk_auth_user"), sip.get("trunk_auth_password")
    realms_raw = sip.get("trunk_auth_realms") or {}
    if (user is None) != (password is None):
        raise ValueError("[sip] trunk_auth_user and trunk_auth_password go together")
    if not isinstance(realms_raw, dict):
        raise ValueError("[sip] trunk_auth_realms: a table of realm = {user, password}")
    realms: dict[str, tuple[str, str]] = {}
    for realm, entry in realms_raw.items():
        if not isinstance(entry, dict) or not {"user", "password"} <= set(entry):
            raise ValueError(f"[sip] trunk_auth_realms.{realm}: needs user and password")
        realms[str(realm)] = (str(entry["user"]), str(entry["password"]))
    if user is None and not realms:
        return None
    return Credentials(str(user or ""), str(password or ""), realms)


def parse_challenge(value: str) -> Challenge:
    """A WWW-Authenticate or Proxy-Authenticate value; DigestError unless Digest with
    a realm and a nonce."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme[:20]!r}")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise DigestError("malformed Digest challenge")
        raw = m.group(2)
        params[m.group(1).lower()] = (re.sub(r"\\(.)", r"\1", raw) if raw is not None
                                      else m.group(3))
        pos = m.end()
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(params["realm"], params["nonce"],
                     params.get("algorithm", "MD5").upper(), qop, params.get("opaque"),
                     params.get("stale", "").lower() == "true")


def choose(values: list[str]) -> Challenge | None:
    """The first challenge among header values we can answer (RFC 8760 §2.4), or None."""
    for value in values:
        try:
            ch = parse_challenge(value)
        except DigestError:
            continue
        if ch.supported:
            return ch
    return None


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(ch: Challenge, creds: Credentials, method: str, uri: str, *,
                  cnonce: str, nc: int = 1, body: bytes = b"") -> str:
    """The Authorization / Proxy-Authorization value answering `ch` for a request
    `method` to `uri` (the Request-URI, RFC 3261 §22.4: digest-uri is it verbatim)."""
    base = ch.algorithm.removesuffix("-SESS")
    h = _HASHES.get(base)
    if h is None:
        raise DigestError(f"unsupported algorithm {ch.algorithm}")
    user, password = creds.for_realm(ch.realm)
    ha1 = h(f"{user}:{ch.realm}:{password}".encode())
    if ch.algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{ch.nonce}:{cnonce}".encode())
    qop = "auth" if "auth" in ch.qop else ("auth-int" if "auth-int" in ch.qop else "")
    a2 = f"{method}:{uri}" + (f":{h(body)}" if qop == "auth-int" else "")
    ha2 = h(a2.encode())
    ncv = f"{nc:08x}"
    if qop:
        response = h(f"{ha1}:{ch.nonce}:{ncv}:{cnonce}:{qop}:{ha2}".encode())
    else:
        response = h(f"{ha1}:{ch.nonce}:{ha2}".encode())
    parts = [f"username={_quote(user)}", f"realm={_quote(ch.realm)}",
             f"nonce={_quote(ch.nonce)}", f"uri={_quote(uri)}",
             f"response={_quote(response)}", f"algorithm={ch.algorithm}"]
    if ch.opaque is not None:
        parts.append(f"opaque={_quote(ch.opaque)}")
    if qop:
        parts += [f"qop={qop}", f"nc={ncv}", f"cnonce={_quote(cnonce)}"]
    return "Digest " + ", ".join(parts)
