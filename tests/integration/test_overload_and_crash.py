"""Through `relay serve`: overload sheds new calls with 503 + Retry-After while calls in
progress go on; a `kill -9` during a recorded call leaves a spool that the restarted
relay finishes into WAV files."""

from __future__ import annotations

import json
import signal
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from audio_check import goertzel, samples
from sipp_harness import (
    A,
    B,
    X,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
    write_config,
)

from loadtest.tones import write_tone_pcap

pytestmark = pytest.mark.integration


def test_forced_overload_sheds_new_calls_and_lets_a_live_call_end(relay_factory: Any,
                                                                  tmp_path: Path) -> None:
    out = udp_port()
    # The test knob shrinks the budget to one call: every later INVITE is shed.
    cfg = write_config(tmp_path / "cfg", {"overload_force_after": 1, "overload_retry_after": 7,
                                          "overload_sample": 1})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(cfg)))
    bind(relay.base)
    uas = callee(tmp_path, out, number=B, extra=["-m", "1"])
    live = caller(tmp_path, relay.sip_port, number=A, extra=["-m", "1", "-d", "2500"],
                  name="live")
    uas.start()
    live.start()
    time.sleep(1.0)  # the call is up, and it took the only slot
    shed = caller(tmp_path, relay.sip_port, number=A, extra=["-m", "2"], name="shed",
                  scenario_path=refused_scenario(tmp_path, 503))
    shed.start()
    assert shed.wait(30) == 0, shed.tail()
    answers = [m for m in shed.received() if m.startswith("SIP/2.0 503")]
    assert len(answers) >= 2 and all("Retry-After: 7" in m for m in answers), answers
    # The live call's BYE (in the dialog) still passes while new calls are shed.
    assert live.wait(30) == 0, live.tail()
    assert uas.wait(30) == 0, uas.tail()
    assert any(m.startswith("BYE") for m in uas.received())
    found = calls(relay.base, want=3)
    assert sorted(c["sip_code"] for c in found) == [200, 503, 503]


def test_kill_9_during_a_recorded_call_is_finished_at_restart(relay_factory: Any,
                                                              tmp_path: Path) -> None:
    out = udp_port()
    args = relay_args(out, tmp_path)
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args)
    bind(relay.base, record=True)
    talk_a = write_tone_pcap(tmp_path / "a.pcap", 440.0, 8.0)
    talk_b = write_tone_pcap(tmp_path / "b.pcap", 1000.0, 8.0)
    uas = callee(tmp_path, out, "uas_audio.xml", number=B,
                 extra=["-m", "1", "-key", "pcap", str(talk_b)])
    uac = caller(tmp_path, relay.sip_port, "uac_audio.xml", number=A, x=X,
                 extra=["-m", "1", "-d", "8000", "-key", "pcap", str(talk_a)])
    uas.start()
    uac.start()
    time.sleep(3.5)  # answered, and more than a second of audio spooled
    assert relay.proc is not None
    children = _children(relay.proc.pid)
    assert children  # the recording finisher (a process pool of one)
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()]  # none outlives it
    spools = list((tmp_path / "rec").glob("*/*/*/*.spool"))
    assert len(spools) == 1 and spools[0].stat().st_size > 20_000, spools
    folder = spools[0].with_suffix("")
    assert not (folder / "mix.wav").exists()
    uac.stop()
    uas.stop()

    relay.start(timeout=60)  # same store and recordings: start-up finishes what was left
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (folder / "mix.wav").exists():
        time.sleep(0.1)
    assert (folder / "mix.wav").exists() and not spools[0].exists()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["legs"]["caller"]["codec"] in ("PCMU", "PCMA")  # spooled metadata frame
    for leg, mine, theirs in (("caller", 440.0, 1000.0), ("callee", 1000.0, 440.0)):
        assert meta["files"][leg]["duration_ms"] > 1000, meta["files"]
        with wave.open(str(folder / f"{leg}.wav"), "rb") as w:
            xs = samples(w.readframes(w.getnframes()))
        assert goertzel(xs, mine) > 100 * goertzel(xs, theirs), leg


def _children(pid: int) -> list[int]:
    """Child process ids of `pid` (proc(5): /proc/PID/task/TID/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out
