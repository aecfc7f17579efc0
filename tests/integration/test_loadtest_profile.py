"""`python -m loadtest profile` with both engines against a relay (a few seconds each),
SMS over SMPP in the same run, RTP on the native engine, the direct anchor (SIPp's own
UAS) in the same run, and a SIPp UAS as "any other switch"."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from sipp_harness import callee, need_sipp, relay_args, udp_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ("ramp 2 6 2s; hold 6 2s; hold-time 1s; answer-delay 0.2s; strangers 15%; "
           "frozen 10%; bindings 4; seed 2")


def loadtest(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadtest", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _expected(rep: dict[str, Any]) -> dict[str, int]:
    return rep["plan"]["expected_codes"]


def test_native_engine_with_rtp_sms_and_the_direct_anchor(relay_factory: Any,
                                                          tmp_path: Path) -> None:
    need_sipp()
    cp, smpp = udp_port(), free_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(
        cp, tmp_path / "w", "--smpp", f"127.0.0.1:{smpp}", "--smpp-account", "lt:pw"))
    out = tmp_path / "rep"
    run = loadtest("profile", "--profile", PROFILE + "; sms 4", "--rtp", "--direct",
                   "--smpp", f"127.0.0.1:{smpp}", "--smpp-account", "lt:pw", "--quiet",
                   "--target", f"127.0.0.1:{node.sip_port}", "--callee", f"127.0.0.1:{cp}",
                   "--api", node.base, "--report", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["engine"] == "native"
    assert rep["attempted"] == 20 and rep["failed"] == 0 and rep["expected_mismatches"] == 0
    assert rep["codes"] == _expected(rep)
    assert [s["step"] for s in rep["steps"]] == ["ramp 2->6/s", "hold 6/s"]
    assert rep["steps"][1]["offered_rate"] == pytest.approx(6, rel=0.05)
    # Media went both ways through the relay: tones arrived intact, delay measured.
    rtp = rep["rtp"]
    assert rtp["calls"] == rep["completed"] and rtp["bad_payload"] == 0
    assert rtp["received"] > 0.9 * rtp["sent"]
    assert 0 < rtp["one_way_delay_ms"]["p50"] < 500
    # The anchor ran the same attempts in this run, straight to a SIPp UAS.
    assert rep["direct"]["attempted"] == 20 and rep["direct"]["completed"] == 20
    assert rep["ratio_vs_direct"]["p50"] > 0
    sms = rep["sms"]
    assert sms["submitted"] == 16 and sms["accepted"] == 16 and sms["delivered"] == 16
    assert sms["wrong_recipient_or_sender"] == 0 and rep["leaks"] == []
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "rate.png",
                                               "setup.png", "outcomes.png"}


def test_sipp_engine(relay_factory: Any, tmp_path: Path) -> None:
    need_sipp()
    cp = udp_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(cp, tmp_path / "w"))
    out = tmp_path / "rep"
    run = loadtest("profile", "--profile", PROFILE, "--engine", "sipp", "--quiet",
                   "--target", f"127.0.0.1:{node.sip_port}", "--callee", f"127.0.0.1:{cp}",
                   "--api", node.base, "--report", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["engine"] == "sipp"
    assert rep["attempted"] == 20 and rep["failed"] == 0 and rep["expected_mismatches"] == 0
    assert rep["codes"] == _expected(rep)
    assert len(rep["steps"]) == 2 and rep["setup_ms"]["p99"] is not None
    assert rep["sipp"]["talk_ms"] == 1000 and rep["sipp"]["answer_delay_ms"] == 200


def test_any_switch_here_a_sipp_uas(tmp_path: Path) -> None:
    """No relay, no setup: the target is SIPp's own UAS (it answers every call)."""
    need_sipp()
    uas = callee(tmp_path, udp_port()).start()
    try:
        run = loadtest("profile", "--profile", "hold 5 2s; hold-time 0.5s; bindings 2",
                       "--no-setup", "--no-leak-check", "--quiet",
                       "--target", f"127.0.0.1:{uas.port}",
                       "--callee", f"127.0.0.1:{udp_port()}", "--report", str(tmp_path / "r"))
    finally:
        uas.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert (rep["attempted"], rep["completed"], rep["setup"]) == (10, 10, {})
    assert len(uas.received()) >= 30  # INVITE, ACK, BYE per call reached SIPp


def test_sipp_engine_follows_a_ramp(tmp_path: Path) -> None:
    """SIPp's rate is steered while it runs: a ramp rises (it was once flat at its mean),
    and the progress line carries p99 setup."""
    need_sipp()
    out = tmp_path / "rep"
    run = loadtest("profile", "--profile", "ramp 2 20 4s; hold-time 0.3s; bindings 6",
                   "--engine", "sipp", "--local-relay", "--report", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "p99 setup" in run.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["attempted"] == 44 and rep["completed"] == 44, rep
    placed = [t["placed"] for t in rep["timeline"]]
    # The plan offers about 4, 9, 13, 18 calls in its four seconds; flat would be 11 each.
    first, peak = placed[0], max(placed)
    assert first <= 7 and peak >= 13, placed


def _running(pid: int) -> bool:
    """`pid` exists and is not a zombie (proc(5): the state after the command's ")")."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sipp_and_the_relay_die_with_a_killed_tool(tmp_path: Path) -> None:
    """The tool's children run in sessions of their own (a terminal's Ctrl-C is the
    tool's): after `kill -9` of the tool they must still stop, not run on orphaned."""
    import os
    import signal
    import time

    need_sipp()
    tool = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "profile", "--profile",
         "hold 5 60s; hold-time 0.5s; bindings 2", "--engine", "sipp", "--local-relay",
         "--quiet", "--report", str(tmp_path / "rep")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> dict[int, str]:
        out = subprocess.run(["pgrep", "-a", "-P", str(tool.pid)], capture_output=True,
                             text=True, check=False).stdout
        return {int(line.split()[0]): line for line in out.splitlines()}

    kids: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            kids = children()
            if sum("sipp" in line for line in kids.values()) >= 2:  # UAS and UAC
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no SIPp UAS and UAC under the tool: {children()}")
        assert any("relay serve" in line for line in kids.values()), kids
        tool.send_signal(signal.SIGKILL)
        tool.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = [pid for pid in kids if _running(pid)]
            if not alive:
                break
            time.sleep(0.2)
        assert not alive, [kids[p] for p in alive]
    finally:
        if tool.poll() is None:
            tool.kill()
        for pid in {**kids, **children()}:  # orphans too, when the test failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
