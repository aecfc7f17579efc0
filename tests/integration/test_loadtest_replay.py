"""`python -m loadtest replay` end to end: real calls through one `relay serve`, exported
with `relay calls --json`, replayed against a fresh relay; a leak planted by a fake
switch; Ctrl-C. Small counts, generous timeouts (a loaded 2-core machine)."""

from __future__ import annotations

import collections
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import caller, calls, need_sipp, refused_scenario, relay_args, udp_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def loadtest(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadtest", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_replay_of_exported_records_agrees(relay_factory: Any, tmp_path: Path) -> None:
    need_sipp()
    cp1 = udp_port()
    db1 = tmp_path / "one.db"
    one = relay_factory(f"sqlite:///{db1}", relay_args(cp1, tmp_path / "w1"), "one")
    # Real traffic through relay one: answered calls (both sides hang up), a frozen X,
    # strangers, and one SIPp call to an X nobody bound (404).
    run = loadtest("profile", "--profile",
                   "hold 2 3s; hold-time 1s; answer-delay 0.3s; strangers 20%; frozen 20%;"
                   " bindings 4; seed 1", "--target", f"127.0.0.1:{one.sip_port}",
                   "--callee", f"127.0.0.1:{cp1}", "--api", one.base, "--quiet",
                   "--report", str(tmp_path / "made"))
    assert run.returncode == 0, run.stdout + run.stderr
    unknown = caller(tmp_path, one.sip_port, x="+8617099999999",
                     scenario_path=refused_scenario(tmp_path, 404),
                     extra=["-m", "1"]).start()
    assert unknown.wait(60) == 0, unknown.tail()
    made = json.loads((tmp_path / "made" / "report.json").read_text())
    want = made["attempted"] + 1
    calls(one.base, "?limit=100", want=want, timeout=30)
    export = subprocess.run([sys.executable, "-m", "relay", "calls", "--json", "--store",
                             f"sqlite:///{db1}", "--limit", "100"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=True)
    records = json.loads(export.stdout)["calls"]
    assert len(records) == want
    (tmp_path / "calls.json").write_text(export.stdout)
    original = collections.Counter(r["sip_code"] for r in records)
    assert {200, 403, 404, 410} <= set(original)

    cp2 = udp_port()
    two = relay_factory(f"sqlite:///{tmp_path}/two.db", relay_args(cp2, tmp_path / "w2"),
                        "two")
    run = loadtest("replay", "--records", str(tmp_path / "calls.json"),
                   "--target", f"127.0.0.1:{two.sip_port}", "--callee", f"127.0.0.1:{cp2}",
                   "--api", two.base, "--report", str(tmp_path / "replayed"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "attempted" in run.stderr  # the progress line
    rep = json.loads((tmp_path / "replayed" / "report.json").read_text())
    assert rep["attempted"] == want
    assert rep["codes"] == {str(k): v for k, v in original.items()}
    assert rep["completed"] == original[200]
    assert rep["refused"] == {str(k): v for k, v in original.items() if k != 200}
    assert (rep["failed"], rep["expected_mismatches"], rep["leaks"]) == (0, 0, [])
    assert rep["setup"]["frozen"] >= 1
    html = (tmp_path / "replayed" / "report.html").read_text()
    assert "Load test report" in html and f"<td>{want}</td>" in html

    # The fresh relay saw the same calls at the same offsets, as long, ended by the same side.
    again = calls(two.base, "?limit=100", want=want, timeout=30)
    assert len(again) == want
    old = sorted(records, key=lambda r: r["started_at"])
    new = sorted(again, key=lambda r: r["started_at"])
    t_old, t_new = _epoch(old[0]["started_at"]), _epoch(new[0]["started_at"])
    for o, n in zip(old, new, strict=True):
        assert n["sip_code"] == o["sip_code"]
        assert abs((_epoch(n["started_at"]) - t_new) - (_epoch(o["started_at"]) - t_old)) < 1.5
        if o["sip_code"] == 200:
            assert abs(n["duration_ms"] - o["duration_ms"]) < 1500, (o, n)
            assert n["released_by"] == o["released_by"]


def _rec(i: int, t: float, x: str, caller: str, callee: str | None, **kw: Any
         ) -> dict[str, Any]:
    at = f"2026-12-07T10:00:{t:06.3f}Z"
    row = {"id": f"c{i}", "started_at": at, "x": x, "caller": caller, "callee": callee,
           "direction": "a_to_b" if callee else None, "sip_code": 200,
           "released_by": "caller", "unconnected_cause": "none", "duration_ms": 500,
           "legs": {"caller": {"invite_at": at, "sip_code": 200}}}
    row.update(kw)
    return row


def _msg(i: int, t: float, x: str, sender: str, recipient: str | None, **kw: Any
         ) -> dict[str, Any]:
    row = {"id": f"m{i}", "started_at": f"2026-12-07T10:00:{t:06.3f}Z", "x": x,
           "sender": sender, "recipient": recipient,
           "direction": "a_to_b" if recipient else None,
           "status": "delivered" if recipient else "refused",
           "command_status": 0 if recipient else None}
    row.update(kw)
    return row


AXE, AXN, AXB, FROZEN = "+8617055550001", "+8617055550002", "+8617055550003", "+8617055550004"
LATER = "+8617055550005"


def test_replay_of_axe_axn_calls_and_messages(relay_factory: Any, tmp_path: Path) -> None:
    """Records of a shared X (AXE, two extensions and a wrong one), an AXN X (strangers
    reach B, B reaches A) and messages (AXB both ways, refusals): the bindings are made
    in their modes, every call and message gets its recorded answer, and a message whose
    record claims another status is reported."""
    from loadtest.common import free_port
    from loadtest.run import read_source

    rows = [_rec(1, 0, AXE, "+8613800000001", "+8613900000001", ext="0101"),
            _rec(2, 0.4, AXE, "+8613800000002", "+8613900000002", ext="0102"),
            _rec(3, 0.8, AXN, "+8613800000003", "+8613900000003"),
            _rec(4, 1.2, AXN, "+8613800000004", "+8613900000003"),
            _rec(5, 1.6, AXN, "+8613900000003", "+8613800000009", direction="b_to_a",
                 released_by="callee"),
            _rec(6, 2.0, AXE, "+8613800000005", None, ext="0999", sip_code=404,
                 unconnected_cause="no_extension", released_by="relay", legs={}),
            # An order delivered, then closed: bridged, then refused as frozen. The
            # binding is frozen between the two, during the run.
            _rec(7, 2.6, LATER, "+8613800000031", "+8613900000031"),
            _rec(8, 3.8, LATER, "+8613800000031", None, sip_code=410,
                 unconnected_cause="frozen", released_by="relay", legs={})]
    msgs = [_msg(1, 0.2, AXB, "+8613800000021", "+8613900000021"),
            _msg(2, 0.6, AXB, "+8613900000021", "+8613800000021", direction="b_to_a"),
            _msg(3, 1.0, AXB, "+8613700000099", None, reason="stranger"),
            _msg(4, 1.4, FROZEN, "+8613800000022", None, reason="frozen"),
            _msg(5, 1.8, "+8617055550009", "+8613800000023", None, reason="no_binding"),
            _msg(6, 2.2, AXN, "+8613800000077", "+8613900000003"),
            # A record that claims a status this binding cannot give: reported.
            _msg(7, 2.4, AXB, "+8613700000098", None, reason="stranger", command_status=0x0B)]
    (tmp_path / "calls.json").write_text(json.dumps({"calls": rows}))
    (tmp_path / "messages.json").write_text(json.dumps({"messages": msgs}))
    cp, smpp = udp_port(), free_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(
        cp, tmp_path / "w", "--smpp", f"127.0.0.1:{smpp}", "--smpp-account",
        "loadtest:loadtest"))
    run = loadtest("replay", "--records", str(tmp_path / "calls.json"), "--messages",
                   str(tmp_path / "messages.json"), "--target", f"127.0.0.1:{node.sip_port}",
                   "--callee", f"127.0.0.1:{cp}", "--api", node.base, "--smpp",
                   f"127.0.0.1:{smpp}", "--quiet", "--report", str(tmp_path / "rep"))
    assert run.returncode == 1, run.stdout + run.stderr  # message 7's claim is wrong
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["codes"] == {"200": 6, "404": 1, "410": 1}, rep["codes"]
    assert (rep["expected_mismatches"], rep["failed"], rep["leaks"]) == (0, 0, [])
    assert rep["plan"]["modes"] == {"AXE": 2, "AXN": 1, "AXB": 3}
    assert (rep["setup"]["frozen"], rep["setup"]["frozen_during_run"]) == (1, 1)
    sms = rep["sms"]
    assert (sms["submitted"], sms["accepted"], sms["delivered"]) == (7, 3, 3), sms
    assert sms["refused"] == {"0x65": 2, "0x66": 1, "0x0B": 1}, sms
    assert sms["wrong_recipient_or_sender"] == 0 and sms["leaks"] == []
    assert sms["expected_mismatches"] == 1
    assert sms["mismatches"] == [{"record": "m7", "x": AXB, "expected": "0x0B",
                                  "got": "0x65"}]
    assert "1 unexpected statuses" in run.stdout
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "SMS statuses other than expected" in page and "<td>m7</td>" in page

    # The relay's own records: the AXE calls reached the extension's B, by mode.
    got = calls(node.base, "?limit=100", want=8, timeout=30)
    by_caller = {r["caller"]: r for r in got if r["sip_code"] != 410}
    assert by_caller["+8613800000002"]["callee"] == "+8613900000002"
    assert by_caller["+8613800000002"]["ext"] == "0102"
    assert by_caller["+8613900000003"]["callee"] == "+8613800000009"  # AXN: B reaches A
    # Reading records from the API follows its `next` cursor through every page.
    paged = json.loads(read_source(f"{node.base}/v1/calls?limit=2", "calls"))["calls"]
    assert sorted(r["id"] for r in paged) == sorted(r["id"] for r in got)
    deadline = time.monotonic() + 30
    texts: list[Any] = []
    while len(texts) < 7 and time.monotonic() < deadline:  # the writer batches
        texts = json.loads(read_source(f"{node.base}/v1/messages?limit=3", "messages"))[
            "messages"]
        time.sleep(0.2)
    assert len(texts) == 7 and len({m["id"] for m in texts}) == 7

    # Round trip: what this relay recorded, exported, replays on a fresh relay with the
    # same answers (message 7 now carries the status it really got).
    for verb in ("calls", "messages"):
        export = subprocess.run(
            [sys.executable, "-m", "relay", verb, "--json", "--store",
             f"sqlite:///{tmp_path}/r.db", "--limit", "100"], cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=True)
        (tmp_path / f"{verb}-1.json").write_text(export.stdout)
    cp2, smpp2 = udp_port(), free_port()
    two = relay_factory(f"sqlite:///{tmp_path}/two.db", relay_args(
        cp2, tmp_path / "w2", "--smpp", f"127.0.0.1:{smpp2}", "--smpp-account",
        "loadtest:loadtest"), "two")
    run = loadtest("replay", "--records", str(tmp_path / "calls-1.json"), "--messages",
                   str(tmp_path / "messages-1.json"), "--target", f"127.0.0.1:{two.sip_port}",
                   "--callee", f"127.0.0.1:{cp2}", "--api", two.base, "--smpp",
                   f"127.0.0.1:{smpp2}", "--quiet", "--report", str(tmp_path / "rep2"))
    assert run.returncode == 0, run.stdout + run.stderr
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["codes"] == rep["codes"] and again["plan"]["modes"] == rep["plan"]["modes"]
    assert (again["sms"]["accepted"], again["sms"]["refused"], again["sms"]["delivered"]) == (
        sms["accepted"], sms["refused"], sms["delivered"])
    assert again["sms"]["expected_mismatches"] == 0


def test_replay_with_the_sipp_engine(relay_factory: Any, tmp_path: Path) -> None:
    """The same AXE (extension in the Request-URI as `X,E`) and AXN records, placed by
    SIPp: every call gets its recorded code."""
    need_sipp()
    rows = [_rec(1, 0, AXE, "+8613800000001", "+8613900000001", ext="0101"),
            _rec(2, 0.5, AXE, "+8613800000002", "+8613900000002", ext="0102"),
            _rec(3, 1.0, AXN, "+8613800000003", "+8613900000003"),
            _rec(4, 1.5, AXN, "+8613800000004", "+8613900000003"),
            _rec(5, 2.0, AXE, "+8613800000005", None, ext="0999", sip_code=404,
                 unconnected_cause="no_extension", released_by="relay", legs={}),
            _rec(6, 2.5, FROZEN, "+8613800000006", None, sip_code=410,
                 unconnected_cause="frozen", released_by="relay", legs={})]
    (tmp_path / "calls.json").write_text(json.dumps({"calls": rows}))
    cp = udp_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(cp, tmp_path / "w"))
    run = loadtest("replay", "--records", str(tmp_path / "calls.json"), "--engine", "sipp",
                   "--target", f"127.0.0.1:{node.sip_port}", "--callee", f"127.0.0.1:{cp}",
                   "--api", node.base, "--report", str(tmp_path / "rep"))
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["engine"] == "sipp"
    assert rep["codes"] == {"200": 4, "404": 1, "410": 1}, rep["codes"]
    assert (rep["failed"], rep["expected_mismatches"]) == (0, 0)
    got = calls(node.base, "?limit=100", want=6, timeout=30)
    assert {r["caller"]: r["callee"] for r in got if r["sip_code"] == 200} == {
        "+8613800000001": "+8613900000001", "+8613800000002": "+8613900000002",
        "+8613800000003": "+8613900000003", "+8613800000004": "+8613900000003"}


def test_sipp_engine_takes_each_calls_talk_and_its_callees_answer_delay(
        relay_factory: Any, tmp_path: Path) -> None:
    """SIPp places each call with its record's talk time (injection file) and its UAS
    answers each callee number after that number's answer delay (-infindex lookup)."""
    need_sipp()

    def timed(i: int, t: float, caller: str, callee: str, delay: float, talk: float
              ) -> dict[str, Any]:
        def at(s: float) -> str:
            return f"2026-12-07T10:00:{s:06.3f}Z"
        return _rec(i, t, "+861705555000" + str(i), caller, callee,
                    duration_ms=int(talk * 1000),
                    legs={"caller": {"invite_at": at(t), "sip_code": 200},
                          "callee": {"invite_at": at(t), "answer_at": at(t + delay),
                                     "end_at": at(t + delay + talk), "sip_code": 200}})

    rows = [timed(1, 0, "+8613800000001", "+8613900000001", 0.1, 0.5),
            timed(2, 0.5, "+8613800000002", "+8613900000002", 1.5, 3.0),
            timed(3, 1.0, "+8613800000003", "+8613900000001", 0.1, 0.5)]
    (tmp_path / "calls.json").write_text(json.dumps({"calls": rows}))
    cp = udp_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(cp, tmp_path / "w"))
    run = loadtest("replay", "--records", str(tmp_path / "calls.json"), "--engine", "sipp",
                   "--target", f"127.0.0.1:{node.sip_port}", "--callee", f"127.0.0.1:{cp}",
                   "--api", node.base, "--quiet", "--report", str(tmp_path / "rep"))
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["completed"] == 3 and rep["sipp"]["answer_delay"] == "per callee number"
    got = {r["caller"]: r for r in calls(node.base, "?limit=10", want=3, timeout=30)}
    slow, fast = got["+8613800000002"], got["+8613800000001"]
    # The relay measured it: B2 answered after about 1.5 s and talked about 3 s, B1 fast.
    def answered_after(r: dict[str, Any]) -> float:
        leg = r["legs"]["callee"]
        return _epoch(leg["answer_at"]) - _epoch(leg["invite_at"])
    assert 1.2 < answered_after(slow) < 3.0, slow
    assert answered_after(fast) < 1.0, fast
    assert 2500 < slow["duration_ms"] < 4500 and fast["duration_ms"] < 1500, (slow, fast)


class FakeSwitch:
    """A test-only SIP switch on UDP: answers every INVITE itself with 200 and, when
    `leaky`, copies the callee's real number into a header, as a careless switch might."""

    def __init__(self, callee_number: str, leaky: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.number = callee_number
        self.leaky = leaky
        self.invites = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            text = data.decode("latin-1")
            method = text.split(" ", 1)[0]
            if method == "ACK" or text.startswith("SIP/2.0"):
                continue
            head = [ln for ln in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
                    if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
            head = [ln + ";tag=fake1" if ln.lower().startswith("to:") and "tag=" not in ln
                    else ln for ln in head]
            body = ""
            if method == "INVITE":
                self.invites += 1
                if self.leaky:
                    head.append(f"X-Routed-To: <sip:{self.number}@10.1.2.3>")
                head.append(f"Contact: <sip:fake@127.0.0.1:{self.port}>")
                body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                        "t=0 0\r\nm=audio 9 RTP/AVP 0\r\n")
                head.append("Content-Type: application/sdp")
            head.append(f"Content-Length: {len(body)}")
            self.sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(head) + "\r\n\r\n" + body)
                             .encode(), addr)

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


