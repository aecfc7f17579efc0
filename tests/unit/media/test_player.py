"""The relay's own outgoing stream: prompt frames, relayed packets, pacing (relay/rtp/player.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.rtp.packet import RtpPacket, seq_diff, ts_diff
from relay.rtp.player import FRAME_BYTES, OutboundStream, Pacer, Player


def test_player_cuts_20ms_frames_and_pads_the_last_with_silence() -> None:
    audio = bytes(range(200)) * 2  # 400 bytes: two full frames and 80 bytes
    p = Player(audio, 0)
    frames = [p.next_frame() for _ in range(3)]
    assert [len(f or b"") for f in frames] == [160, 160, 160]
    assert frames[2] == audio[320:] + b"\xff" * 80  # µ-law silence
    assert p.done and p.next_frame() is None
    a = Player(b"\x00" * 10, 8)
    assert a.next_frame() == b"\x00" * 10 + b"\xd5" * 150  # A-law silence


def test_a_repeating_player_loops_forever() -> None:
    p = Player(b"\x01" * 160 + b"\x02" * 160, 0, repeat=True)
    frames = [p.next_frame() for _ in range(5)]
    assert [f[0] if f else None for f in frames] == [1, 2, 1, 2, 1]
    assert not p.done


def prompt(stream: OutboundStream, n: int, now: float) -> list[RtpPacket]:
    """`n` prompt frames, one per 20 ms tick from `now`."""
    stream.start_prompt()
    out = [RtpPacket.parse(stream.frame(0, bytes([k]) * FRAME_BYTES, now + 0.02 * k))
           for k in range(n)]
    stream.stop_prompt()
    return out


def relayed(stream: OutboundStream, seqs: list[int], now: float, *, ssrc: int = 0xBEEF,
            ts0: int = 123_456) -> list[RtpPacket | None]:
    """The other side's packets (its own numbering) as the stream sends them on."""
    out = []
    for k, seq in enumerate(seqs):
        pkt = RtpPacket(0, seq & 0xFFFF, (ts0 + 160 * (seq - seqs[0])) & 0xFFFFFFFF, ssrc,
                        payload=b"\x7f" * FRAME_BYTES)
        data = stream.relay(bytes(pkt), now + 0.02 * k)
        out.append(RtpPacket.parse(data) if data is not None else None)
    return out


def assert_continuous(packets: list[RtpPacket], ssrc: int) -> None:
    for a, b in itertools.pairwise(packets):
        assert seq_diff(b.sequence_number, a.sequence_number) == 1, (a, b)
        assert ts_diff(b.timestamp, a.timestamp) >= FRAME_BYTES, (a, b)
    assert {p.ssrc for p in packets} == {ssrc}


@pytest.mark.parametrize(("seq0", "ts0"), [(1000, 50_000), (65530, 0xFFFFFE00)])
def test_one_stream_across_prompt_relayed_audio_and_prompt(seq0: int, ts0: int) -> None:
    s = OutboundStream(0xCAFE, seq0, ts0, now=0.0)
    first = prompt(s, 3, now=0.0)
    assert [p.sequence_number for p in first] == [seq0 & 0xFFFF, (seq0 + 1) & 0xFFFF,
                                                   (seq0 + 2) & 0xFFFF]
    assert first[0].timestamp == ts0 and first[1].timestamp == (ts0 + 160) & 0xFFFFFFFF
    # The other side talks after the prompt, 100 ms after its last frame.
    talk = relayed(s, list(range(40, 45)), now=0.14)
    assert all(p is not None for p in talk)
    talk_pkts = [p for p in talk if p is not None]
    # Its timestamps continue the clock: 100 ms (800 units) after the prompt's last frame.
    assert ts_diff(talk_pkts[0].timestamp, first[-1].timestamp) == 800
    second = prompt(s, 2, now=0.4)
    again = relayed(s, list(range(50, 52)), now=0.5)
    every = first + talk_pkts + second + [p for p in again if p is not None]
    assert_continuous(every, 0xCAFE)
    markers = [p.marker for p in every]
    assert markers == [True, False, False, True, False, False, False, False,
                       True, False, True, False]
    assert all(p.payload_type == 0 for p in every)
    assert talk_pkts[0].payload == b"\x7f" * FRAME_BYTES  # only the header is rewritten


