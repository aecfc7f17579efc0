"""The SIPp engine: generated SIPp scenarios and injection files, one SIPp caller run per
step of the plan, a SIPp UAS on the callee address.

SIPp places calls at a rate, not at given instants. While a step runs, the tool sets
that rate through SIPp's remote-control socket (`-cp`, `cset rate N`) every 0.2 s to
the plan's own rate around that moment (its attempts in the next second), so a ramp
rises as the plan's does and a replay follows the records' rate over time; the
instants within a second are SIPp's (evenly spread). The UAS answers every B-leg after
the plan's median answer delay and the caller hangs up after the median talk time.
Per-call answer delays, talk times, who hangs up, RTP and the leak checks are the
native engine's. Final codes and setup times per call come from SIPp's -trace_msg
file; the progress line's p99 setup from its -trace_rtt file (answered calls).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import TRACE_BLOCK, free_port, own_session, percentile, sipp_exe, stop_proc
from .plan import Attempt, Plan
from .report import Result

__all__ = ["SippEngine", "SippUas", "planned_rate", "uac_scenario", "uas_scenario"]

# Refusals the caller scenario accepts (and ACKs) besides those the plan expects.
CODES = (400, 403, 404, 408, 410, 480, 483, 486, 487, 488, 500, 503, 603)

# The offer of the caller and the answer of the callee (SIPp fills in its media port).
_SDP = """      v=0
      o=- 53655765 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
