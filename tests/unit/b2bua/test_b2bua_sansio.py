"""The B2BUA core without I/O: state table, failure mapping, records (tests/unit/test_sans_io.py
checks its imports)."""

from __future__ import annotations

import pytest

from relay.b2bua._state import TABLE, LegKind, LegState
from relay.b2bua.cdr import CallTimes, build_record
from relay.b2bua.legs import map_failure


def test_dead_legs_accept_nothing() -> None:
    assert not [k for k in TABLE if k[1] is LegState.DEAD]
    assert all(isinstance(k[0], LegKind) for k in TABLE)


@pytest.mark.parametrize(("status", "expected"), [
    (486, (486, 17)), (600, (486, 17)), (302, (480, 127)), (401, (480, 127)),
    (407, (480, 127)), (503, (503, 34)), (408, (408, 102)), (499, (499, 127)),
    (699, (480, 21)),
])
def test_failure_mapping(status: int, expected: tuple[int, int]) -> None:
    assert map_failure(status) == expected


def test_record_times_are_utc_ms_and_first_stamp_wins() -> None:
    t = CallTimes()
    t.stamp("caller", "invite_at", 1.2345)
    t.stamp("caller", "invite_at", 9.0)
    t.stamp("caller", "answer_at", 2.0)
    t.stamp("caller", "end_at", 5.5)
    rec = build_record(call_id="c1", started_at=1.2345, x="+1", caller=None, callee=None,
                       binding=None, out_id=None, direction=None, times=t, sip_code=200,
                       cause=16, released_by="caller", unconnected="none", recording=None)
    assert rec["legs"] == {"caller": {"invite_at": 1234, "ring_at": None, "answer_at": 2000,
                                      "end_at": 5500, "sip_code": None}}
    assert rec["duration_ms"] == 3500 and rec["id"] == "c1"
