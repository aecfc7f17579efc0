"""The AXE test tools against real SIPp and sockets (not against the relay): the digit and
tone pcaps (dtmf_pcap), and the caller and callee scenarios (axe_peers, tests/flows/sipp
uac_axe_dtmf*.xml, uac_axe_info.xml, uas_tone.xml)."""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from audio_check import amplitude
from axe_peers import (
    dtmf_caller,
    event_pts,
    fetch_wav,
    info_caller,
    is_sip,
    rtp_to,
    tone_callee,
)
from dtmf_pcap import (
    SAMPLES,
    digits,
    dominant_frequency,
    dtmf_packets,
    is_audible,
    iter_events_by_digit,
    parse_rtp,
    pcap_rtp,
    pcap_seconds,
    pcm_of,
    rms,
    telephone_events,
    write_dtmf_pcap,
    write_tone_pcap,
)
from sipp_harness import Sipp, bind, callee, caller, calls, ms, relay_args, udp_port
from sniff import sniff

_SO_TIMESTAMPNS = 35
TONES = (440.0, 697.0, 770.0, 852.0, 941.0, 1000.0, 1209.0, 1336.0, 1477.0, 2000.0)
SHIPPED = Path("/usr/share/sip-tester")


# --- the pcap itself ------------------------------------------------------------------------

def test_dtmf_pcap_is_one_rfc4733_stream() -> None:
    packets = [(t, parse_rtp(b)) for t, b in dtmf_packets("1#1", event_ms=100, gap_ms=200,
                                                           lead_ms=100, tail_ms=60)]
    rtps = [r for _, r in packets if r is not None]
    assert len(rtps) == len(packets)
    # One SSRC, sequence numbers without a gap, the RTP clock following the capture's.
    assert len({r.ssrc for r in rtps}) == 1
    assert [r.seq for r in rtps] == list(range(rtps[0].seq, rtps[0].seq + len(rtps)))
    for (t0, r0), (t1, r1) in pairwise(packets):
        assert r0 is not None and r1 is not None
        assert round((t1 - t0) * 1000) == 20  # a packet every 20 ms, none skipped here
        if r1.pt == 0 or r1.marker:
            assert r1.ts - r0.ts in (0, 160) or r0.pt == 101
    assert [r.pt for r in rtps[:5]] == [0] * 5  # 100 ms of PCMU to latch on
    assert [r.pt for r in rtps[-3:]] == [0] * 3
    events = telephone_events(r_bytes for _, r_bytes in dtmf_packets("1#1"))
    assert digits(events) == "1#1"  # the repeated 1 is a new event: a new timestamp
    groups = list(iter_events_by_digit(events))
    assert [len(g) for g in groups] == [8, 8, 8]  # 5 x 20 ms, then 3 end packets
    for g in groups:
        assert len({e.ts for e in g}) == 1
        assert [e.end for e in g] == [False] * 5 + [True] * 3
        assert [e.duration for e in g] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert groups[0][0].ts < groups[1][0].ts < groups[2][0].ts
    marked = [r for r in rtps if r.marker]
    assert [r.pt for r in marked] == [101, 101, 101]  # RFC 4733 §2.5.1.3


def test_dtmf_pcap_options(tmp_path: Path) -> None:
    bare = write_dtmf_pcap(tmp_path / "bare.pcap", "0,9", with_audio=False, pause_ms=1000)
    rtps = [parse_rtp(p) for _, p in pcap_rtp(bare)]
    assert {r.pt for r in rtps if r} == {101}
    assert digits(telephone_events(p for _, p in pcap_rtp(bare))) == "09"
    # The "," pause is time on the clock (and in the capture) even without audio packets.
    times = [t for t, _ in pcap_rtp(bare)]
    assert max(b - a for a, b in pairwise(times)) > 1.0
    other = write_dtmf_pcap(tmp_path / "pt96.pcap", "5", pt=96, event_ms=200)
    assert digits(telephone_events((p for _, p in pcap_rtp(other)), pt=96)) == "5"
    assert pcap_seconds(other) == pytest.approx(0.5 + 0.2 + 0.06 + 0.5 - 0.02, abs=0.001)
    with pytest.raises(ValueError, match="not a DTMF digit"):
        write_dtmf_pcap(tmp_path / "bad.pcap", "12x")