"""

_INVITE = """      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]LT[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

""" + _SDP


def _ack(branch: str, uri: str) -> str:
    return f"""  <send>
    <![CDATA[
      ACK {uri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]LT[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""


def uac_scenario(codes: list[int]) -> str:
    """The caller: INVITE from [field0] to [field1]; 200 -> ACK, pause (-d), BYE; any of
    `codes` -> ACK (RFC 3261 §17.1.1.3, same branch as the INVITE) and end."""
    codes = sorted({c for c in (*CODES, *codes) if c >= 300})
    k = len(codes)
    parts = ['<?xml version="1.0" encoding="ISO-8859-1" ?>',
             '<!DOCTYPE scenario SYSTEM "sipp.dtd">',
             '<scenario name="loadtest caller">',
             f'  <send retrans="500">\n    <![CDATA[\n{_INVITE}    ]]>\n  </send>',
             '  <recv response="100" optional="true"/>',
             '  <recv response="180" optional="true"/>',
             '  <recv response="183" optional="true"/>']
    parts += [f'  <recv response="{c}" optional="true" next="refused"/>' for c in codes]
    # Each call's own talk time (ms) is the injection file's third field.
    parts.append('  <recv response="200" rtd="true" rrs="true">\n    <action>\n'
                 '      <assignstr assign_to="t" value="[field2]"/>\n'
                 '      <todouble assign_to="talk" variable="t"/>\n'
                 '    </action>\n  </recv>')
    parts.append(_ack("[branch]", "[next_url]").rstrip("\n"))
    parts.append('  <pause variable="talk"/>')
    parts.append("""  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]LT[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>""")
    parts.append('  <recv response="200" crlf="true" next="done"/>')
    parts.append('  <label id="refused"/>')
    # Elements so far: INVITE, 3 provisionals, k refusals, 200, ACK, pause, BYE, 200;
    # labels do not count, so the INVITE is 9 + k elements back.
    parts.append(_ack(f"[branch-{9 + k}]",
                      "sip:[field1]@[remote_ip]:[remote_port]").rstrip("\n"))
    parts.append('  <label id="done"/>\n</scenario>\n')
    return "\n".join(parts)


def uas_scenario(answer_delay_ms: int, table: str = "") -> str:
    """The callee: 180, 200 with SDP after `answer_delay_ms`, wait for the BYE.

    With `table` (an injection file `B;DELAY_MS`, indexed with `-infindex FILE 0`), the
    delay is the one of the number the INVITE is for (its Request-URI user); a number
    not in the table gets `answer_delay_ms`."""
    pause = f'  <pause milliseconds="{answer_delay_ms}"/>\n' if answer_delay_ms > 0 else ""
    lookup = ""
    if table:
        pause = '  <pause variable="delay"/>\n'
        lookup = f"""
    <action>
      <assign assign_to="delay" value="{answer_delay_ms}"/>
      <ereg regexp="^INVITE sips?:([^@;,]+)" search_in="msg" check_it="false"
            assign_to="b,b"/>
      <lookup assign_to="row" file="{table}" key="[$b]"/>
      <test assign_to="known" variable="row" compare="greater_than_equal" value="0"/>
    </action>
  </recv>
  <nop next="answer" test="known"/>
  <nop next="ring"/>
  <label id="answer"/>
  <nop>
    <action>
      <assignstr assign_to="d" value="[field1 file=&quot;{table}&quot; line=&quot;[$row]&quot;]"/>
      <todouble assign_to="delay" variable="d"/>
    </action>
  </nop>
  <label id="ring"/>"""
    recv = '  <recv request="INVITE" crlf="true">' + lookup if lookup else \
        '  <recv request="INVITE" crlf="true"/>'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="loadtest callee">
{recv}
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]LTCallee[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
{pause}  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]LTCallee[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

{_SDP}    ]]>
  </send>
  <recv request="ACK" optional="true" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="2000"/>
</scenario>
"""


class SippUas:
    """A SIPp UAS on 127.0.0.1:`port` (the callee of the SIPp engine, and the direct
    anchor: a switch-less target that answers every call)."""

    def __init__(self, work: Path, port: int, answer_delay_ms: int = 0,
                 delays: dict[str, int] | None = None) -> None:
        """`delays`: the answer delay (ms) per callee number (others: `answer_delay_ms`)."""
        sf = work / f"uas-{port}.xml"
        table: list[str] = []
        if delays:
            (work / "callee.csv").write_text("SEQUENTIAL\n" + "".join(
                f"{b};{ms}\n" for b, ms in sorted(delays.items())))
            table = ["-inf", "callee.csv", "-infindex", "callee.csv", "0"]
        sf.write_text(uas_scenario(answer_delay_ms, "callee.csv" if delays else ""))
        self.log = open(work / f"uas-{port}.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sipp_exe(), "-sf", str(sf), "-i", "127.0.0.1", "-p", str(port),
             "-mp", str(free_port(socket.SOCK_DGRAM)), "-nostdin", "-aa",
             "-max_recv_loops", "5000", "-timeout", "3600s", *table],
            cwd=work, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            **own_session())  # a terminal's Ctrl-C is the tool's to handle
        time.sleep(0.3)

    def stop(self) -> None:
        stop_proc(self.proc)
        self.log.close()


def _trace(path: Path) -> dict[int, tuple[float, int | None, float | None]]:
    """Per SIPp call number: INVITE sent (epoch s), final code, when it came."""
    out: dict[int, tuple[float, int | None, float | None]] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for m in TRACE_BLOCK.finditer(text):
        stamp, way, first, rest = m.groups()
        cid = re.search(r"^Call-ID:\s*lt-(\d+)-", rest, re.M | re.I)
        if cid is None:
            continue
        n = int(cid.group(1))
        t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if way.endswith("sent") and first.startswith("INVITE ") and n not in out:
            out[n] = (t, None, None)
        elif (way.endswith("received") and first.startswith("SIP/2.0 ")
              and re.search(r"^CSeq:\s*\d+ INVITE", rest, re.M | re.I) and n in out):
            code = int(first.split()[1])
            sent, got, _ = out[n]
            if code >= 200 and got is None:
                out[n] = (sent, code, t)
    return out


def planned_rate(offsets: list[float], t: float, window: float = 1.0) -> float:
    """The plan's rate (calls/s) at `t` s into a step: its attempts in [t, t + window)
    (`offsets` sorted, from the step's start)."""
    lo = bisect.bisect_left(offsets, t)
    hi = bisect.bisect_left(offsets, t + window)
    return (hi - lo) / window


def _rtt_p99(path: Path | None) -> str:
    """p99 of the setup times (INVITE -> 200, ms) SIPp has written to its -trace_rtt file."""
    if path is None:
        return ""
    try:
        rows = path.read_text().splitlines()[1:]
    except OSError:
        return ""
    vals = []
    for row in rows:
        cols = row.split(";")
        with contextlib.suppress(IndexError, ValueError):
            vals.append(float(cols[1]))  # Date_ms;response_time_ms;rtd_no
    return f"  p99 setup {percentile(vals, 99):.1f} ms" if vals else ""


class _Placed:
    """How many calls SIPp has placed so far: the highest call number in its -trace_msg
    file (Call-ID lt-N-...), read incrementally (its stat file is a second behind)."""

    _CALL = re.compile(rb"^Call-ID: lt-(\d+)-", re.M)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.carry = b""
        self.high = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.high
        self.offset += len(data)
        buf = self.carry + data
        cut = buf.rfind(b"\n") + 1  # a line cut by the writer waits for its end
        self.carry = buf[cut:]
        for m in self._CALL.finditer(buf, 0, cut):
            self.high = max(self.high, int(m.group(1)))
        return self.high


def _rows(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def _progress(stat_csv: Path, rtt: Path | None = None) -> str:
    """SIPp's own counters, from the last row of its -trace_stat file (cumulative)."""
    try:
        rows = stat_csv.read_text().splitlines()
    except OSError:
        return "starting"
    if len(rows) < 2:
        return "starting"
    head, last = rows[0].split(";"), rows[-1].split(";")
    col = {name: k for k, name in enumerate(head)}
    try:
        placed = int(last[col["OutgoingCall(C)"]])
        ended = int(last[col["SuccessfulCall(C)"]])
        failed = int(last[col["FailedCall(C)"]])
        up = int(last[col["CurrentCall"]])
        rate = float(last[col["CallRate(P)"]])
    except (KeyError, IndexError, ValueError):
        return "running"
    return (f"attempted {placed}  ended {ended} (completed or refused)  failed {failed}  "
            f"up {up}  rate {rate:.1f}/s{_rtt_p99(rtt)}")


class SippEngine:
    """Runs a plan with SIPp: one caller run per step, a SIPp UAS on `callee`."""

    name = "sipp"

    def __init__(self, plan: Plan, target: tuple[str, int], callee: tuple[str, int]) -> None:
        self.plan = plan
        self.target = target
        self.callee = callee
        self.work = Path(tempfile.mkdtemp(prefix="loadtest-sipp-"))

    def run(self, quiet: bool = False) -> tuple[list[Result], float, bool, dict[str, Any]]:
        attempts = self.plan.attempts
        answered = [a for a in attempts if a.expect_code == 200] or attempts
        delay_ms = round(1000 * statistics.median(a.answer_delay for a in answered))
        talk_ms = max(1, round(1000 * statistics.median(a.talk for a in answered)))
        codes = sorted({a.expect_code for a in attempts})
        (self.work / "uac.xml").write_text(uac_scenario(codes))
        # Per callee number: the median answer delay of its calls (the B-leg carries
        # nothing else of the call that placed it: the switch makes a new dialog).
        per_b: dict[str, list[float]] = {}
        for a in answered:
            if a.callee:
                per_b.setdefault(a.callee, []).append(a.answer_delay)
        delays = {b: round(1000 * statistics.median(v)) for b, v in per_b.items()}
        uas = SippUas(self.work, self.callee[1], delay_ms, delays)
        results: list[Result] = []
        interrupted = False
        t0 = time.monotonic()
        cpu = 0.0
        try:
            # One SIPp run for the whole plan, its rate steered as the plan goes (a run per
            # step would leave a gap of SIPp's start-up and last calls between steps).
            wait = t0 + attempts[0].offset - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            got, interrupted, cpu = self._run_step(0, attempts, talk_ms, t0, quiet)
            results += got
        finally:
            stop_proc(uas.proc)
            uas.log.close()
        duration = time.monotonic() - t0
        extra = {"sipp": {"answer_delay_ms": delay_ms, "talk_ms": talk_ms,
                          "answer_delay": "per callee number" if delays else "median",
                          "talk": "per call",
                          "work": str(self.work)},
                 "engine_cpu_s": round(cpu, 3),
                 "engine_cpu_ms_per_attempt": round(1000 * cpu / max(1, len(results)), 3)}
        return results, duration, interrupted, extra

    def _run_step(self, i: int, step: list[Attempt], talk_ms: int, t0: float,
                  quiet: bool) -> tuple[list[Result], bool, float]:
        offsets = [a.offset - step[0].offset for a in step]
        span = offsets[-1]
        mean = (len(step) - 1) / span if span > 0 and len(step) > 1 else 1000.0
        peak = max((planned_rate(offsets, t) for t in offsets), default=mean)
        steer = span > 1.0  # else: all at once (SIPp's rate is the plan's mean)
        rate = max(planned_rate(offsets, 0.0), 1.0) if steer else mean
        csv = self.work / f"step{i}.csv"
        # AXE: the extension rides in the Request-URI user as `X,E` (`;` splits SIPp's
        # injection fields; DESIGN takes both forms).
        csv.write_text("SEQUENTIAL\n" + "".join(
            f"{a.caller};{a.x}{',' + a.ext if a.ext else ''};{max(1, round(a.talk * 1000))}\n"
            for a in step))
        trace = self.work / f"step{i}.msg"
        host, port = self.target
        rp = 10000  # SIPp's rate is calls per period: tenths of a call per second
        cp = free_port(socket.SOCK_DGRAM)  # its remote control: `cset rate N` per tick
        args = [sipp_exe(), "-sf", str(self.work / "uac.xml"), f"{host}:{port}",
                "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
                "-mp", str(free_port(socket.SOCK_DGRAM)), "-inf", str(csv),
                "-m", str(len(step)), "-r", str(max(1, round(rate * rp / 1000))),
                "-rp", str(rp), "-d", str(talk_ms), "-l", "100000", "-nostdin",
                "-max_recv_loops", "5000", "-cid_str", "lt-%u-%p@%s",
                "-timeout", f"{int(span + max(a.talk for a in step) + 60)}s",
                "-cp", str(cp), "-trace_rtt", "-rtt_freq", "10",
                "-trace_msg", "-message_file", str(trace),
                "-trace_stat", "-stf", str(self.work / f"step{i}.stat.csv"), "-fd", "1"]
        step_t0 = time.monotonic()
        c0 = os.times()
        stopped = False
        with open(self.work / f"step{i}.out", "wb") as out:
            # Its own session: a terminal's Ctrl-C reaches only the tool, which asks
            # SIPp to stop placing calls (SIGUSR1) and lets the calls that are up end.
            proc = subprocess.Popen(args, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **own_session())
            old = signal.getsignal(signal.SIGINT)

            def on_sigint(_sig: int, _frm: Any) -> None:
                nonlocal stopped
                stopped = True
                sys.stderr.write("\nstopping SIPp: a partial report follows\n")
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR1)  # SIPp: stop placing, end the calls

            signal.signal(signal.SIGINT, on_sigint)
            ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sent_rate, next_line = rate, step_t0 + 1.0
            rtt = self.work / f"uac_{proc.pid}_rtt.csv"
            stat = self.work / f"step{i}.stat.csv"
            started: float | None = None  # when SIPp began placing (its first stat row)
            next_change, paused = 0.0, False
            placed = _Placed(trace)
            try:
                while proc.poll() is None:
                    try:
                        proc.wait(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        now = time.monotonic()
                        if started is None and _rows(stat) >= 2:
                            started = now
                        if started is not None and steer and not stopped:
                            # Place, over the next second, what the plan has placed by
                            # then and SIPp has not yet; pause SIPp (`p`) while nothing
                            # is due. SIPp counts calls afresh from each change
                            # (floor(elapsed x rate)) and applies it at its next call:
                            # at most one change a second, never below 1/s (a lower
                            # rate stalls it).
                            due = bisect.bisect_left(offsets, now - started + 1.0)
                            todo = due - placed.count()
                            if (todo <= 0) != paused:
                                paused = not paused
                                with contextlib.suppress(OSError):
                                    ctl.sendto(b"p", ("127.0.0.1", cp))
                            want = min(max(todo, 1.0), 4 * peak)
                            if (not paused and now >= next_change
                                    and abs(want - sent_rate) > 0.1 * want):
                                next_change = now + 1.0
                                with contextlib.suppress(OSError):
                                    ctl.sendto(f"cset rate {want * rp / 1000:.3f}".encode(),
                                               ("127.0.0.1", cp))
                                sent_rate = want
                        if not quiet and now >= next_line:
                            next_line += 1.0
                            cur = step[min(len(step) - 1, placed.count())].step
                            sys.stderr.write(
                                f"{cur} ({'paused' if paused else f'{sent_rate:.1f}/s'}): "
                                f"{_progress(stat, rtt)}\n")
                        if stopped and now - step_t0 > 3600:
                            proc.kill()
            finally:
                ctl.close()
                signal.signal(signal.SIGINT, old)
        c1 = os.times()
        used = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
        calls = _trace(trace)
        results = []
        base = datetime.now().timestamp() - time.monotonic()  # epoch of monotonic 0
        for n, a in enumerate(step, 1):
            if n not in calls:
                if stopped:
                    continue  # never placed
                results.append(Result(a, placed_at=a.offset, error="not placed by SIPp"))
                continue
            sent, code, got = calls[n]
            r = Result(a, placed_at=max(0.0, sent - base - t0), code=code,
                       setup_ms=(got - sent) * 1000.0 if got is not None else None)
            if code is None:
                r.error = "timeout (no final answer)"
            results.append(r)
        return results, stopped, used
