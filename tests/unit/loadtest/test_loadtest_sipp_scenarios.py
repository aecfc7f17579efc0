"""The SIPp engine's generated scenarios: well-formed, and the ACK of a refusal reuses
the INVITE's branch (RFC 3261 §17.1.1.3), counted as SIPp counts ([branch-N])."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from loadtest.sipp_engine import CODES, uac_scenario, uas_scenario


@pytest.mark.parametrize("codes", [[], [200, 403], [200, 410, 499, 606]])
def test_refusal_ack_points_back_at_the_invite(codes: list[int]) -> None:
    text = uac_scenario(codes)
    root = ET.fromstring(text.split("\n", 2)[2])  # past the XML declaration and DOCTYPE
    steps = [el for el in root if el.tag != "label"]
    refusals = [el.get("response") for el in steps
                if el.tag == "recv" and el.get("next") == "refused"]
    assert set(map(int, refusals)) == {c for c in (*CODES, *codes) if c >= 300}
    last = steps[-1]
    assert last.tag == "send" and "ACK sip:" in (last.text or "")
    back = int(re.search(r"branch=\[branch-(\d+)\]", last.text or "").group(1))
    invite = steps[len(steps) - 1 - back]
    assert "INVITE sip:[field1]@" in (invite.text or "")


def test_uas_pauses_only_when_asked() -> None:
    assert "<pause" not in uas_scenario(0)
    assert '<pause milliseconds="250"/>' in uas_scenario(250)
    ET.fromstring(uas_scenario(250).split("\n", 2)[2])
