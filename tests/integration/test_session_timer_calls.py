"""Session timers end to end (RFC 4028, issue 18): a SIPp caller that asks for a
session refreshed by itself, then never refreshes, is hung up by the relay before the
session ends; the callee gets its BYE too.

RFC 4028 puts the shortest session at 90 s (a minute of waiting before the relay hangs
up); the relay under test lowers that floor (`[sip] min_se_floor`, a test knob) so the
caller can ask for SESSION seconds and the hang-up comes about ten seconds in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import (
    SCENARIOS,
    bind,
    callee,
    caller,
    calls,
    relay_args,
    udp_port,
    write_config,
)

pytestmark = pytest.mark.integration

SESSION = 15  # seconds: the caller's Session-Expires and Min-SE


def test_a_caller_that_never_refreshes_is_hung_up_at_expiry(relay_factory: Any,
                                                             tmp_path: Path) -> None:
    out = udp_port()
    cfg = write_config(tmp_path / "cfg", {"min_se_floor": SESSION, "min_se": SESSION})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(cfg)))
    bind(relay.base)
    text = (SCENARIOS / "uac_wait_bye.xml").read_text()
    text = text.replace("      Max-Forwards: 70\n      User-Agent:",
                        "      Max-Forwards: 70\n      Supported: timer\n"
                        f"      Session-Expires: {SESSION};refresher=uac\n"
                        f"      Min-SE: {SESSION}\n"
                        "      User-Agent:", 1)
    assert "Session-Expires" in text
    scenario = tmp_path / "uac_timer_wait_bye.xml"
    scenario.write_text(text)
    uas = callee(tmp_path, out, "uas.xml", extra=["-m", "1", "-timeout", "150s"])
    uac = caller(tmp_path, relay.sip_port, scenario_path=scenario,
                 extra=["-m", "1", "-timeout", "150s"])
    uas.start()
    started = time.monotonic()
    uac.start()
    assert uac.wait(150) == 0, uac.tail()
    took = time.monotonic() - started
    assert uas.wait(30) == 0, uas.tail()
    ok = next(m for m in uac.received() if m.startswith("SIP/2.0 200"))
    assert f"Session-Expires: {SESSION};refresher=uac" in ok and "Require: timer" in ok
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert "Session-Expires: 1800" in invite and "Supported: timer" in invite
    # §10: the side that does not refresh ends the session min(32, SESSION/3) early
    # (5 s: the hang-up at 10 s), and never after the session's end.
    expiry = SESSION - min(32, SESSION / 3)
    assert expiry - 1 <= took <= SESSION, took
    assert any(m.startswith("BYE") for m in uas.received())
    rec = calls(relay.base)[0]
    assert rec["end_reason"] == "session_expired" and rec["cause"] == 102
    assert rec["released_by"] == "relay"
