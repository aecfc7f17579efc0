"""Reliable provisionals end to end (RFC 3262, issue 18): a SIPp caller that requires
100rel and a SIPp callee that sends its early media in a reliable 183, through
`relay serve`. Each side PRACKs the 183 it got; nothing of one side reaches the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sipp_harness import assert_private, bind, callee, caller, calls, relay_args, udp_port

pytestmark = pytest.mark.integration


def test_reliable_183_both_ways(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)
    uas = callee(tmp_path, out, "uas_100rel.xml", extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, "uac_100rel.xml", extra=["-m", "1", "-d", "300"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(30) == 0, uas.tail()
    to_caller, to_callee = uac.received(), uas.received()
    early = next(m for m in to_caller if m.startswith("SIP/2.0 183"))
    assert "Require: 100rel" in early and "RSeq:" in early and "m=audio" in early
    prack = next(m for m in to_callee if m.startswith("PRACK"))
    assert "RAck: 41 1 INVITE" in prack
    invite = next(m for m in to_callee if m.startswith("INVITE"))
    assert "100rel" in invite and "Require:" not in invite
    assert_private(to_caller, to_callee, uac, uas)
    rec = calls(relay.base)[0]
    assert rec["sip_code"] == 200 and rec["released_by"] == "caller"
