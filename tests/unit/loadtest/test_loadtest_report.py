"""Report building: DESIGN's keys, per-code counts, steps, mismatches, RTP, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.plan import Attempt
from loadtest.report import Result, build_report, render_html, write_report


def _results() -> list[Result]:
    out = []
    for i in range(10):
        a = Attempt(offset=i * 0.5, caller="+8613800000001", x="+8617000000001",
                    callee="+8613900000001", expect_code=200, step="hold 2/s",
                    source_id=f"r{i}")
        out.append(Result(a, placed_at=i * 0.5, code=200, setup_ms=float(i + 1),
                          rtp_sent=100, rtp_received=98 if i == 0 else 100,
                          rtp_delay_ms=[1.0, 2.0]))
    stranger = Attempt(5.0, "+8613700000001", "+8617000000001", None, 403, step="spike 9/s")
    out.append(Result(stranger, placed_at=5.0, code=403, setup_ms=0.5))
    wrong = Attempt(5.1, "+8613800000001", "+8617000000002", None, 410, step="spike 9/s",
                    source_id="frozen-one")
    out.append(Result(wrong, placed_at=5.1, code=404, setup_ms=0.4))
    lost = Attempt(5.2, "+8613800000001", "+8617000000001", "+8613900000001", 200,
                   step="spike 9/s")
    out.append(Result(lost, placed_at=5.2, error="timeout (no final answer)",
                      leaks=["callee number +86139… in a message to the caller"]))
    return out


def test_report_has_the_design_keys_and_counts() -> None:
    rep = build_report(_results(), duration_s=6.0, meta={"engine": "native", "target": "t"})
    for key in ("attempted", "completed", "refused", "failed", "setup_ms", "duration_s",
                "leaks"):
        assert key in rep
    assert (rep["attempted"], rep["completed"], rep["failed"]) == (13, 10, 1)
    assert rep["refused"] == {"403": 1, "404": 1}
    assert rep["codes"] == {"200": 10, "403": 1, "404": 1}
    # Setup percentiles of completed calls only: 1..10 ms.
    assert rep["setup_ms"] == {"p50": pytest.approx(6.0, abs=1), "p95": 10.0, "p99": 10.0}
    assert rep["expected_mismatches"] == 2
    assert {(m["expected"], m["got"]) for m in rep["mismatches"]} == {(410, 404), (200, None)}
    assert rep["failures"] == {"timeout (no final answer)": 1}
    assert rep["leaks"] == [{"record": "", "x": "+8617000000001",
                             "leak": "callee number +86139… in a message to the caller"}]
    steps = {s["step"]: s for s in rep["steps"]}
    assert steps["hold 2/s"]["attempted"] == 10
    assert steps["hold 2/s"]["offered_rate"] == 2.0
    assert steps["spike 9/s"]["refused"] == 2
    assert rep["rtp"]["sent"] == 1000 and rep["rtp"]["received"] == 998
    assert rep["rtp"]["loss_pct"] == {"mean": 0.2, "max": 2.0}
    assert rep["rtp"]["one_way_delay_ms"]["p99"] == 2.0
    tl = rep["timeline"]
    assert len(tl) == 6 and sum(b["offered"] for b in tl) == 13
    assert tl[0]["placed"] == 2 and tl[0]["completed"] == 2
    assert rep["engine"] == "native" and rep["partial"] is False


def test_empty_run_still_reports() -> None:
    rep = build_report([], duration_s=0.0, meta={}, partial=True)
    assert (rep["attempted"], rep["completed"], rep["failed"], rep["partial"]) == (0, 0, 0, True)
    assert rep["setup_ms"] == {"p50": None, "p95": None, "p99": None}
    assert "PARTIAL" in render_html(rep, [])


def test_written_files(tmp_path: Path) -> None:
    rep = build_report(_results(), duration_s=6.0, meta={"engine": "native", "target": "t"})
    paths = write_report(rep, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["attempted"] == 13
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "Leaks" in page and "frozen-one" in page
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert data["plots"] == [] and "install the <code>plots</code> extra" in page
        return
    assert data["plots"] == ["rate.png", "setup.png", "outcomes.png"]
    for name in data["plots"]:
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 2000
        assert f"src='{name}'" in page
    assert len(paths) == 5
