"""Issue 4 end to end through `relay serve`: neither peer ever receives a packet from the
other's address.

SIPp does the signalling only (uac_rawmedia.xml and uas_rawmedia.xml); each party's media
is this test's own UDP sockets (RTP and RTCP), whose ports the SDP advertises, so the
test sees the source address of every datagram that reaches either party. Both parties
talk at once, a stranger sprays all four relay ports in the middle of the call, and then:
each party heard the other, every datagram it got came from the relay port that faces
it, the SDP it got names nothing of the other side, and no stranger packet got through.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import A, B, Sipp, X, bind, callee, caller, relay_args, udp_port

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

LOCAL = "127.0.0.1"
PACKETS = 50  # RTP packets each party sends, one per 20 ms tick
RTCP_EVERY = 10  # an RTCP compound every 10th tick: 5 per party
STRANGER_FROM, STRANGER_PER_PORT = 20, 5  # the stranger starts at tick 20, 5 per relay port
HOLD_MS = 6000  # how long the caller holds the call after the ACK: the talk takes ~1.5 s
TAG = re.compile(rb"(caller|callee|stranger)-(rtp|rtcp)-(\d{4})")
PCMU_SILENCE = b"\xff"


@dataclass(frozen=True)
class MediaAddress:
    """Where an SDP asks for RTP and RTCP."""

    ip: str
    rtp: int
    rtcp: int


@dataclass(frozen=True)
class Datagram:
    """One datagram a test socket received."""

    sender: str  # whose tag it carries: caller, callee, stranger, or "?" (none)
    kind: str  # rtp or rtcp, from the tag
    seq: int
    source: tuple[str, int]
    at: str  # the receiving socket: "rtp" or "rtcp"


@dataclass
class Party:
    """A phone made of two plain UDP sockets on loopback: RTP and RTCP."""

    name: str
    ssrc: int
    rtp: socket.socket = field(init=False)
    rtcp: socket.socket = field(init=False)
    got: list[Datagram] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rtp = _udp_socket()
        self.rtcp = _udp_socket()

    @property
    def ports(self) -> tuple[int, int]:
        return self.rtp.getsockname()[1], self.rtcp.getsockname()[1]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def _udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    s.setblocking(False)
    return s


def rtp_packet(name: str, ssrc: int, seq: int) -> bytes:
    """RFC 3550 §5.1 header (V=2, PT 0 PCMU, marker on the first), then 20 ms of PCMU
    silence whose first bytes name the sender and the sequence number."""
    header = struct.pack("!BBHII", 0x80, 0x80 if seq == 0 else 0, seq, seq * 160, ssrc)
    tag = f"{name}-rtp-{seq:04d}".encode()
    return header + tag + PCMU_SILENCE * (160 - len(tag))


def rtcp_packet(name: str, ssrc: int, seq: int) -> bytes:
    """An RFC 3550 compound: an empty receiver report (§6.4.2), then an APP packet
    (§6.7) whose data names the sender."""
    rr = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
    data = f"{name}-rtcp-{seq:04d}".encode()
    data += b"\0" * (-len(data) % 4)
    app = struct.pack("!BBHI4s", 0x80, 204, (12 + len(data)) // 4 - 1, ssrc, b"PRIV") + data
    return rr + app


def sdp_body(message: str) -> str:
    parts = re.split(r"\r?\n\r?\n", message, maxsplit=1)
    return parts[1] if len(parts) == 2 else ""


def media_address(sdp: str) -> MediaAddress:
    """The audio stream's address in `sdp` (c=, m=audio, a=rtcp or RTP + 1, RFC 3605)."""
    lines = [ln.strip() for ln in sdp.splitlines() if ln.strip()]
    ip = port = rtcp = None
    in_audio = False
    for ln in lines:
        if ln.startswith("m="):
            in_audio = ln.startswith("m=audio ") and port is None
            if in_audio:
                port = int(ln.split()[1])
        elif ln.startswith("c=") and (in_audio or ip is None):
            ip = ln.split()[2]
        elif in_audio and ln.startswith("a=rtcp:"):
            rtcp = int(ln[len("a=rtcp:"):].split()[0])
    assert ip is not None and port, f"no audio address in SDP:\n{sdp}"
    return MediaAddress(ip, port, rtcp if rtcp is not None else port + 1)


