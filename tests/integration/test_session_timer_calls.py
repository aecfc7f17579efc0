"""Session timers end to end (RFC 4028, issue 18): a SIPp caller that asks for a
90-second session refreshed by itself, then never refreshes, is hung up by the relay
before the session ends; the callee gets its BYE too. About a minute of wall time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import SCENARIOS, bind, callee, caller, calls, relay_args, udp_port

pytestmark = pytest.mark.integration


def test_a_caller_that_never_refreshes_is_hung_up_at_expiry(relay_factory: Any,
                                                             tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)
    text = (SCENARIOS / "uac_wait_bye.xml").read_text()
    text = text.replace("      Max-Forwards: 70\n      User-Agent:",
                        "      Max-Forwards: 70\n      Supported: timer\n"
                        "      Session-Expires: 90;refresher=uac\n      Min-SE: 90\n"
                        "      User-Agent:", 1)
    assert "Session-Expires" in text
    scenario = tmp_path / "uac_timer_wait_bye.xml"
    scenario.write_text(text)
    uas = callee(tmp_path, out, "uas.xml", extra=["-m", "1", "-timeout", "150s"])
    uac = caller(tmp_path, relay.sip_port, scenario_path=scenario,
                 extra=["-m", "1", "-timeout", "150s"])
    uas.start()
    time.sleep(0.3)
    started = time.monotonic()
    uac.start()
    assert uac.wait(150) == 0, uac.tail()
    took = time.monotonic() - started
    assert uas.wait(30) == 0, uas.tail()
    ok = next(m for m in uac.received() if m.startswith("SIP/2.0 200"))
    assert "Session-Expires: 90;refresher=uac" in ok and "Require: timer" in ok
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert "Session-Expires: 1800" in invite and "Supported: timer" in invite
    # §10: the side that does not refresh ends the session min(32, 90/3) = 30 s early.
    assert 55 <= took <= 90, took
    assert any(m.startswith("BYE") for m in uas.received())
    rec = calls(relay.base)[0]
    assert rec["end_reason"] == "session_expired" and rec["cause"] == 102
    assert rec["released_by"] == "relay"
