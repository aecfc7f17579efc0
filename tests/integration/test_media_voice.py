"""The relay's own voice in the in-process backend, on real UDP sockets on 127.0.0.1.

An AXE-style call: the relay answers the caller itself, plays ringback into it,
collects RFC 4733 digits (which never reach the callee), then bridges; the caller
hears one continuous RTP stream throughout.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import statistics
import sys
import wave
from pathlib import Path

from test_rtp_relay import LOCAL, Peer, goertzel, peer, port_range, sdp, wav_samples

from recordings.g711 import PT_PCMA, PT_PCMU, decode, encode, tone
from relay.media.backend import DigitReceived, MediaBackend, MediaEvent, PlaybackEnded
from relay.media.inprocess import InProcessBackend
from relay.media.prompts import PromptSet
from relay.rtp.dtmf import DIGITS, TelephoneEvent
from relay.rtp.packet import RtpPacket, seq_diff, ts_diff
from relay.rtp.session import Side
from relay.sdp import SessionDescription

CALLER, CALLEE = Side.CALLER, Side.CALLEE


class Events:
    """The backend's listener: events in order, awaitable."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self.all: list[MediaEvent] = []

    def __call__(self, event: MediaEvent) -> None:
        self.all.append(event)
        self.queue.put_nowait(event)

    async def next(self, timeout: float = 3.0) -> MediaEvent:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def collect(p: Peer, n: int, timeout: float = 3.0) -> list[tuple[RtpPacket, float]]:
    """The next `n` RTP packets `p` receives, with their arrival times (loop clock)."""
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        data, _ = await p.recv(timeout)
        out.append((RtpPacket.parse(data), loop.time()))
    return out


def drain(p: Peer) -> list[RtpPacket]:
    out = []
    while not p.received.empty():
        out.append(RtpPacket.parse(p.received.get_nowait()[0]))
    return out


def audio(pt: int, seq: int, freq: float, ssrc: int, marker: bool = False) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, 160 * seq, ssrc, marker,
                           payload=encode(tone(freq, 160, start=160 * seq), pt)))


def press(digit: str, ts: int, seq: int, ssrc: int, pt: int = 101) -> list[bytes]:
    """An RFC 4733 key press: start (marker), two updates, the end three times."""
    ev = DIGITS.index(digit)
    events = [TelephoneEvent(ev, duration=0), TelephoneEvent(ev, duration=400),
              TelephoneEvent(ev, duration=800)] + [TelephoneEvent(ev, True, duration=1200)] * 3
    return [bytes(RtpPacket(pt, (seq + k) & 0xFFFF, ts, ssrc, k == 0, payload=bytes(e)))
            for k, e in enumerate(events)]


def pcm(packets: list[RtpPacket]) -> array.array[int]:
    data = array.array("h", b"".join(decode(p.payload, p.payload_type) for p in packets))
    if sys.byteorder == "big":
        data.byteswap()
    return data


def write_tone_wav(path: Path, freq: float, seconds: float) -> Path:
    samples = tone(freq, int(8000 * seconds))
    if sys.byteorder == "big":
        samples.byteswap()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return path


def assert_one_stream(packets: list[RtpPacket]) -> None:
    assert len({p.ssrc for p in packets}) == 1
    for a, b in itertools.pairwise(packets):
        assert seq_diff(b.sequence_number, a.sequence_number) == 1, (a, b)
        assert ts_diff(b.timestamp, a.timestamp) >= 160, (a, b)


