"""Typed records: the stored form in, the contract form (ISO 8601 ms) out, and back."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relay.b2bua.cdr import CallTimes, build_record
from relay.events.records import CallRecord, LegTimes, MessageRecord, from_iso, to_iso
from relay.sms.router import message_record

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
A, B, X = "+8613811112222", "+8613933334444", "+8617055556666"


class _File:
    def __init__(self) -> None:
        self.path, self.size, self.sha256 = "/r/mix.wav", 1044, "ab" * 32
        self.duration_ms, self.record_start_at = 1000, 1_800_000_000_250


def _stored() -> dict[str, Any]:
    t = CallTimes()
    for leg, name, when in (("caller", "invite_at", 1_800_000_000.0),
                            ("callee", "invite_at", 1_800_000_000.01),
                            ("callee", "ring_at", 1_800_000_000.2),
                            ("caller", "ring_at", 1_800_000_000.201),
                            ("callee", "answer_at", 1_800_000_001.5),
                            ("caller", "answer_at", 1_800_000_001.502),
                            ("caller", "end_at", 1_800_000_031.5),
                            ("callee", "end_at", 1_800_000_031.5)):
        t.stamp(leg, name, when)
    rec = build_record(call_id="c1", started_at=1_800_000_000.0, x=X, caller=A, callee=B,
                       binding="b1", out_id="o1", direction="a_to_b", times=t, sip_code=200,
                       cause=16, released_by="caller", unconnected="none",
                       recording=type("R", (), {"files": {"mix": _File()}})())
    rec.update(ext="1234", ivr_start_at=1_800_000_000_100, ivr_end_at=1_800_000_000_900,
               prompts=["ext_prompt"])
    return rec


def _times(doc: Any) -> list[Any]:
    """Every value of a key ending in `_at` anywhere in `doc`."""
    found: list[Any] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k.endswith("_at"):
                found.append(v)
            else:
                found += _times(v)
    elif isinstance(doc, list):
        for v in doc:
            found += _times(v)
    return found


def test_call_record_contract_form_round_trips() -> None:
    rec = CallRecord.from_doc(_stored())
    out = rec.to_json()
    times = [t for t in _times(out) if t is not None]
    assert len(times) == 12 and all(ISO.match(t) for t in times)
    assert out["legs"]["caller"]["answer_at"] == "2027-01-15T08:00:01.502Z"
    assert out["started_at"] == "2027-01-15T08:00:00.000Z"
    assert out["recording"]["mix"]["record_start_at"] == "2027-01-15T08:00:00.250Z"
    assert out["duration_ms"] == 29_998 and out["ext"] == "1234"
    assert CallRecord.from_json(out) == rec
    masked = rec.to_json(real_numbers=False)
    assert masked["caller"] == "+86138****2222" and masked["x"] == X


def test_refused_and_message_records() -> None:
    t = CallTimes()
    t.stamp("caller", "invite_at", 1.0)
    rec = CallRecord.from_doc(build_record(
        call_id="r1", started_at=1.0, x=X, caller=A, callee=None, binding=None, out_id=None,
        direction=None, times=t, sip_code=404, cause=1, released_by="relay",
        unconnected="no_binding", recording=None))
    assert rec.legs == {"caller": LegTimes(invite_at=1.0)} and rec.recording is None
    assert CallRecord.from_json(rec.to_json()) == rec and "ext" not in rec.to_json()
    m = message_record("m1", now=1_800_000_000.123, sender=A, x=X, text="hi", payload=b"",
                       data_coding=8, parts=1, origin="http", retain_text=True, action=None,
                       route="gateway")
    msg = MessageRecord.from_doc(m)
    out = msg.to_json()
    assert out["received_at"] == "2027-01-15T08:00:00.123Z" and out["text"] == "hi"
    assert MessageRecord.from_json(out) == msg
    assert msg.to_json(real_numbers=False)["sender"] == "+86138****2222"


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_round_trip_to_the_millisecond(when: float) -> None:
    ms = round(when, 3)
    assert from_iso(to_iso(ms)) == ms
