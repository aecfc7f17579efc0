"""B2BUA core micro-benchmark: CPU per bridged call inside :class:`CallMap`, no sockets.

    python -m loadtest.switch_bench [--calls 2000] [--rounds 5] [--profile]

Drives complete AXB calls through one CallMap in memory: the caller's INVITE (with SDP),
the callee's 100/180/200, the caller's ACK and BYE, the callee's 200 to BYE, and the
2xx's ACK to the callee; media jobs are answered at once with a canned SDP (the media
backend is measured by `loadtest media`). Peers are string templates filled from the
relay's own messages with a few regexes, and only the time spent inside the CallMap is
counted (thread CPU time, best of several rounds, so other load on the machine counts
less): the figure is the relay's signalling cost per call. At 1,000 calls/s on one core
the budget is 1,000 us for this, the socket calls and the media setup together.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import re
import sys
import time
from typing import Any

from relay.b2bua.callmap import CallMap, Settings
from relay.bindings.model import Binding, Mode
from relay.bindings.table import BindingTable

CALLER = ("127.0.0.1", 5061)
CALLEE = ("127.0.0.1", 5080)
X, A, B = "+8617055556666", "+8613811112222", "+8613933334444"
SDP = (b"v=0\r\no=alice 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
       b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\n"
       b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
RELAY_SDP = SDP.replace(b"alice", b"relay").replace(b"6000", b"40000")

INVITE = (
    "INVITE sip:{x}@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1\r\n"
    'From: "Caller" <sip:{a}@127.0.0.1:5061>;tag={n}CallerTag\r\n'
    "To: <sip:{x}@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-caller@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:{a}@127.0.0.1:5061>\r\n"
    "Max-Forwards: 70\r\n"
    "User-Agent: CallerAgent/1.0\r\n"
    "P-Asserted-Identity: <sip:{a}@127.0.0.1>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n")
IN_DIALOG = (
    "{method} sip:{x}@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-{cseq}{method}\r\n"
    'From: "Caller" <sip:{a}@127.0.0.1:5061>;tag={n}CallerTag\r\n'
    "To: {to}\r\n"
    "Call-ID: {n}-caller@127.0.0.1\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Contact: <sip:{a}@127.0.0.1:5061>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n")
RESPONSE = (
    "SIP/2.0 {status}\r\n"
    "{via}\r\n"
    "From: {from_}\r\n"
    "To: {to}{tag}\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: {cseq}\r\n"
    "Contact: <sip:{b}@127.0.0.1:5080>\r\n"
    "{ctype}"
    "Content-Length: {length}\r\n\r\n")
_H = {name: re.compile(rf"^{name}: ?(.*?)\r$", re.M | re.I)
      for name in ("Via", "From", "To", "Call-ID", "CSeq")}


def _header(msg: str, name: str) -> str:
    m = _H[name].search(msg)
    assert m is not None, (name, msg)
    return m.group(1)


class Driver:
    def __init__(self) -> None:
        table = BindingTable()
        table.apply(Binding(id="00000000000000aa", mode=Mode.AXB, x=X, a=A, b=B,
                            created_at=time.time() - 10))
        self.switch = CallMap(Settings(host="127.0.0.1", port=5060, outbound=CALLEE,
                                      trunks=("127.0.0.0/8",)), table)
        self.inside = 0.0  # seconds spent in the CallMap
        self.to_caller: list[str] = []
        self.to_callee: list[str] = []

    def feed(self, data: bytes, source: tuple[str, int], now: float) -> None:
        sw = self.switch
        t0 = time.thread_time()
        sw.receive_datagram(data, source, now)
        out = self._pump(now)
        self.inside += time.thread_time() - t0
        for payload, addr in out:
            (self.to_caller if addr == CALLER else self.to_callee).append(
                payload.decode())

    def _pump(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        sw = self.switch
        sent: list[tuple[bytes, tuple[str, int]]] = []
        while True:
            sent += sw.datagrams_to_send()
            jobs = sw.take_jobs()
            sw.take_call_events()
            if not jobs:
                return sent
            for job in jobs:
                result: Any = None
                if job.op == "setup":
                    result = (object(), RELAY_SDP)
                elif job.op != "release":
                    result = RELAY_SDP
                sw.media_done(job, result, None, now)

    def reply(self, request: str, status: str, now: float, sdp: bytes = b"") -> None:
        tag = "" if status.startswith("100") else ";tag=callee-tag"
        ctype = "Content-Type: application/sdp\r\n" if sdp else ""
        vias = "\r\n".join(f"Via: {v}" for v in re.findall(r"^Via: ?(.*?)\r$", request,
                                                            re.M | re.I))
        head = RESPONSE.format(status=status, via=vias, from_=_header(request, "From"),
                               to=_header(request, "To"), tag=tag,
                               call_id=_header(request, "Call-ID"),
                               cseq=_header(request, "CSeq"), b=B, ctype=ctype,
                               length=len(sdp))
        self.feed(head.encode() + sdp, CALLEE, now)

    def call(self, n: int, now: float) -> None:
        self.feed(INVITE.format(x=X, a=A, n=n, length=len(SDP)).encode() + SDP, CALLER, now)
        invite = self.to_callee.pop()
        self.reply(invite, "100 Trying", now)
        self.reply(invite, "180 Ringing", now)
        self.reply(invite, "200 OK", now, RELAY_SDP)
        ok = self.to_caller[-1]
        assert ok.startswith("SIP/2.0 200"), ok
        to = _header(ok, "To")
        self.feed(IN_DIALOG.format(method="ACK", x=X, a=A, n=n, cseq=1, to=to).encode(),
                  CALLER, now)
        self.feed(IN_DIALOG.format(method="BYE", x=X, a=A, n=n, cseq=2, to=to).encode(),
                  CALLER, now + 1.0)
        bye = self.to_callee.pop()
        assert bye.startswith("BYE "), bye
        self.reply(bye, "200 OK", now + 1.0)
        assert self.to_caller[-1].startswith("SIP/2.0 200"), self.to_caller[-1]
        self.to_caller.clear()
        self.to_callee.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loadtest.switch_bench")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile the CallMap calls")
    a = ap.parse_args(argv)
    d = Driver()
    gc.freeze()  # as `relay serve` does ([sip] gc_threshold, relay.io.voice._tune_gc)
    gc.set_threshold(50_000, 50, 1000)
    now = time.time()
    for n in range(200):  # warm up
        d.call(n, now)
    prof = cProfile.Profile() if a.profile else None
    best = float("inf")
    n = 200
    for _ in range(1 if prof else a.rounds):  # best of several: other load only adds
        d.inside = 0.0
        if prof is not None:
            prof.enable()
        for _ in range(a.calls):
            d.call(n, now + n * 0.001)
            n += 1
        if prof is not None:
            prof.disable()
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(35)
        best = min(best, d.inside / a.calls * 1e6)
    sys.stdout.write(f"CallMap CPU per bridged call: {best:.0f} us, best of {a.rounds} "
                     f"({1e6 / best:.0f} calls/s of one core for signalling alone)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