def test_dtmf_pcap_voice_and_audibility(tmp_path: Path) -> None:
    voiced = pcap_rtp_payloads(write_dtmf_pcap(tmp_path / "v.pcap", "7", audio_hz=440.0))
    assert digits(telephone_events(voiced)) == "7"
    xs = pcm_of(voiced)
    assert len(xs) == 50 * SAMPLES  # 500 ms before the event, 500 ms after
    assert dominant_frequency(xs, (440.0, 852.0, 1209.0, 1000.0)) == 440.0
    audio = [p for p in voiced if p[1] & 0x7F == 0]  # PT 0
    assert len(audio) == 50 and all(is_audible(p) for p in audio)
    quiet = pcap_rtp_payloads(write_dtmf_pcap(tmp_path / "q.pcap", "7"))
    assert not any(is_audible(p) for p in quiet)  # silence, and events are not audio
    assert rms(b"\xff" * 160) == 0.0
    assert not is_audible(b"\x81\xc8\x00\x06" + b"\0" * 24)  # an RTCP sender report
    assert not is_audible(b"not rtp at all")


def test_shipped_sipp_digit_pcaps_reuse_their_stream() -> None:
    """Why dtmf_pcap exists: SIPp's own per-digit pcaps, played one after the other, are
    not one stream. Each is one event cut from an old call; playing a digit twice sends
    the same timestamp and sequence numbers twice, heard as one digit."""
    five = SHIPPED / "dtmf_2833_5.pcap"
    if not five.exists():
        pytest.skip("SIPp's sample pcaps are not installed")
    played = [p for name in ("5", "5", "1")
              for p in pcap_rtp_payloads(SHIPPED / f"dtmf_2833_{name}.pcap")]
    assert digits(telephone_events(played)) == "51"  # "551" keyed, "51" heard
    seqs = [r.seq for r in map(parse_rtp, played) if r]
    assert any(b <= a for a, b in pairwise(seqs))  # goes backwards
    ends = [e for e in telephone_events(pcap_rtp_payloads(five)) if e.end]
    assert len(ends) == 3 and len({e.seq for e in ends}) == 1  # one packet sent 3 times


def pcap_rtp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of a pcap."""
    return [p for _, p in pcap_rtp(path)]


def test_tone_pcap_holds_the_tone(tmp_path: Path) -> None:
    for codec in ("PCMU", "PCMA"):
        path = write_tone_pcap(tmp_path / f"{codec}.pcap", 1000.0, 1.0, codec)
        payloads = pcap_rtp_payloads(path)
        assert len(payloads) == 50
        pt = 0 if codec == "PCMU" else 8
        xs = pcm_of(payloads, pt)
        assert dominant_frequency(xs, (440.0, 697.0, 1000.0, 1336.0, 2000.0)) == 1000.0
        assert 7000 < amplitude(xs[:800], 1000.0) < 9000


# --- played by SIPp -------------------------------------------------------------------------


@pytest.fixture
def rtp_socket() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that stamps each datagram with its kernel receive time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        yield s


def drain(sock: socket.socket) -> list[tuple[float, tuple[str, int], bytes]]:
    """(receive time, sender, payload) of every datagram queued on `sock`."""
    out: list[tuple[float, tuple[str, int], bytes]] = []
    while True:
        try:
            data, anc, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return out
        at = time.time()
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", raw[:16])
                at = sec + nsec / 1e9
        out.append((at, addr, data))


def _raw_callee(workdir: Path, port: int, rtp: socket.socket, name: str = "callee",
                *more: str) -> Sipp:
    """A SIPp callee (uas_rawmedia.xml) whose SDP points at the test's socket."""
    rtp_port = rtp.getsockname()[1]
    return callee(workdir, port, "uas_rawmedia.xml", name=name,
                  extra=["-m", "1", "-key", "rtp_port", str(rtp_port),
                         "-key", "rtcp_port", str(rtp_port + 1), *more])


