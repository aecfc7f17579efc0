"""The rtpengine backend's own voice against a real rtpengine (userspace, loopback).

Plain UDP sockets stand in for the caller and the callee; everything is checked on
the wire: the prompt's RTP, the RFC 4733 packets that must not cross, the ports.
"""

from __future__ import annotations

import array
import asyncio
import socket
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import free_port
from test_rtp_relay import LOCAL, Peer, goertzel, peer, sdp, wav_samples

from recordings.g711 import PT_PCMU, decode, encode, tone
from relay.media.backend import DigitReceived, MediaBackend, MediaEvent, PlaybackEnded
from relay.media.rtpengine import RtpengineBackend
from relay.media.rtpengine_daemon import RtpengineDaemon
from relay.rtp.packet import RtpPacket
from relay.rtp.session import Side
from relay.sdp import SessionDescription

needs_rtpengine = pytest.mark.skipif(not RtpengineDaemon.available(),
                                reason="rtpengine not installed (apt-get install rtpengine-daemon)")
PT_EVENT = 101
CALLER_SSRC, CALLEE_SSRC = 0xAAAA, 0xBBBB


def offer_sdp(port: int) -> bytes:
    """A caller offering PCMA first, then PCMU, G.722 and telephone-event."""
    lines = ["v=0", f"o=phone 7 1 IN IP4 {LOCAL}", "s=phone", f"c=IN IP4 {LOCAL}", "t=0 0",
             f"m=audio {port} RTP/AVP 8 0 9 {PT_EVENT}", "a=rtpmap:8 PCMA/8000",
             "a=rtpmap:0 PCMU/8000", "a=rtpmap:9 G722/8000",
             f"a=rtpmap:{PT_EVENT} telephone-event/8000", f"a=fmtp:{PT_EVENT} 0-16",
             "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def digit_packets(event: int, seq: int, ts: int, ssrc: int) -> Iterator[bytes]:
    """One RFC 4733 digit: three updates, then the end packet three times (§2.5.1.4)."""
    for i in range(6):
        end = i >= 3
        duration = 800 if end else 160 * (i + 1)
        payload = bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
        # §2.5.1.3: one timestamp for the whole event; the marker on its first packet.
        yield bytes(RtpPacket(PT_EVENT, seq + i, ts, ssrc, marker=i == 0, payload=payload))


def write_tone(path: Path, freq: float, seconds: float) -> Path:
    """A prompt: 8 kHz mono 16-bit PCM."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone(freq, int(8000 * seconds)).tobytes())
    return path


async def drain(p: Peer, quiet: float = 0.3) -> list[tuple[RtpPacket, tuple[str, int]]]:
    """Everything `p` receives until it has been quiet for `quiet` seconds."""
    out = []
    try:
        while True:
            data, src = await p.recv(quiet)
            out.append((RtpPacket.parse(data), src))
    except TimeoutError:
        return out


async def collect(p: Peer, seconds: float) -> list[tuple[RtpPacket, tuple[str, int]]]:
    """Everything `p` receives in the next `seconds` (for streams that do not pause)."""
    out = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            data, src = await p.recv(left)
        except TimeoutError:
            break
        out.append((RtpPacket.parse(data), src))
    return out


async def send_audio(src: Peer, port: int, ssrc: int, freq: float, n: int,
                     start: int = 0) -> None:
    for i in range(start, start + n):
        pkt = RtpPacket(PT_PCMU, i, 160 * i, ssrc,
                        payload=encode(tone(freq, 160, start=160 * i), PT_PCMU))
        src.send(bytes(pkt), port)
        await asyncio.sleep(0.02)


async def send_digit(src: Peer, port: int, event: int, seq: int) -> None:
    for data in digit_packets(event, seq, 160 * seq, CALLER_SSRC):
        src.send(data, port)
        await asyncio.sleep(0.02)


class Events:
    """The backend's listener: keeps events and wakes waiters."""

    def __init__(self) -> None:
        self.seen: list[MediaEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: MediaEvent) -> None:
        self.seen.append(event)
        self.changed.set()

    async def wait_for(self, cond: type, count: int = 1, timeout: float = 3.0) -> list[MediaEvent]:
        async def loop() -> list[MediaEvent]:
            while len(found := [e for e in self.seen if isinstance(e, cond)]) < count:
                self.changed.clear()
                await self.changed.wait()
            return found
        return await asyncio.wait_for(loop(), timeout)

    def digits(self) -> list[DigitReceived]:
        return [e for e in self.seen if isinstance(e, DigitReceived)]


@pytest.fixture
async def voice(tmp_path: Path) -> AsyncIterator[tuple[RtpengineBackend, Events]]:
    base = min(free_port(socket.SOCK_DGRAM), 64000) & ~1
    dtmf = (LOCAL, free_port(socket.SOCK_DGRAM))
    daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 100),
                             log_path=tmp_path / "rtpengine.log", dtmf_log_dest=dtmf)
    await daemon.start()
    backend = RtpengineBackend(daemon.ng_addr, dtmf_addr=dtmf)
    events = Events()
    typed: MediaBackend = backend  # the B2BUA sees only the protocol
    typed.set_listener(events)
    await backend.start()
    yield backend, events
    await backend.close()
    daemon.stop()


