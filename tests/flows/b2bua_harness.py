"""In-memory harness for the B2BUA: a Switch between a scripted caller and callee.

No sockets, no event loop: datagrams are handed over by hand (optionally dropped),
media jobs run at once on a fake backend, and time only moves with `advance`.
`transcript` records every datagram as "C->R INVITE" / "R->B 180" lines for golden
call-flow comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dialplan.policy import Policy
from relay.b2bua.callmap import CallMap, Settings
from relay.b2bua.events import CallEnded, CallRefused
from relay.bindings.model import Binding, Mode
from relay.bindings.table import BindingTable
from relay.counters import MemoryCounters
from relay.media.backend import DigitReceived, PlaybackEnded
from relay.policies import PolicyBook
from relay.rtp.session import Side
from relay.sip import SipRequest, SipResponse, build_response, parse_message

CALLER = ("192.0.2.10", 5060)
CALLEE = ("192.0.2.20", 5080)
RELAY = ("192.0.2.1", 5060)
X = "+8617055556666"
A = "+8613811112222"
B = "+8613933334444"
T0 = 1_800_000_000.0


class FakeMedia:
    """Rewrites SDP into a tag naming the side it is for; errors on demand. The relay's
    own voice is remembered: what plays (prompt, play id), digit detection, and
    `played` lists every prompt started, in order."""

    def __init__(self) -> None:
        self.fail: dict[str, BaseException] = {}  # op -> error to raise once
        self.released: list[str] = []
        self.ops: list[tuple[str, int, bytes]] = []
        self.played: list[tuple[str, int, bool]] = []  # (prompt, play id, repeat)
        self.playing: dict[str, tuple[str, int]] = {}  # call id -> (prompt, play id)
        self.detecting: dict[str, bool] = {}
        self._plays = 0

    def run(self, op: str, side: int, sdp: bytes, call_id: str, prompt: str = "",
            flag: bool = False) -> Any:
        self.ops.append((op, side, sdp))
        if op in self.fail:
            raise self.fail.pop(op)
        if op == "release":
            self.released.append(call_id)
            self.playing.pop(call_id, None)
            return None
        if op == "play":
            self._plays += 1
            self.played.append((prompt, self._plays, flag))
            self.playing[call_id] = (prompt, self._plays)
            return self._plays
        if op == "stop_play":
            self.playing.pop(call_id, None)
            return None
        if op == "detect":
            self.detecting[call_id] = flag
            return None
        if op == "answer_local":
            return (b"v=0\r\no=relay 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
                    b"t=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=x-local:caller\r\n")
        if op == "local_offer":
            return (b"v=0\r\no=relay 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
                    b"t=0 0\r\nm=audio 40002 RTP/AVP 0 101\r\na=x-local:callee\r\n")
        to = "callee" if side == 0 else "caller"
        rewritten = (b"v=0\r\no=relay 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
                     b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=x-for:" + to.encode() + b"\r\n")
        if op == "setup":
            return (f"media-{call_id}", rewritten if sdp else b"")
        return rewritten


def sdp(who: str, port: int) -> bytes:
    return (f"v=0\r\no={who} 1 1 IN IP4 198.51.100.{port % 200}\r\ns={who}\r\n"
            f"c=IN IP4 198.51.100.{port % 200}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
            ).encode()


class Harness:
    """A switch, its binding table, and what each peer received."""

    def __init__(self, policies: dict[str, Policy] | None = None, **settings: Any) -> None:
        s = Settings(host=RELAY[0], port=RELAY[1], outbound=CALLEE,
                     trunks=("192.0.2.0/24",), **settings)
        self.table = BindingTable()
        self.policies = PolicyBook()
        self.policies.replace({n: p.as_dict() for n, p in (policies or {}).items()})
        self.switch = CallMap(s, self.table, policies=self.policies)
        self.counters = MemoryCounters()
        self.policies.frequency = self.counters  # type: ignore[assignment]  # take_now
        self.scores: dict[str, int] = {}  # caller -> harassment score
        self.hook_asked: list[dict[str, Any]] = []
        self.hook_allows = True
        self.media = FakeMedia()
        self.now = T0
        self.to_caller: list[SipRequest | SipResponse] = []
        self.to_callee: list[SipRequest | SipResponse] = []
        self.raw: list[tuple[tuple[str, int], bytes]] = []
        # Where the caller's side is reached: its address, and any proxy or Contact a
        # test puts in front of it (in-dialog requests follow the route set, §12.2.1.1).
        self.caller_side: set[tuple[str, int]] = {CALLER}
        self.transcript: list[str] = []
        self.records: list[dict[str, Any]] = []
        self.events: list[Any] = []
        self.drop: Callable[[str, bytes], bool] = lambda _d, _b: False
        self._n = 0

    # -- bindings -------------------------------------------------------------------
    def bind(self, mode: str = "AXB", a: str | None = A, b: str = B, x: str = X,
             **kw: Any) -> Binding:
        self._n += 1
        binding = Binding(id=f"{self._n:016x}", mode=Mode(mode), x=x, a=a, b=b,
                          created_at=T0 - 10, **kw)
        self.table.apply(binding)
        return binding

    # -- the wire -------------------------------------------------------------------
    def deliver(self, data: bytes, source: tuple[str, int]) -> None:
        tag = "C" if source == CALLER else "B" if source == CALLEE else "?"
        self.transcript.append(f"{tag}->R {_line(data)}")
        self.switch.receive_datagram(data, source, self.now)
        self.pump()

    def pump(self) -> None:
        """Move everything the switch queued; run its media jobs; repeat until quiet."""
        sw = self.switch
        while True:
            out = sw.datagrams_to_send()
            jobs = sw.take_jobs()
            for ev in sw.take_call_events():
                self.events.append(ev)
                if isinstance(ev, (CallEnded, CallRefused)):
                    self.records.append(ev.record)
            if not out and not jobs:
                return
            for data, addr in out:
                tag = ("C" if addr in self.caller_side else "B" if addr == CALLEE
                       else str(addr))
                if self.drop(tag, data):
                    self.transcript.append(f"R->{tag} {_line(data)} (lost)")
                    continue
                self.transcript.append(f"R->{tag} {_line(data)}")
                self.raw.append((addr, data))
                msg = parse_message(data)
                (self.to_caller if addr in self.caller_side else self.to_callee).append(msg)
            for job in jobs:
                try:
                    if job.op in ("score", "hook") and job.op in self.media.fail:
                        raise self.media.fail.pop(job.op)
                    if job.op == "score":  # the adapter's score job: set by the test
                        result, error = self.scores.get(job.key, 0), None
                    elif job.op == "hook":  # the decision hook: the test's answer
                        self.hook_asked.append(job.info)
                        result, error = self.hook_allows, None
                    else:
                        result, error = self.media.run(job.op, int(job.side), job.sdp,
                                                       job.call_id, job.prompt, job.flag), None
                except Exception as exc:
                    result, error = None, exc
                sw.media_done(job, result, error, self.now)

    def digit(self, d: str, call_id: str | None = None) -> None:
        """The caller's RTP carried digit `d` (the media backend reports it)."""
        cid = call_id or next(iter(self.switch.calls))
        self.switch.media_event(DigitReceived(cid, Side.CALLER, d, self.now), self.now)
        self.pump()

    def prompt_ends(self, call_id: str | None = None) -> str:
        """The prompt playing now ran out; returns its name."""
        cid = call_id or next(iter(self.switch.calls))
        prompt, play_id = self.media.playing.pop(cid)
        self.switch.media_event(PlaybackEnded(cid, Side.CALLER, play_id, True), self.now)
        self.pump()
        return prompt

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way."""
        end = self.now + seconds
        while True:
            due = self.switch.get_timer()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self.switch.handle_timer(self.now)
            self.pump()
        self.now = end

    # -- peers ------------------------------------------------------------------------
    def caller_invite(self, *, x: str = X, caller: str = A, body: bytes | None = None,
                      call_id: str = "a-call-1@caller.example", branch: str = "z9hG4bKa1",
                      max_forwards: int = 70, source: tuple[str, int] = CALLER,
                      contact: str | None = None,
                      extra: list[tuple[str, str]] | None = None) -> SipRequest:
        req = SipRequest("INVITE", f"sip:{x}@{RELAY[0]}", [
            ("Via", f"SIP/2.0/UDP {source[0]}:{source[1]};branch={branch}"),
            ("Max-Forwards", str(max_forwards)),
            ("From", f'"Alice" <sip:{caller}@caller.example>;tag=atag1'),
            ("To", f"<sip:{x}@{RELAY[0]}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", contact or f"<sip:{caller}@{source[0]}:{source[1]}>"),
            ("User-Agent", "AliceSecretPhone"),
            ("P-Asserted-Identity", f"<sip:{caller}@caller.example>"),
            ("Diversion", f"<sip:{caller}@caller.example>"),
            ("X-Secret", "caller-secret"),
            ("Content-Type", "application/sdp"),
            *(extra or []),
        ], sdp("alice", 30000) if body is None else body)
        self.deliver(bytes(req), source)
        return req

    def last(self, side: str, kind: type | None = None, method: str | None = None,
             status: int | None = None) -> Any:
        msgs = self.to_caller if side == "C" else self.to_callee
        for m in reversed(msgs):
            if kind is not None and not isinstance(m, kind):
                continue
            if method is not None and (not isinstance(m, SipRequest) or m.method != method):
                continue
            if status is not None and (not isinstance(m, SipResponse) or m.status != status):
                continue
            return m
        raise AssertionError(f"nothing matching {method or status} sent to {side}")

    def callee_reply(self, request: SipRequest, status: int, *, body: bytes = b"",
                     tag: str = "btag1", extra: list[tuple[str, str]] | None = None) -> None:
        headers = [("Contact", f"<sip:{B}@{CALLEE[0]}:{CALLEE[1]}>"),
                   ("Server", "BobSecretSwitch"), ("X-Secret", "callee-secret"),
                   *(extra or [])]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = build_response(request, status, to_tag=tag, extra_headers=headers, body=body)
        self.deliver(bytes(resp), CALLEE)

    def caller_reply(self, request: SipRequest, status: int, *, body: bytes = b"") -> None:
        headers = [("Contact", f"<sip:{A}@{CALLER[0]}:{CALLER[1]}>")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = build_response(request, status, extra_headers=headers, body=body)
        self.deliver(bytes(resp), CALLER)

    def in_dialog(self, side: str, method: str, *, cseq: int, body: bytes = b"",
                  branch: str | None = None, content_type: str = "application/sdp",
                  extra: list[tuple[str, str]] | None = None) -> SipRequest:
        """A request from caller ("C") or callee ("B") inside its dialog with the relay."""
        if side == "C":
            ok = self.last("C", SipResponse, status=200)
            src, from_, to = CALLER, ok.headers.get("from"), ok.headers.get("to")
            call_id = ok.call_id
        else:
            inv = self.last("B", SipRequest, method="INVITE")
            ok_from = inv.headers.get("from")
            src, from_, to = CALLEE, f"<sip:{B}@{CALLEE[0]}>;tag=btag1", ok_from
            call_id = inv.call_id
        headers = [("Via", f"SIP/2.0/UDP {src[0]}:{src[1]};branch="
                           f"{branch or 'z9hG4bK' + side + method + str(cseq)}"),
                   ("Max-Forwards", "70"), ("From", from_ or ""), ("To", to or ""),
                   ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
                   ("Contact", f"<sip:peer@{src[0]}:{src[1]}>")]
        if body:
            headers.append(("Content-Type", content_type))
        headers += extra or []
        req = SipRequest(method, f"sip:{X}@{RELAY[0]}:{RELAY[1]}", headers, body)
        self.deliver(bytes(req), src)
        return req

    def caller_ack(self) -> None:
        ok = self.last("C", SipResponse, status=200)
        ack = SipRequest("ACK", f"sip:{X}@{RELAY[0]}", [
            ("Via", f"SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bKack{self._n}"),
            ("Max-Forwards", "70"), ("From", ok.headers.get("from") or ""),
            ("To", ok.headers.get("to") or ""), ("Call-ID", ok.call_id),
            ("CSeq", f"{ok.cseq.number} ACK")])
        self._n += 1
        self.deliver(bytes(ack), CALLER)


def _line(data: bytes) -> str:
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    if first.startswith("SIP/2.0 "):
        return first.split(" ")[1]
    return first.split(" ")[0]
