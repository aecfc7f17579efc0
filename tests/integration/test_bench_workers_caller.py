"""The workers benchmark's caller against a real relay that sheds: a 503 is ACKed and
counted as shed, apart from completed and failed calls (loadtest.bench_workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sipp_harness import B, bind, callee, relay_args, udp_port, write_config

from loadtest import bench_workers

pytestmark = pytest.mark.integration


def test_shed_calls_are_acked_and_counted_apart(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    # The test knob: the budget is one call, so while it lasts every other INVITE is shed.
    cfg = write_config(tmp_path / "cfg", {"overload_force_after": 1, "overload_sample": 1})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(cfg)))
    bind(relay.base)
    uas = callee(tmp_path, out, number=B, extra=["-m", "1"])
    uas.start()
    step = bench_workers.run_step(tmp_path, relay.sip_port, 20, 6)
    assert uas.wait(30) == 0, uas.tail()
    # One call took the only slot and completed; the five placed during it were shed,
    # each ACKed (SIPp ended every call) and none counted as failed.
    assert step["ok"] == 1 and step["shed_503"] == 5, step
    assert step["failed"] == 0 and step["unfinished"] == 0, step
    assert step["machine_cpu_ms_per_call"] > 0
