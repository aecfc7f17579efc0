"""The outbound trunk challenges the relay (RFC 3261 §22.2): a real SIPp callee answers
the first INVITE with 401 or 407, then checks the credentials of the second INVITE and
of the BYE. 401: SIPp's own <verifyauth> (it reads Authorization); 407: SIPp checks the
Proxy-Authorization is there and this test verifies the digest from SIPp's message
trace. The password never reaches the relay's log; the caller never sees a challenge."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import SCENARIOS, Sipp, bind, caller, relay_args, udp_port, write_config

pytestmark = pytest.mark.integration

USER, PASSWORD = "relay-trunk", "s3cr3t-Trunk-pw"
VERIFY = f'<verifyauth assign_to="authvalid" username="{USER}" password="{PASSWORD}"/>'
PROXY = ('<ereg regexp="Proxy-Authorization: Digest " search_in="msg" check_it="true" '
         'assign_to="authvalid"/>')


def _scenario(workdir: Path, code: int, algo: str) -> Path:
    text = (SCENARIOS / "uas_auth.xml.in").read_text()
    text = text.replace("@CODE@", str(code)).replace("@ALGO@", algo).replace(
        "@HEADER@", "WWW-Authenticate" if code == 401 else "Proxy-Authenticate").replace(
        "@VERIFY@", VERIFY if code == 401 else PROXY)
    path = workdir / f"uas_auth_{code}_{algo}.xml"
    path.write_text(text)
    return path


def _params(value: str) -> dict[str, str]:
    return {k.lower(): v1 or v2 for k, v1, v2 in
            re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', value)}


def _verify(value: str, method: str, algo: str) -> None:
    """The trunk's check (RFC 7616 §3.4.1), written independently of relay.sip.digest."""
    p = _params(value)
    hf = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algo]
    h = lambda s: hf(s.encode()).hexdigest()  # noqa: E731
    assert p["username"] == USER and p["realm"] == "trunk.example" and p["qop"] == "auth"
    assert p["opaque"] == "op1" and p["algorithm"] == algo
    ha1 = h(f"{USER}:trunk.example:{PASSWORD}")
    want = h(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{h(method + ':' + p['uri'])}")
    assert p["response"] == want


@pytest.mark.parametrize(("code", "algo"), [(401, "MD5"), (407, "MD5"), (407, "SHA-256")])
def test_trunk_challenge_is_answered(relay_factory: Any, tmp_path: Path, code: int,
                                     algo: str) -> None:
    out = udp_port()
    config = write_config(tmp_path / "cfg", {"trunk_auth_user": USER,
                                             "trunk_auth_password": PASSWORD})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(config),
                                     "--log-level", "DEBUG"))
    bind(relay.base)
    uas = Sipp(tmp_path, "trunk", _scenario(tmp_path, code, algo),
               ["-key", "callee", "+8613933334444", "-timeout", "60s", "-m", "1"], out,
               listens=True)
    uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "300"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()  # 200 OK, its ACK and BYE: the call went through
    assert uas.wait(60) == 0, uas.tail()
    assert not any(m.startswith("SIP/2.0 403") for m in uas.sent()), "credentials refused"
    got = uas.received()
    invites = [m for m in got if m.startswith("INVITE ")]
    assert len(invites) == 2
    assert "CSeq: 1 INVITE" in invites[0] and "CSeq: 2 INVITE" in invites[1]
    cid = [re.search(r"^Call-ID: (.*)$", m, re.M).group(1) for m in invites]  # type: ignore[union-attr]
    assert cid[0] == cid[1]
    header = "Authorization" if code == 401 else "Proxy-Authorization"
    for method, msg in (("INVITE", invites[1]),
                        ("BYE", next(m for m in got if m.startswith("BYE ")))):
        m = re.search(rf"^{header}: (.*)$", msg, re.M)
        assert m is not None, msg
        _verify(m.group(1).strip(), method, algo)
    assert not any("Authenticate" in m or " 40" in m.split("\n", 1)[0]
                   for m in uac.received())  # the challenge never reached the caller
    relay.stop()
    assert PASSWORD not in relay.log.read_text()