def _run(uas: Sipp, make_uac: Callable[[], Sipp], timeout: float = 60) -> Sipp:
    """Start the callee, then make (so that its free ports are picked while the callee
    holds its own) and run the caller; both must succeed. Returns the caller."""
    uas.start()
    uac = make_uac().start()
    assert uac.wait(timeout) == 0, f"{uac.name}: {uac.tail()}"
    assert uas.wait(timeout) == 0, f"{uas.name}: {uas.tail()}"
    return uac


@pytest.mark.integration
def test_sipp_caller_plays_the_digits_in_order(tmp_path: Path,
                                               rtp_socket: socket.socket) -> None:
    keyed = "1005#"
    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", keyed)
    port = udp_port()
    uas = _raw_callee(tmp_path, port, rtp_socket)
    hold_ms = int(pcap_seconds(pcap) * 1000) + 500
    uac = _run(uas, lambda: dtmf_caller(tmp_path, port, pcap, wait_ms=300, hold_ms=hold_ms))
    got = drain(rtp_socket)
    payloads = [p for _, _, p in got]
    events = telephone_events(payloads)
    assert digits(events) == keyed
    assert len(events) == 8 * len(keyed)  # nothing lost, nothing doubled on loopback
    assert all(sum(e.end for e in g) == 3 for g in iter_events_by_digit(events))
    # It is SIPp's media port that sends (what a relay latches on), audio first.
    assert {addr[1] for _, addr, _ in got} == {uac.media_port}
    first = parse_rtp(payloads[0])
    assert first is not None and first.pt == 0
    assert len(got) == len(pcap_rtp(pcap))
    # SIPp keeps the capture's pacing: 20 ms apart, the whole play as long as the pcap.
    times = [t for t, _, _ in got]
    assert times[-1] - times[0] == pytest.approx(pcap_seconds(pcap), abs=0.15)
    gaps = sorted(b - a for a, b in pairwise(times))
    assert 0.015 < gaps[len(gaps) // 2] < 0.025


@pytest.mark.integration
@pytest.mark.parametrize("info_type", ["dtmf-relay", "dtmf"])
def test_sipp_caller_sends_one_info_per_digit(tmp_path: Path, rtp_socket: socket.socket,
                                              info_type: str) -> None:
    keyed = "90*#"
    port = udp_port()
    uas = _raw_callee(tmp_path, port, rtp_socket, "callee", "-aa")  # -aa: 200 to INFO
    started = time.monotonic()
    _run(uas, lambda: info_caller(tmp_path, port, keyed, info_type=info_type, wait_ms=200,
                                  gap_ms=100, hold_ms=200))
    assert time.monotonic() - started > 0.2 + 3 * 0.1 + 0.2
    infos = [m for m in uas.received() if m.startswith("INFO")]
    assert len(infos) == len(keyed)
    cseqs = [int(re.findall(r"CSeq: (\d+) INFO", m)[0]) for m in infos]
    assert cseqs == sorted(set(cseqs)) and cseqs[0] > 1
    bodies = [m.split("\n\n", 1)[1].strip() if "\n\n" in m else m.split("\r\n\r\n", 1)[1]
              for m in infos]
    for digit, msg, body in zip(keyed, infos, bodies, strict=True):
        assert f"Content-Type: application/{info_type}" in msg
        if info_type == "dtmf-relay":
            assert re.fullmatch(rf"Signal={re.escape(digit)}\s+Duration=160", body), body
        else:
            assert body == digit
    bye = next(m for m in uas.received() if m.startswith("BYE"))
    assert int(re.findall(r"CSeq: (\d+) BYE", bye)[0]) == cseqs[-1] + 1


@pytest.mark.integration
def test_sipp_callee_plays_the_tone(tmp_path: Path, rtp_socket: socket.socket) -> None:
    tone = write_tone_pcap(tmp_path / "b.pcap", 1000.0, 10.0)
    port = udp_port()
    uas = tone_callee(tmp_path, port, tone, ring_ms=300)
    rtp_port = rtp_socket.getsockname()[1]
    uac = _run(uas, lambda: caller(
        tmp_path, port, "uac_rawmedia.xml", extra=["-m", "1", "-d", "1500", "-key", "rtp_port",
                                                   str(rtp_port), "-key", "rtcp_port",
                                                   str(rtp_port + 1)]))
    ringing = next(m for m in uac.received() if m.startswith("SIP/2.0 180"))
    assert ringing
    got = drain(rtp_socket)
    xs = pcm_of(p for _, _, p in got)
    assert 1.0 < len(xs) / 8000 < 2.0  # played from the ACK until the BYE cut it
    assert dominant_frequency(xs, (440.0, 697.0, 1000.0, 1336.0, 2000.0)) == 1000.0
    assert {addr[1] for _, addr, _ in got} == {uas.media_port}


# --- the AXE checks have teeth: through today's relay -------------------------------------

@pytest.mark.integration
def test_the_wire_checks_see_digits_and_voices_through_an_axb_call(relay_factory: Any,
                                                                   tmp_path: Path) -> None:
    """A control for test_axe_calls: on an AXB call the relay passes telephone-event
    through (DESIGN.md "Media and recordings"), so the digits the AXE tests require
    never to reach B's media port must be seen there by the same checks; the voices
    are where those tests look for them (the wire both ways, the leg recordings); the
    record's times agree with the wire."""
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))
    bind(relay.base)
    keyed = "1234#"
    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", keyed, audio_hz=440.0, tail_ms=3000)
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", 1000.0, 30.0),
                      ring_ms=300).start()
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=300,
                      hold_ms=int(pcap_seconds(pcap) * 1000) - 500)
    with sniff([uac.port, uac.media_port, out, uas.media_port]) as wire:
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
    assert wire.drops == 0
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    invite_b = wire.first(lambda d: d.dst[1] == out and is_sip(d, "INVITE "))
    b_answer = wire.first(lambda d: d.src[1] == out and is_sip(d, "SIP/2.0 200", "INVITE"))
    answered = wire.first(lambda d: d.dst[1] == uac.port and is_sip(d, "SIP/2.0 200", "INVITE"))
    bye_200 = wire.first(lambda d: d.dst[1] == uac.port and is_sip(d, "SIP/2.0 200", "BYE"))
    assert invite_b and b_answer and answered and bye_200
    assert invite_b.at < b_answer.at < answered.at < bye_200.at
    to_b = [d.payload for d in rtp_to(wire, uas.media_port)]
    assert digits(telephone_events(to_b, pt=event_pts(invite))) == keyed
    heard_by_b = pcm_of(d.payload for d in rtp_to(wire, uas.media_port))
    assert dominant_frequency(heard_by_b, TONES) == 440.0
    heard_by_a = pcm_of(d.payload for d in rtp_to(wire, uac.media_port, b_answer.at))
    assert len(heard_by_a) > 8000 and dominant_frequency(heard_by_a, TONES) == 1000.0
    assert not any(is_audible(d.payload) for d in rtp_to(wire, uac.media_port,
                                                         before=invite_b.at))

    rec = calls(relay.base)[0]
    legs = rec["legs"]
    assert abs(ms(legs["callee"]["invite_at"]) - invite_b.at * 1000) < 500
    assert abs(ms(legs["caller"]["answer_at"]) - answered.at * 1000) < 500
    assert dominant_frequency(fetch_wav(relay.base, rec["id"], "callee", tmp_path / "b.wav"),
                              TONES) == 1000.0
    assert dominant_frequency(fetch_wav(relay.base, rec["id"], "caller", tmp_path / "a.wav"),
                              TONES) == 440.0