@needs_rtpengine
async def test_answer_locally_prompt_digits_then_bridge(
        voice: tuple[RtpengineBackend, Events], tmp_path: Path) -> None:
    backend, events = voice
    caller, callee = await peer(), await peer()
    call = await backend.allocate("voice-1", record=False)
    await backend.offer(call, Side.CALLER, offer_sdp(caller.port))

    # The relay answers the caller itself: PCMU (preferred over the PCMA listed first)
    # and the caller's telephone-event, at rtpengine's port, nothing of the caller's.
    answer = SessionDescription.parse(await backend.answer_locally(call, Side.CALLER))
    to_caller = call.local_ports[Side.CALLER]
    assert answer.media[0].port == to_caller and answer.media[0].formats == ["0", "101"]
    assert answer.media[0].fmtp == {"101": "0-16"}
    assert answer.origin.username == "-" and str(caller.port) not in str(answer)

    # A prompt into the caller: PCMU RTP from rtpengine's port that decodes to the tone.
    prompt = write_tone(tmp_path / "prompt.wav", 440, 0.6)
    play_id = await backend.play(call, Side.CALLER, prompt)
    got = await drain(caller)
    assert len(got) >= 25 and {src for _, src in got} == {(LOCAL, to_caller)}
    assert {p.payload_type for p, _ in got} == {PT_PCMU}
    pcm = array.array("h", b"".join(decode(p.payload, PT_PCMU) for p, _ in got[2:22]))
    assert goertzel(pcm, 440) > 100 * goertzel(pcm, 1000)
    (ended,) = await events.wait_for(PlaybackEnded)
    assert ended == PlaybackEnded("voice-1", Side.CALLER, play_id, True)

    # Digits before any callee exists: reported once each (rtpengine dedups the ends).
    await backend.detect_digits(call, Side.CALLER, True)
    for n, event in enumerate((1, 11)):  # "1", "#"
        await send_digit(caller, to_caller, event, 100 + 10 * n)
    await events.wait_for(DigitReceived, 2)
    await asyncio.sleep(0.3)  # a late duplicate would land here
    assert [(d.side, d.digit) for d in events.digits()] == [(Side.CALLER, "1"),
                                                           (Side.CALLER, "#")]

    # Then the callee: offered only the settled codec at rtpengine's port; its answer
    # leaves the caller on the port of the local answer, and audio flows both ways.
    offer = SessionDescription.parse(await backend.local_offer(call, Side.CALLEE))
    to_callee = call.local_ports[Side.CALLEE]
    assert offer.media[0].port == to_callee and offer.media[0].formats == ["0", "101"]
    assert str(caller.port) not in str(offer) and b"=phone" not in bytes(offer)
    # Early media from one address, then the final answer from another: A never gets
    # another answer, so its port must not move (rtpengine keys it on B's address).
    early = await peer()
    await backend.answer(call, Side.CALLEE, sdp(early.port, PT_PCMU, session_id=9))
    assert call.local_ports[Side.CALLER] == to_caller
    await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU, session_id=9))
    assert call.local_ports[Side.CALLER] == to_caller
    await asyncio.gather(send_audio(caller, to_caller, CALLER_SSRC, 440, 10),
                         send_audio(callee, to_callee, CALLEE_SSRC, 1000, 10))
    at_callee, at_caller = await drain(callee), await drain(caller)
    assert [p.ssrc for p, _ in at_callee] == [CALLER_SSRC] * 10
    assert {src for _, src in at_callee} == {(LOCAL, to_callee)}
    assert [p.ssrc for p, _ in at_caller] == [CALLEE_SSRC] * 10
    assert {src for _, src in at_caller} == {(LOCAL, to_caller)}  # symmetric

    # Detection still on: the digit is reported and no telephone-event reaches B.
    await send_digit(caller, to_caller, 5, 300)
    await send_audio(caller, to_caller, CALLER_SSRC, 440, 3, start=310)
    await events.wait_for(DigitReceived, 3)
    at_callee = await drain(callee)
    assert [p.payload_type for p, _ in at_callee] == [PT_PCMU] * 3
    assert events.digits()[-1].digit == "5"

    # Detection off: the digit crosses to B as RFC 4733 and is not reported.
    await backend.detect_digits(call, Side.CALLER, False)
    await send_digit(caller, to_caller, 7, 400)
    at_callee = await drain(callee)
    assert [p.payload_type for p, _ in at_callee] == [PT_EVENT] * 6
    assert len(events.digits()) == 3
    await backend.release(call)