def _bridged_records(n: int) -> dict[str, Any]:
    rows = []
    for i in range(n):
        t = f"2026-12-07T10:00:0{i}.000Z"
        rows.append({"id": f"c{i}", "started_at": t, "x": "+8617055556666",
                     "caller": "+8613811112222", "callee": "+8613933334444",
                     "direction": "a_to_b", "sip_code": 200, "released_by": "caller",
                     "unconnected_cause": "none", "duration_ms": 500,
                     "legs": {"caller": {"invite_at": t, "sip_code": 200}}})
    return {"calls": rows}


@pytest.mark.parametrize("leaky", [True, False])
def test_a_leak_planted_by_another_switch_is_reported(tmp_path: Path, leaky: bool) -> None:
    switch = FakeSwitch("+8613933334444", leaky)
    (tmp_path / "calls.json").write_text(json.dumps(_bridged_records(3)))
    try:
        run = loadtest("replay", "--records", str(tmp_path / "calls.json"), "--no-setup",
                       "--target", f"127.0.0.1:{switch.port}",
                       "--callee", f"127.0.0.1:{udp_port()}", "--speed", "4", "--quiet",
                       "--report", str(tmp_path / "rep"))
    finally:
        switch.stop()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert switch.invites >= 3
    assert (rep["attempted"], rep["completed"], rep["expected_mismatches"]) == (3, 3, 0)
    if leaky:
        assert run.returncode == 1, run.stdout + run.stderr
        assert len(rep["leaks"]) == 3
        assert all("callee number" in leak["leak"] for leak in rep["leaks"])
        assert "Leaks" in (tmp_path / "rep" / "report.html").read_text()
        assert "3 leaks" in run.stdout
    else:
        assert run.returncode == 0, run.stdout + run.stderr
        assert rep["leaks"] == []


