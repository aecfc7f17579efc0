"""UPDATE mid-call through `relay serve` (RFC 3311, issue 18): a SIPp caller sends an
UPDATE with a new offer; the callee (SIPp) receives an UPDATE with the relay's rewritten
offer and answers it; nothing of one side reaches the other. The scenarios are the
re-INVITE ones with the second INVITE made an UPDATE (which has no ACK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sipp_harness import (
    SCENARIOS,
    assert_private,
    bind,
    callee,
    caller,
    calls,
    relay_args,
    udp_port,
)

pytestmark = pytest.mark.integration


def _update_scenarios(tmp_path: Path) -> tuple[Path, Path]:
    uac = (SCENARIOS / "uac_reinvite.xml").read_text()
    uac = uac.replace("INVITE [next_url] SIP/2.0", "UPDATE [next_url] SIP/2.0", 1)
    uac = uac.replace("CSeq: 2 INVITE", "CSeq: 2 UPDATE", 1)
    # An UPDATE is not ACKed: drop the ACK that followed the re-INVITE's 200.
    ack = uac.index("CSeq: 2 ACK")
    start, end = uac.rindex("<send>", 0, ack), uac.index("</send>", ack) + len("</send>")
    uac = uac[:start] + uac[end:]
    assert "UPDATE [next_url]" in uac and "CSeq: 2 ACK" not in uac
    uas = (SCENARIOS / "uas_reinvite.xml").read_text()
    first = uas.index('<recv request="INVITE"/>')
    uas = uas[:first] + uas[first:].replace('<recv request="INVITE"/>',
                                            '<recv request="UPDATE"/>', 1)
    second_ack = uas.index('<recv request="ACK"/>', uas.index('<recv request="UPDATE"/>'))
    uas = uas[:second_ack] + uas[second_ack + len('<recv request="ACK"/>'):]
    paths = tmp_path / "uac_update.xml", tmp_path / "uas_update.xml"
    paths[0].write_text(uac)
    paths[1].write_text(uas)
    return paths


def test_an_update_with_an_offer_crosses_mid_call(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)
    uac_xml, uas_xml = _update_scenarios(tmp_path)
    uas = callee(tmp_path, out, extra=["-m", "1"])
    uas.args[uas.args.index("-sf") + 1] = str(uas_xml)
    uac = caller(tmp_path, relay.sip_port, scenario_path=uac_xml, extra=["-m", "1", "-d", "200"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()
    update = next(m for m in uas.received() if m.startswith("UPDATE"))
    assert "application/sdp" in update and "m=audio" in update
    ok = next(m for m in uac.received() if m.startswith("SIP/2.0 200") and "UPDATE" in m)
    assert "m=audio" in ok
    assert_private(uac.received(), uas.received(), uac, uas)
    assert calls(relay.base)[0]["sip_code"] == 200
