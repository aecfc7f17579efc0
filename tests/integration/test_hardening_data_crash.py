"""Issue 13, crash safety, through `relay serve` and SIPp: two recorded calls are live at
a `kill -9`; the node's live-call journal already holds them; after the restart each has
its call record with `end_reason: crash`, the end time from the spool's last packet
(about the moment of the kill) and its finished recording linked."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from event_receiver import Receiver
from sipp_harness import A, B, X, api, bind, callee, caller, calls, relay_args, udp_port

from loadtest.tones import write_tone_pcap

pytestmark = pytest.mark.integration


def _journaled(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=5) as db:
        try:
            rows = db.execute("SELECT doc FROM live_calls").fetchall()
        except sqlite3.OperationalError:
            return []
    return [json.loads(r[0]) for r in rows]


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_calls_live_at_kill_9_get_crash_records_with_recordings(
        relay_factory: Any, tmp_path: Path, request: pytest.FixtureRequest,
        store: str) -> None:
    out = udp_port()
    url = (request.getfixturevalue("redis_server").url if store == "redis"
           else f"sqlite:///{tmp_path}/relay.db")
    receiver = Receiver(free_port(), "hook-secret-0123456789")
    receiver.start()
    request.addfinalizer(receiver.stop)
    conf = tmp_path / "relay.toml"
    conf.write_text(f'[events]\nurl = "{receiver.url}"\nsecret = "{receiver.secret}"\n'
                    "backoff = 0.1\nbackoff_max = 0.5\n")
    relay = relay_factory(url, relay_args(out, tmp_path, "--config", str(conf)))
    binding = bind(relay.base, record=True, out_id="order-crash")
    talk_a = write_tone_pcap(tmp_path / "a.pcap", 440.0, 20.0)
    talk_b = write_tone_pcap(tmp_path / "b.pcap", 1000.0, 20.0)
    uas = callee(tmp_path, out, "uas_audio.xml", number=B,
                 extra=["-m", "2", "-key", "pcap", str(talk_b)])
    uac = caller(tmp_path, relay.sip_port, "uac_audio.xml", number=A, x=X,
                 extra=["-m", "2", "-l", "2", "-r", "10", "-d", "20000",
                        "-key", "pcap", str(talk_a)])
    uas.start()
    uac.start()
    # Beside the SQLite file, else in the node's ./var (its working folder here).
    journal = (tmp_path if store == "sqlite" else relay.workdir / "var") \
        / f"journal-sip{relay.sip_port}.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = _journaled(journal)
        if len(live) == 2 and all(d.get("answer_at") for d in live):
            break
        time.sleep(0.1)
    assert len(live) == 2 and all(d.get("answer_at") for d in live), live
    assert {d["binding"] for d in live} == {binding["id"]}
    time.sleep(2.0)  # more than a second of audio spooled after the answer
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGKILL)
    killed_ms = time.time() * 1000
    relay.proc.wait(10)
    uac.stop()
    uas.stop()
    assert len(_journaled(journal)) == 2  # the journal outlives the process
    assert not list(Path(tmp_path / "rec").glob("*/*/*/*/mix.wav"))

    relay.start(timeout=60)  # same store, recordings and journal
    found = calls(relay.base, f"?binding={binding['id']}", want=2, timeout=30)
    assert len(found) == 2, found
    for rec in found:
        assert rec["end_reason"] == "crash" and rec["released_by"] == "relay", rec
        assert rec["caller"] == A and rec["callee"] == B and rec["x"] == X
        assert rec["out_id"] == "order-crash" and rec["sip_code"] == 200
        one = api(relay.base, "GET", f"/v1/calls/{rec['id']}")
        files = one["recording"]
        assert set(files) == {"caller", "callee", "mix"}, one
        for f in files.values():
            assert Path(f["path"]).exists() and Path(f["path"]).stat().st_size == f["size"]
        from sipp_harness import ms
        leg = one["legs"]["caller"]
        answer, end = ms(leg["answer_at"]), ms(leg["end_at"])
        # Each leg's INVITE time came through the journal: the caller's first.
        caller_invite, callee_invite = (ms(one["legs"][side]["invite_at"])
                                        for side in ("caller", "callee"))
        assert caller_invite <= callee_invite <= answer, one["legs"]
        assert ms(one["started_at"]) == caller_invite
        # The end is the last spooled packet: after the answer plus the audio we let
        # flow, and no later than the kill (a little slack for a loaded machine).
        assert end - answer >= 1500, (answer, end)
        assert end <= killed_ms + 500, (end, killed_ms)
        assert one["duration_ms"] == end - answer
    # Finished at the restart and sealed with them: the day's chain holds both calls.
    verified = subprocess.run(
        [sys.executable, "-m", "relay", "recordings", "--config", str(conf), "verify",
         "--recordings", str(tmp_path / "rec"), "--json", "--date", found[0]["started_at"][:10]],
        capture_output=True, text=True, timeout=60)
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["checked"] == 2, report
    assert report["unsealed"] == [], report
    assert _journaled(journal) == []  # closed once, not again at the next start
    # Webhooks hear of them too: call.ended with end_reason crash, once per call.
    got = receiver.wait_for(lambda evs: sum(
        e["type"] == "call.ended" and e["record"]["end_reason"] == "crash" for e in evs) >= 2)
    ended = {e["call_id"] if "call_id" in e else e["record"]["id"] for e in got
             if e["type"] == "call.ended" and e["record"]["end_reason"] == "crash"}
    assert ended == {rec["id"] for rec in found}
    receiver.check()
