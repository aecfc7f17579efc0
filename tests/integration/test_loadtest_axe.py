"""`python -m loadtest axe` at one tiny step (2 calls/s for 3 s, two extensions), so the
AXE benchmark cannot rot: it runs end to end (relay serve, SIPp callers keying RFC 4733
digits, the tone callee, the direct anchor), every call is checked against its record,
and the report keeps its shape. Six calls overload nothing: no cool-down between the
direct ladder and the relay's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sipp_harness import need_sipp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_axe_benchmark_one_tiny_step(tmp_path: Path) -> None:
    need_sipp()
    run = subprocess.run(
        [sys.executable, "-m", "loadtest", "axe", "--rates", "2", "--step", "3",
         "--exts", "2", "--cooldown", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "== axe ==" in run.stdout
    data = json.loads((tmp_path / "axe.json").read_text())
    assert data["benchmark"] == "axe"
    assert data["setup"] == "recorded, in-process media, prompts on"
    figures = data["figures"]
    assert figures["max calls/s via relay (<0.1% failed)"]["value"] == 2
    assert figures["max calls/s direct (<0.1% failed)"]["value"] == 2
    assert figures["failed calls via relay @2/s"]["value"] == 0
    assert len(data["load_avg"]["start"]) == 3

    (direct,) = data["direct_steps"]
    assert (direct["calls"], direct["ok"], direct["failed"]) == (6, 6, 0)
    (step,) = data["relay_steps"]
    assert (step["calls"], step["ok"], step["failed"], step["sipp_failed"]) == (6, 6, 0, 0)
    assert step["records"] == {"completed": 6, "no_ext": 0, "wrong_ext": 0, "wrong_b": 0,
                               "unconnected": 0, "foreign": 0}
    # INVITE -> bridged spans the prompt wait and the keying: more than the wait alone.
    params = data["params"]
    assert params["wait_ms"] + params["key_ms"] < step["setup_ms"]["p50"] < 10_000
    assert step["prompts_playing_peak"] >= 1  # the relay spoke (prompt, ringback)
    assert step["calls_live_peak"] >= 1
    assert step["relay_cpu_ms_per_call"] > 0
    for key in ("setup_ms", "answer_ms", "keying_ms", "route_ms", "ring_ms",
                "invite_to_200_ms"):
        assert set(step[key]) == {"p50", "p95", "p99"}