def test_the_sequence_wraps_inside_a_relayed_spurt() -> None:
    s = OutboundStream(7, 65534, 0, now=0.0)
    prompt(s, 1, now=0.0)
    out = relayed(s, [10, 11, 12, 13], now=0.02)
    assert [p.sequence_number for p in out if p] == [65535, 0, 1, 2]


def test_nothing_is_relayed_while_a_prompt_plays() -> None:
    s = OutboundStream(7, 1, 0, now=0.0)
    s.start_prompt()
    s.frame(0, bytes(160), 0.0)
    assert relayed(s, [1, 2, 3], now=0.02) == [None, None, None]
    assert s.skipped == 3 and s.relayed == 0
    s.stop_prompt()
    out = relayed(s, [4, 5], now=0.1)
    assert [p.sequence_number for p in out if p] == [2, 3] and out[0] and out[0].marker


def test_relayed_loss_and_reordering_show_through_and_stale_packets_are_dropped() -> None:
    s = OutboundStream(7, 100, 0, now=0.0)
    prompt(s, 2, now=0.0)  # seq 100, 101
    out = relayed(s, [20, 22, 21, 19, 23], now=0.1)  # 21 late, 19 from before the spurt
    seqs = [p.sequence_number if p else None for p in out]
    assert seqs == [102, 104, 103, None, 105]
    ts = [p.timestamp if p else None for p in out]
    assert ts[1] is not None and ts[0] is not None and ts_diff(ts[1], ts[0]) == 320
    # The next prompt continues after the highest number sent, not the last one.
    nxt = prompt(s, 1, now=0.3)
    assert nxt[0].sequence_number == 106 and nxt[0].marker


def test_a_new_source_starts_a_new_spurt() -> None:
    s = OutboundStream(7, 1, 0, now=0.0)
    prompt(s, 1, now=0.0)
    a = relayed(s, [500, 501], now=0.02, ssrc=1)
    b = relayed(s, [9000, 9001], now=0.06, ssrc=2, ts0=42)
    pkts = [p for p in a + b if p]
    assert [p.sequence_number for p in pkts] == [2, 3, 4, 5]
    assert [p.marker for p in pkts] == [True, False, True, False]
    assert_continuous(pkts, 7)


def test_datagrams_that_are_not_rtp_are_not_relayed() -> None:
    s = OutboundStream(7, 1, 0, now=0.0)
    assert s.relay(b"\x80\x00\x00", 0.0) is None  # short
    assert s.relay(b"\x40" + bytes(171), 0.0) is None  # version 1
    assert s.relay(bytes.fromhex("80c90001000000aa") + bytes(4), 0.0) is None  # an RR
    assert s.skipped == 3 and s.relayed == 0


def test_pacer_keeps_an_absolute_20ms_schedule() -> None:
    p = Pacer(10.0)
    assert p.due(9.999) == 0
    assert p.due(10.0) == 1 and p.deadline == pytest.approx(10.02)
    assert p.due(10.021) == 1 and p.deadline == pytest.approx(10.04)
    assert p.due(10.085) == 3 and p.deadline == pytest.approx(10.1)  # the loop was late
    assert p.due(11.0) == 5 and p.deadline == pytest.approx(11.02)  # too late: restart


@given(st.lists(st.binary(max_size=30), max_size=20))
def test_relaying_garbage_never_raises_nor_steps_back(datagrams: list[bytes]) -> None:
    s = OutboundStream(7, 1, 0, now=0.0)
    prompt(s, 1, now=0.0)
    sent = []
    for k, d in enumerate(datagrams):
        out = s.relay(d, 0.02 * (k + 1))
        if out is not None:
            assert len(out) == len(d)
            sent.append(int.from_bytes(out[2:4], "big"))
    nxt = prompt(s, 1, now=1.0)[0]
    assert all(seq_diff(nxt.sequence_number, seq) > 0 for seq in sent)
