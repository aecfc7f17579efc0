"""The SIPp engine's generated scenarios: well-formed, and the ACK of a refusal reuses
the INVITE's branch (RFC 3261 §17.1.1.3), counted as SIPp counts ([branch-N])."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loadtest.sipp_engine import CODES, _Placed, planned_rate, uac_scenario, uas_scenario


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


def test_each_call_talks_its_own_time_and_each_callee_answers_after_its_delay() -> None:
    uac = uac_scenario([200])
    assert '<assignstr assign_to="t" value="[field2]"/>' in uac
    assert '<pause variable="talk"/>' in uac
    uas = uas_scenario(300, "callee.csv")
    root = ET.fromstring(uas.split("\n", 2)[2])
    lookup = root.find("./recv/action/lookup")
    assert lookup is not None and lookup.get("file") == "callee.csv"
    assert lookup.get("key") == "[$b]"
    assert '<assign assign_to="delay" value="300"/>' in uas  # a number not in the table
    assert '<pause variable="delay"/>' in uas and "<pause milliseconds" not in uas


def test_planned_rate_follows_the_offsets() -> None:
    ramp = [i * 0.1 for i in range(10)] + [1 + i * 0.05 for i in range(20)]
    assert planned_rate(ramp, 0.0) == 10.0
    assert planned_rate(ramp, 1.0) == 20.0
    assert planned_rate(ramp, 2.5) == 0.0


def test_placed_counts_calls_from_a_growing_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.msg"
    placed = _Placed(trace)
    assert placed.count() == 0  # no file yet
    trace.write_bytes(b"INVITE sip:x SIP/2.0\nCall-ID: lt-1-77@h\n\nCall-ID: lt-2-7")
    assert placed.count() == 1  # the line still being written waits for its end
    with open(trace, "ab") as f:
        f.write(b"7@h\nSIP/2.0 200 OK\nCall-ID: lt-1-77@h\n")
    assert placed.count() == 2