async def test_answer_play_collect_digits_then_bridge_on_one_stream(tmp_path: Path) -> None:
    backend = InProcessBackend(bind_host=LOCAL, port_range=port_range(), recordings_dir=tmp_path)
    typed: MediaBackend = backend
    events = Events()
    typed.set_listener(events)
    caller, callee = await peer(), await peer()
    call = await typed.allocate("voice-1", record=True)
    to_caller, to_callee = call.local_ports[CALLER], call.local_ports[CALLEE]

    # The relay answers the caller itself: PCMU (offered first here is PCMA: PCMU wins
    # whenever offered), telephone-event with the caller's payload type.
    offer = sdp(caller.port, PT_PCMA).replace(b"RTP/AVP 8 101", b"RTP/AVP 8 0 101")
    await typed.offer(call, CALLER, offer + b"a=rtpmap:0 PCMU/8000\r\n")
    answer = SessionDescription.parse(await typed.answer_locally(call, CALLER))
    assert answer.media[0].port == to_caller and answer.media[0].formats == ["0", "101"]
    assert str(caller.port) not in str(answer)

    # The caller speaks (440 Hz) before and during the prompt: recorded from the start.
    for seq in range(5):
        caller.send(audio(PT_PCMU, seq, 440, 0xA1), to_caller)

    ringback = PromptSet("en").path("ringback")
    play_id = await typed.play(call, CALLER, ringback, repeat=True)
    await typed.detect_digits(call, CALLER, True)
    got = await collect(caller, 30)
    packets = [p for p, _ in got]
    assert all(p.payload_type == PT_PCMU and len(p.payload) == 160 for p in packets)
    assert_one_stream(packets)
    assert [p.marker for p in packets] == [True] + [False] * 29
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(got)]
    assert 0.015 <= statistics.median(gaps) <= 0.025  # paced at 20 ms
    assert 0.45 <= got[-1][1] - got[0][1] <= 0.9
    heard = pcm(packets)
    assert goertzel(heard, 450) > 100 * goertzel(heard, 1000)  # ringback is 450 Hz

    # The callee joins: the relay's own offer, then its ordinary answer.
    offer_b = SessionDescription.parse(await typed.local_offer(call, CALLEE))
    assert offer_b.media[0].port == to_callee and offer_b.media[0].formats == ["0", "101"]
    await typed.answer(call, CALLEE, sdp(callee.port, PT_PCMU, session_id=9))

    # While ringback plays, the callee's audio is recorded but not relayed to the caller.
    for seq in range(10):
        callee.send(audio(PT_PCMU, seq, 1000, 0xB2), to_callee)
    # The caller's audio still reaches the callee; its digits do not.
    caller.send(audio(PT_PCMU, 5, 440, 0xA1), to_caller)
    assert RtpPacket.parse((await callee.recv())[0]).ssrc == 0xA1
    ts = 160 * 6
    for k, digit in enumerate("12#"):
        for data in press(digit, ts + 2000 * k, 6 + 10 * k, 0xA1):
            caller.send(data, to_caller)
            await asyncio.sleep(0.005)
    digits = [await events.next() for _ in range(3)]
    assert all(isinstance(e, DigitReceived) for e in digits)
    assert [(e.call_id, e.side, e.digit) for e in digits if isinstance(e, DigitReceived)] == [
        ("voice-1", CALLER, "1"), ("voice-1", CALLER, "2"), ("voice-1", CALLER, "#")]
    await asyncio.sleep(0.1)
    assert callee.received.empty()  # not one telephone-event packet crossed
    ringing = drain(caller)
    assert ringing and {p.ssrc for p in ringing} == {packets[0].ssrc}  # only the relay's
    assert_one_stream(packets + ringing)

    # Bridged: ringback stops, the callee's audio reaches the caller on the same stream.
    await typed.stop_play(call, CALLER)
    assert await events.next() == PlaybackEnded("voice-1", CALLER, play_id, False)
    last = drain(caller)
    for seq in range(20, 30):
        callee.send(audio(PT_PCMU, seq, 1000, 0xB2), to_callee)
    bridged = [p for p, _ in await collect(caller, 10)]
    before = packets + ringing + last
    assert_one_stream(before + bridged)
    assert bridged[0].marker and not any(p.marker for p in bridged[1:])
    assert [p.payload for p in bridged] == [encode(tone(1000, 160, start=160 * s), PT_PCMU)
                                            for s in range(20, 30)]
    assert ts_diff(bridged[1].timestamp, bridged[0].timestamp) == 160

    # A short prompt to the end, then relayed audio again, still one stream.
    beep = write_tone_wav(tmp_path / "beep.wav", 1000, 0.1)
    beep_id = await typed.play(call, CALLER, beep)
    beeped = [p for p, _ in await collect(caller, 5)]
    assert beeped[0].marker and [p.payload_type for p in beeped] == [PT_PCMU] * 5
    assert await events.next() == PlaybackEnded("voice-1", CALLER, beep_id, True)
    callee.send(audio(PT_PCMU, 40, 1000, 0xB2), to_callee)
    (after,) = [p for p, _ in await collect(caller, 1)]
    assert after.marker
    assert_one_stream(before + bridged + beeped + [after])

    result = await typed.release(call)
    assert result is not None
    caller_wav = wav_samples(result.files["caller"].path)
    # The IVR phase is in the caller's recording: its 440 Hz from before the prompt on.
    assert len(caller_wav) >= 6 * 160 and goertzel(caller_wav, 440) > 100 * goertzel(
        caller_wav, 1000)
    callee_wav = wav_samples(result.files["callee"].path)
    # What the callee said during ringback was recorded though the caller never heard it.
    assert len(callee_wav) >= 10 * 160 and goertzel(callee_wav, 1000) > 100 * goertzel(
        callee_wav, 440)
    assert not [e for e in events.all if isinstance(e, DigitReceived)][3:]
    await backend.close()
    for p in (caller, callee):
        assert p.transport is not None
        p.transport.close()


