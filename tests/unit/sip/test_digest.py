"""Digest as a client (relay/sip/digest.py) with RFC vectors, and the callee leg answering
a trunk's 401/407 (relay/b2bua/legs.py) in memory."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from loadtest.switch_bench import CALLER, IN_DIALOG, INVITE, RELAY_SDP, SDP, Driver, _header
from relay.sip.digest import (
    Challenge,
    Credentials,
    DigestError,
    authorization,
    choose,
    credentials_from,
    parse_challenge,
)

# RFC 7616 §3.9.1 (the same request answered with MD5 and with SHA-256).
RFC7616 = dict(realm="http-auth@example.org",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _field(value: str, name: str) -> str:
    m = re.search(rf'{name}="?([^",]*)"?', value)
    assert m is not None, (name, value)
    return m.group(1)


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    ch = Challenge(RFC7616["realm"], RFC7616["nonce"], algorithm, ("auth", "auth-int"),
                   RFC7616["opaque"])
    value = authorization(ch, Credentials("Mufasa", "Circle of Life"), "GET",
                          "/dir/index.html", cnonce=CNONCE)
    assert _field(value, "response") == expected
    assert "qop=auth," in value and "nc=00000001" in value
    assert f'opaque="{RFC7616["opaque"]}"' in value and f"algorithm={algorithm}" in value


def test_rfc2617_vector_from_the_header_text() -> None:
    ch = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                         'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                         'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert ch.qop == ("auth", "auth-int") and ch.algorithm == "MD5"
    value = authorization(ch, Credentials("Mufasa", "Circle Of Life"), "GET",
                          "/dir/index.html", cnonce="0a4f113b")
    assert _field(value, "response") == "6629fae49393a05397450978507c4ef1"


def test_no_qop_and_sess_and_choice() -> None:
    ch = parse_challenge("Digest realm=r, nonce=n")  # RFC 2069 style, tokens unquoted
    value = authorization(ch, Credentials("u", "p"), "INVITE", "sip:b@h", cnonce="c")
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:b@h").hexdigest()
    assert _field(value, "response") == hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert "qop" not in value
    sess = Challenge("r", "n", "SHA-256-SESS", ("auth",))
    value = authorization(sess, Credentials("u", "p"), "BYE", "sip:b@h", cnonce="c", nc=3)
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    ha1 = h(f"{h('u:r:p')}:n:c")
    assert _field(value, "response") == h(f"{ha1}:n:00000003:c:auth:{h('BYE:sip:b@h')}")
    # RFC 8760 §2.4: the first challenge we support, in the server's order.
    picked = choose(['Digest realm="r", nonce="1", algorithm=SHA-512-256',
                     'Basic realm="r"', 'Digest realm="r", nonce="2", algorithm=SHA-256',
                     'Digest realm="r", nonce="3", algorithm=MD5'])
    assert picked is not None and picked.nonce == "2"
    assert choose(['Digest realm="r", nonce="1", qop="auth-conf"']) is None
    for bad in ("Basic realm=x", "Digest realm=x", 'Digest nonce="1"', "Digest ,,,=="):
        with pytest.raises(DigestError):
            parse_challenge(bad)


def test_credentials_config_and_secrecy() -> None:
    assert credentials_from({}) is None
    creds = credentials_from({"trunk_auth_user": "relay", "trunk_auth_password": "s3cret",
                              "trunk_auth_realms": {"carrier": {"user": "c",
                                                                "password": "p2"}}})
    assert creds is not None and creds.for_realm("other") == ("relay", "s3cret")
    assert creds.for_realm("carrier") == ("c", "p2")
    assert "s3cret" not in repr(creds) and "p2" not in repr(creds)
    for bad in ({"trunk_auth_user": "u"}, {"trunk_auth_password": "p"},
                {"trunk_auth_user": "u", "trunk_auth_password": "p",
                 "trunk_auth_realms": {"r": {"user": "u"}}}):
        with pytest.raises(ValueError):
            credentials_from(bad)


# -- the callee leg answers the trunk's challenges --------------------------------------
X, A = "+8617055556666", "+8613811112222"
USER, PASSWORD = "relay-trunk", "tr0ub4dor&3"


def _check(value: str, method: str, realm: str, nonce: str, algorithm: str = "MD5") -> None:
    """Verify a digest the way the trunk would, independently of relay.sip.digest."""
    algo = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    h = lambda s: algo(s.encode()).hexdigest()  # noqa: E731
    uri, cnonce, nc = _field(value, "uri"), _field(value, "cnonce"), _field(value, "nc")
    assert _field(value, "username") == USER and _field(value, "realm") == realm
    want = h(f"{h(f'{USER}:{realm}:{PASSWORD}')}:{nonce}:{nc}:{cnonce}:auth:"
             f"{h(f'{method}:{uri}')}")
    assert _field(value, "response") == want


def _challenge(d: Driver, request: str, code: int, algorithm: str, nonce: str,
               now: float) -> None:
    name = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
    status = f"{code} Auth\r\n{name}: Digest realm=\"trunk\", nonce=\"{nonce}\", " \
             f"qop=\"auth\", algorithm={algorithm}"
    d.reply(request, status, now)


@pytest.mark.parametrize(("code", "algorithm"), [(407, "MD5"), (401, "SHA-256")])
def test_callee_leg_answers_invite_and_bye_challenges(code: int, algorithm: str) -> None:
    d = Driver()
    d.switch.settings.trunk_auth = Credentials(USER, PASSWORD)
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=1, length=len(SDP)).encode() + SDP, CALLER, now)
    first = d.to_callee.pop()
    _challenge(d, first, code, algorithm, "n1", now)
    ack, again = d.to_callee[-2:]
    assert ack.startswith("ACK ") and "CSeq: 1 ACK" in ack  # the layer ACKs the 4xx
    header = "Proxy-Authorization" if code == 407 else "Authorization"
    assert again.startswith("INVITE ") and _header(again, "CSeq") == "2 INVITE"
    assert _header(again, "Call-ID") == _header(first, "Call-ID")
    assert _header(again, "From") == _header(first, "From")
    assert _header(again, "Via") != _header(first, "Via")
    value = re.search(rf"^{header}: (.*?)\r$", again, re.M)
    assert value is not None
    _check(value.group(1), "INVITE", "trunk", "n1", algorithm)
    assert not any(m.startswith(("SIP/2.0 4", "SIP/2.0 5")) for m in d.to_caller)
    d.reply(again, "200 OK", now, RELAY_SDP)
    ack2 = d.to_callee[-1]
    assert ack2.startswith("ACK ") and "CSeq: 2 ACK" in ack2 and f"{header}: " in ack2
    ok = d.to_caller[-1]
    assert ok.startswith("SIP/2.0 200")
    to = _header(ok, "To")
    d.feed(IN_DIALOG.format(method="ACK", x=X, a=A, n=1, cseq=1, to=to).encode(), CALLER, now)
    d.feed(IN_DIALOG.format(method="BYE", x=X, a=A, n=1, cseq=2, to=to).encode(), CALLER, now)
    bye = d.to_callee.pop()
    assert bye.startswith("BYE ") and _header(bye, "CSeq") == "3 BYE"
    # §22.3: the BYE carries the dialog's credentials unasked (same nonce, next count).
    value = re.search(rf"^{header}: (.*?)\r$", bye, re.M)
    assert value is not None and _field(value.group(1), "nc") == "00000002"
    _check(value.group(1), "BYE", "trunk", "n1", algorithm)
    d.reply(bye, "200 OK", now)
    assert d.switch.live == 0


def test_a_challenged_reinvite_goes_again_with_credentials() -> None:
    """In-dialog (RFC 3261 §22.2): the trunk challenges our re-INVITE with a fresh nonce;
    it goes again with the next CSeq and an answer to that nonce."""
    d = Driver()
    d.switch.settings.trunk_auth = Credentials(USER, PASSWORD)
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=5, length=len(SDP)).encode() + SDP, CALLER, now)
    invite = d.to_callee.pop()
    d.reply(invite, "200 OK", now, RELAY_SDP)
    to = _header(d.to_caller[-1], "To")
    d.feed(IN_DIALOG.format(method="ACK", x=X, a=A, n=5, cseq=1, to=to).encode(), CALLER, now)
    reinvite = IN_DIALOG.format(method="INVITE", x=X, a=A, n=5, cseq=2, to=to).replace(
        "Content-Length: 0\r\n\r\n", f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n")
    d.feed(reinvite.encode() + SDP, CALLER, now)
    offer = d.to_callee.pop()
    assert offer.startswith("INVITE ") and _header(offer, "CSeq") == "2 INVITE"
    _challenge(d, offer, 407, "SHA-256", "fresh", now)
    again = [m for m in d.to_callee if m.startswith("INVITE ")][-1]
    assert _header(again, "CSeq") == "3 INVITE"
    value = re.search(r"^Proxy-Authorization: (.*?)\r$", again, re.M)
    assert value is not None
    _check(value.group(1), "INVITE", "trunk", "fresh", "SHA-256")
    assert not any(m.startswith("SIP/2.0 4") for m in d.to_caller)


def test_wrong_credentials_fail_once_and_nothing_crosses() -> None:
    """A second challenge (not stale) means the credentials are wrong: the caller hears
    480 (never the challenge), and the INVITE is not sent a third time."""
    d = Driver()
    d.switch.settings.trunk_auth = Credentials(USER, "wrong")
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=2, length=len(SDP)).encode() + SDP, CALLER, now)
    _challenge(d, d.to_callee.pop(), 407, "MD5", "n1", now)
    again = d.to_callee.pop()
    _challenge(d, again, 407, "MD5", "n2", now)
    invites = [m for m in d.to_callee if m.startswith("INVITE ")]
    assert invites == []
    final = [m for m in d.to_caller if not m.startswith("SIP/2.0 1")]
    assert len(final) == 1 and final[0].startswith("SIP/2.0 480")
    assert "Authenticate" not in final[0]


def test_without_credentials_a_challenge_is_a_failure() -> None:
    d = Driver()
    now = time.time()
    d.feed(INVITE.format(x=X, a=A, n=3, length=len(SDP)).encode() + SDP, CALLER, now)
    _challenge(d, d.to_callee.pop(), 401, "MD5", "n1", now)
    assert not [m for m in d.to_callee if m.startswith("INVITE ")]
    assert d.to_caller[-1].startswith("SIP/2.0 480")