def wait_for_sdp(peer: Sipp, first_line: str, deadline: float) -> str:
    """The SDP of the first message `peer` received that starts with `first_line`
    (SIPp flushes its message trace after each message)."""
    while time.monotonic() < deadline:
        for msg in peer.received():
            if msg.startswith(first_line) and "application/sdp" in msg.lower():
                body = sdp_body(msg)
                if "m=audio" in body:
                    return body
        assert peer.proc is not None
        if peer.proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"{peer.name} got no {first_line!r} with SDP: {peer.tail()}")


def drain(sel: selectors.BaseSelector, timeout: float,
          stranger_got: list[tuple[bytes, tuple[str, int]]]) -> None:
    """Read every datagram ready within `timeout` into its owner's list."""
    for key, _ in sel.select(timeout):
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        owner, at = key.data
        while True:
            try:
                data, source = sock.recvfrom(2048)
            except BlockingIOError:
                break
            if owner is None:
                stranger_got.append((data, source))
                continue
            m = TAG.search(data)
            sender, kind, seq = ((m.group(1).decode(), m.group(2).decode(), int(m.group(3)))
                                 if m else ("?", "?", -1))
            owner.got.append(Datagram(sender, kind, seq, (source[0], source[1]), at))


def test_neither_party_sees_the_others_media_address(relay_factory: Any,
                                                     tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)

    calling, called = Party("caller", 0x0CA11E12), Party("callee", 0x0CA11EE5)
    stranger = _udp_socket()
    sel = selectors.DefaultSelector()
    uac = uas = None
    try:
        for p in (calling, called):
            sel.register(p.rtp, selectors.EVENT_READ, (p, "rtp"))
            sel.register(p.rtcp, selectors.EVENT_READ, (p, "rtcp"))
        sel.register(stranger, selectors.EVENT_READ, (None, "rtp"))

        uas = callee(tmp_path, out, "uas_rawmedia.xml", number=B, extra=[
            "-m", "1", "-key", "rtp_port", str(called.ports[0]),
            "-key", "rtcp_port", str(called.ports[1])])
        uac = caller(tmp_path, relay.sip_port, "uac_rawmedia.xml", number=A, x=X, extra=[
            "-m", "1", "-d", str(HOLD_MS), "-key", "rtp_port", str(calling.ports[0]),
            "-key", "rtcp_port", str(calling.ports[1])])
        uas.start()
        time.sleep(0.2)
        uac.start()

        # Where the relay told each party to send: the 200 OK's SDP (caller side), the
        # INVITE's SDP (callee side).
        deadline = time.monotonic() + 15
        to_caller_sdp = wait_for_sdp(uac, "SIP/2.0 200", deadline)
        to_callee_sdp = wait_for_sdp(uas, "INVITE ", deadline)
        facing_caller, facing_callee = media_address(to_caller_sdp), media_address(to_callee_sdp)
        relay_ports = {facing_caller.rtp, facing_caller.rtcp, facing_callee.rtp,
                       facing_callee.rtcp}
        assert len(relay_ports) == 4, (facing_caller, facing_callee)
        assert not relay_ports & {*calling.ports, *called.ports}

        # Both talk at once, 20 ms apart. The stranger joins at tick 20: each relay socket
        # queues datagrams in order, so both parties have latched by then (before its
        # latch, the relay accepts the first source from the SDP's IP, DESIGN.md; on
        # loopback the stranger shares that IP).
        targets = {calling.name: facing_caller, called.name: facing_callee}
        spray = [(facing_caller.ip, facing_caller.rtp), (facing_caller.ip, facing_caller.rtcp),
                 (facing_callee.ip, facing_callee.rtp),
                 (facing_callee.ip, facing_callee.rtcp)] * STRANGER_PER_PORT
        stranger_got: list[tuple[bytes, tuple[str, int]]] = []
        t0 = time.monotonic()
        talk_started = t0
        for tick in range(PACKETS):
            for p in (calling, called):
                to = targets[p.name]
                p.rtp.sendto(rtp_packet(p.name, p.ssrc, tick), (to.ip, to.rtp))
                if tick % RTCP_EVERY == 0:
                    p.rtcp.sendto(rtcp_packet(p.name, p.ssrc, tick), (to.ip, to.rtcp))
            if tick >= STRANGER_FROM and spray:
                ip, port = spray.pop()
                is_rtcp = port in (facing_caller.rtcp, facing_callee.rtcp)
                stranger.sendto((rtcp_packet if is_rtcp else rtp_packet)(
                    "stranger", 0x5EC12E7, tick), (ip, port))
            next_tick = t0 + (tick + 1) * 0.020
            while (left := next_tick - time.monotonic()) > 0:
                drain(sel, left, stranger_got)
        assert not spray, "the stranger did not send everything"
        rtcp_sent = len(range(0, PACKETS, RTCP_EVERY))
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            if all(sum(d.sender not in ("?", p.name) for d in p.got) >= PACKETS + rtcp_sent
                   for p in (calling, called)):
                # Everything expected is in; give stray forwards a moment to show up.
                settle = min(settle, time.monotonic() + 0.3)
            drain(sel, 0.05, stranger_got)
        talk_seconds = time.monotonic() - talk_started
        assert uac.proc is not None and uac.proc.poll() is None, (
            f"the call ended before the talk did ({talk_seconds:.1f} s); raise HOLD_MS")

        # 1. Each party heard the other, also after the stranger started.
        for me, other in ((calling, called), (called, calling)):
            heard = {d.seq for d in me.got if d.sender == other.name and d.kind == "rtp"}
            late = {s for s in heard if s >= STRANGER_FROM}
            rtcp = {d.seq for d in me.got if d.sender == other.name and d.kind == "rtcp"}
            log.info("%s got %d datagrams: RTP %d/%d and RTCP %d/%d from %s, %d from the "
                     "stranger (talk took %.2f s)", me.name, len(me.got), len(heard), PACKETS,
                     len(rtcp), rtcp_sent, other.name,
                     sum(d.sender == "stranger" for d in me.got), talk_seconds)
            assert len(heard) >= 0.8 * PACKETS, (me.name, sorted(heard))
            assert len(late) >= 0.8 * (PACKETS - STRANGER_FROM), (me.name, sorted(late))
            assert len(rtcp) >= 0.8 * rtcp_sent, (me.name, sorted(rtcp))
            # Nothing but the other party's packets: no echo, no stranger, no garbage;
            # its RTP on the RTP socket, its RTCP on the RTCP socket.
            assert {d.sender for d in me.got} == {other.name}, (
                me.name, sorted({d.sender for d in me.got}))
            assert all(d.kind == d.at for d in me.got), (me.name, me.got)

        # 2. Every datagram came from the relay port facing the receiver (RTP on RTP,
        # RTCP on RTCP), never from the other party's ports.
        for me, other, facing in ((calling, called, facing_caller),
                                  (called, calling, facing_callee)):
            want = {"rtp": (facing.ip, facing.rtp), "rtcp": (facing.ip, facing.rtcp)}
            theirs = {(LOCAL, port) for port in other.ports}
            for d in me.got:
                assert d.source not in theirs, (me.name, d)
                assert d.source == want[d.at], (me.name, d, want)

        # 3. No stranger packet was forwarded, and nothing was sent to the stranger.
        assert stranger_got == []

        # 4. Neither SDP names the other side's media ports or SIP port.
        for sdp, other, other_sip in ((to_caller_sdp, called, uas.port),
                                      (to_callee_sdp, calling, uac.port)):
            for port in (*other.ports, other_sip):
                assert not re.search(rf"\b{port}\b", sdp), (port, sdp)

        rc = uac.wait(30)
        assert rc == 0, f"caller rc={rc} {uac.tail()}"
        rc = uas.wait(30)
        assert rc == 0, f"callee rc={rc} {uas.tail()}"

        # Nothing of the callee's SIP address reached the caller, nor the reverse.
        for msg in uac.received():
            assert f":{uas.port}" not in msg, msg
        for msg in uas.received():
            assert f":{uac.port}" not in msg, msg
    finally:
        for peer in (uac, uas):
            if peer is not None:
                peer.stop()
        sel.close()
        stranger.close()
        calling.close()
        called.close()