async def test_release_while_playing_ends_the_play_and_pcma_only_is_answered_pcma(
        tmp_path: Path) -> None:
    backend = InProcessBackend(bind_host=LOCAL, port_range=port_range())
    events = Events()
    backend.set_listener(events)
    caller = await peer()
    call = await backend.allocate("voice-2", record=False)
    await backend.offer(call, CALLER, sdp(caller.port, PT_PCMA))
    answer = SessionDescription.parse(await backend.answer_locally(call, CALLER))
    assert answer.media[0].formats == ["8", "101"]
    play_id = await backend.play(call, CALLER, PromptSet("en").path("enter_extension"))
    first = [p for p, _ in await collect(caller, 3)]
    assert [p.payload_type for p in first] == [PT_PCMA] * 3
    assert await backend.release(call) is None
    assert await events.next() == PlaybackEnded("voice-2", CALLER, play_id, False)
    await asyncio.sleep(0.1)
    drain(caller)
    await asyncio.sleep(0.1)
    assert caller.received.empty()  # nothing plays after release
    assert backend.playout is not None and len(backend.playout) == 0
    await backend.stop_play(call, CALLER)  # a no-op after release
    await backend.close()
    assert caller.transport is not None
    caller.transport.close()


async def test_a_new_play_replaces_the_old_and_digits_pass_unless_detected(
        tmp_path: Path) -> None:
    backend = InProcessBackend(bind_host=LOCAL, port_range=port_range())
    events = Events()
    backend.set_listener(events)
    caller, callee = await peer(), await peer()
    call = await backend.allocate("voice-3", record=False)
    to_caller = call.local_ports[CALLER]
    await backend.offer(call, CALLER, sdp(caller.port, PT_PCMU))
    await backend.answer(call, CALLEE, sdp(callee.port, PT_PCMU))
    # An ordinary relayed call: the very same bytes both ways (the zero-copy path).
    up = audio(PT_PCMU, 1, 440, 0xA1)
    caller.send(up, to_caller)
    assert (await callee.recv())[0] == up
    first = await backend.play(call, CALLEE, PromptSet("en").path("ringback"), repeat=True)
    second = await backend.play(call, CALLEE, PromptSet("en").path("goodbye"))
    assert await events.next() == PlaybackEnded("voice-3", CALLEE, first, False)
    prompt = [p for p, _ in await collect(callee, 3)]
    await backend.stop_play(call, CALLEE)
    assert await events.next() == PlaybackEnded("voice-3", CALLEE, second, False)
    await asyncio.sleep(0.05)
    prompt += drain(callee)

    # Without detect_digits the caller's digits reach the callee, in the relay's stream
    # toward it now (one SSRC, numbers continuing after the prompt's).
    for data in press("5", 99_000, 50, 0xA1):
        caller.send(data, to_caller)
    passed = [p for p, _ in await collect(callee, 6)]
    assert [p.payload_type for p in passed] == [101] * 6
    assert_one_stream(prompt + passed[:1])
    # One event: every packet carries its start timestamp (RFC 4733 §2.5.1.2).
    assert {p.timestamp for p in passed} == {passed[0].timestamp}
    assert [seq_diff(p.sequence_number, prompt[-1].sequence_number) for p in passed] == [
        1, 2, 3, 4, 5, 6]
    assert passed[0].marker and TelephoneEvent.parse(passed[-1].payload).end

    # With it, they stop at the relay and are reported once; off again, they pass.
    await backend.detect_digits(call, CALLER, True)
    for data in press("9", 101_000, 60, 0xA1):
        caller.send(data, to_caller)
    got = await events.next()
    assert isinstance(got, DigitReceived) and got.digit == "9" and got.side == CALLER
    await asyncio.sleep(0.1)
    assert callee.received.empty()
    await backend.detect_digits(call, CALLER, False)
    for data in press("0", 103_000, 70, 0xA1):
        caller.send(data, to_caller)
    assert len(await collect(callee, 6)) == 6
    assert events.queue.empty()
    await backend.release(call)
    await backend.close()
    for p in (caller, callee):
        assert p.transport is not None
        p.transport.close()


async def test_one_timer_paces_every_call_that_plays(tmp_path: Path) -> None:
    backend = InProcessBackend(bind_host=LOCAL, port_range=port_range())
    phones = [await peer() for _ in range(4)]
    calls = []
    for k, phone in enumerate(phones):
        call = await backend.allocate(f"voice-4-{k}", record=False)
        await backend.offer(call, CALLER, sdp(phone.port, PT_PCMU))
        await backend.answer_locally(call, CALLER)
        calls.append(call)
    ringback = PromptSet("en").path("ringback")
    for call in calls:
        await backend.play(call, CALLER, ringback, repeat=True)
    clock = backend.playout
    assert clock is not None and len(clock) == 4
    before = clock.ticks
    heard = [await collect(phone, 15) for phone in phones]
    ticks = clock.ticks - before
    # Four calls, 15 frames each, and about 15 ticks: one timer, not one per call.
    assert 12 <= ticks <= 22
    for got in heard:
        assert_one_stream([p for p, _ in got])
    # The phones sent nothing for 300 ms, but the relay spoke: no call is idle.
    assert backend.idle_calls(0.2) == []
    for call in calls:
        await backend.release(call)
    assert len(clock) == 0
    await asyncio.sleep(0.05)
    idle = clock.ticks
    await asyncio.sleep(0.1)
    assert clock.ticks == idle  # nothing plays: the timer is off
    await backend.close()
    for phone in phones:
        assert phone.transport is not None
        phone.transport.close()