def test_ctrl_c_gives_a_partial_report(relay_factory: Any, tmp_path: Path) -> None:
    cp = udp_port()
    node = relay_factory(f"sqlite:///{tmp_path}/r.db", relay_args(cp, tmp_path / "w"))
    out = tmp_path / "rep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "profile", "--profile",
         "hold 2 120s; hold-time 90s; bindings 3", "--target", f"127.0.0.1:{node.sip_port}",
         "--callee", f"127.0.0.1:{cp}", "--api", node.base, "--report", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait (by polling the progress line) until a few calls are up, then Ctrl-C.
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if line.startswith("attempted ") and int(line.split()[1].split("/")[0]) >= 4:
                break
        else:
            raise AssertionError(seen[-2000:])
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=90)
        # The calls are 90 s long: it ended them at once instead of waiting them out.
        assert time.monotonic() - sent < 60, stdout + stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    assert "PARTIAL" in stdout and "stopping" in stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["partial"] is True, rep
    assert 4 <= rep["attempted"] < 240, rep
    # Calls that were up were ended (BYE), one still ringing was CANCELled: none hangs,
    # none failed, and none counts as an unexpected answer.
    assert rep["completed"] + rep["cancelled_on_stop"] == rep["attempted"], rep
    assert rep["completed"] >= 3 and rep["failed"] == 0, rep
    assert rep["expected_mismatches"] == 0, rep["mismatches"]
    assert "PARTIAL" in (out / "report.html").read_text()