@needs_rtpengine
async def test_prompt_replaces_and_stops_and_keeps_the_other_side_out(
        voice: tuple[RtpengineBackend, Events], tmp_path: Path) -> None:
    backend, events = voice
    caller, callee = await peer(), await peer()
    call = await backend.allocate("voice-2", record=False)
    await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
    await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU))
    to_caller, to_callee = call.local_ports[Side.CALLER], call.local_ports[Side.CALLEE]
    await backend.stop_play(call, Side.CALLER)  # nothing plays: no-op, no event
    assert events.seen == []

    first = await backend.play(call, Side.CALLER, write_tone(tmp_path / "a.wav", 440, 5))
    second = await backend.play(call, Side.CALLER, write_tone(tmp_path / "b.wav", 660, 0.2),
                                repeat=True)
    assert events.seen == [PlaybackEnded("voice-2", Side.CALLER, first, False)]
    # While the prompt plays into A, B's audio does not reach A (but A's reaches B).
    _, _, at_caller = await asyncio.gather(
        send_audio(callee, to_callee, CALLEE_SSRC, 1000, 10),
        send_audio(caller, to_caller, CALLER_SSRC, 440, 10), collect(caller, 0.5))
    assert len(at_caller) >= 20 and {p.ssrc for p, _ in at_caller}.isdisjoint({CALLEE_SSRC})
    pcm = array.array("h", b"".join(decode(p.payload, PT_PCMU) for p, _ in at_caller[-20:]))
    assert goertzel(pcm, 660) > 100 * goertzel(pcm, 440)  # the second prompt, repeating
    assert [p.ssrc for p, _ in await drain(callee, 0.1)] == [CALLER_SSRC] * 10
    await asyncio.sleep(0.3)  # the 0.2 s prompt repeats: no PlaybackEnded
    assert len(events.seen) == 1

    await backend.stop_play(call, Side.CALLER)
    assert events.seen[-1] == PlaybackEnded("voice-2", Side.CALLER, second, False)
    await drain(caller, 0.2)  # the player's last queued packets
    await send_audio(callee, to_callee, CALLEE_SSRC, 1000, 5, start=20)
    assert [p.ssrc for p, _ in await drain(caller)] == [CALLEE_SSRC] * 5  # relaying resumed
    await backend.release(call)
    await asyncio.sleep(0.1)
    assert len(events.seen) == 2


@needs_rtpengine
async def test_play_dtmf_injects_events_toward_one_side(tmp_path: Path) -> None:
    """`play_dtmf` (rtpengine only): needs `inject_dtmf` and media from the other side."""
    base = min(free_port(socket.SOCK_DGRAM), 64000) & ~1
    daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 100),
                             log_path=tmp_path / "rtpengine.log")
    await daemon.start()
    backend = RtpengineBackend(daemon.ng_addr, inject_dtmf=True)
    try:
        caller, callee = await peer(), await peer()
        call = await backend.allocate("voice-3", record=False)
        await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
        await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU))
        to_callee = call.local_ports[Side.CALLEE]
        with pytest.raises(ValueError):
            await backend.play_dtmf(call, Side.CALLER, "55")
        sending = asyncio.create_task(send_audio(callee, to_callee, CALLEE_SSRC, 1000, 40))
        await asyncio.sleep(0.2)
        await backend.play_dtmf(call, Side.CALLER, "#")
        got = await collect(caller, 0.8)
        await sending
        events = [p.payload for p, _ in got if p.payload_type == PT_EVENT]
        assert events and {e[0] for e in events} == {11}
        assert any(e[1] & 0x80 for e in events)  # an end packet (RFC 4733 §2.5.1.4)
    finally:
        await backend.close()
        daemon.stop()


@needs_rtpengine
async def test_locally_answered_call_is_recorded(tmp_path: Path) -> None:
    """What the caller says before the callee exists (blocked toward the placeholder)
    is still in caller.wav; the call record is the usual one."""
    base = min(free_port(socket.SOCK_DGRAM), 64000) & ~1
    pcaps = tmp_path / "rtpengine"
    pcaps.mkdir()
    daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 100),
                             recording_dir=pcaps, log_path=tmp_path / "rtpengine.log")
    await daemon.start()
    backend = RtpengineBackend(daemon.ng_addr, recordings_dir=tmp_path / "rec")
    try:
        caller, callee = await peer(), await peer()
        call = await backend.allocate("voice-4", record=True)
        await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
        await backend.answer_locally(call, Side.CALLER)
        to_caller = call.local_ports[Side.CALLER]
        await send_audio(caller, to_caller, CALLER_SSRC, 440, 25)
        await backend.local_offer(call, Side.CALLEE)
        await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU))
        to_callee = call.local_ports[Side.CALLEE]
        await asyncio.gather(send_audio(caller, to_caller, CALLER_SSRC, 440, 25, start=25),
                             send_audio(callee, to_callee, CALLEE_SSRC, 1000, 25))
        assert len(await drain(callee)) == 25  # only what A said after B answered
        result = await backend.release(call)
    finally:
        await backend.close()
        daemon.stop()
    assert result is not None and set(result.files) == {"caller", "callee", "mix"}
    caller_pcm = wav_samples(result.directory / "caller.wav")
    callee_pcm = wav_samples(result.directory / "callee.wav")
    assert len(caller_pcm) >= 160 * 49
    assert goertzel(caller_pcm[:1600], 440) > 10 * goertzel(caller_pcm[:1600], 1000)
    assert goertzel(callee_pcm[-1600:], 1000) > 10 * goertzel(callee_pcm[-1600:], 440)
