"""Recording: spool with loss, reordering, duplicates, wrap-around, SSRC change, silence
suppression and DTMF, then finish to WAV and check by Goertzel and by sample."""

from __future__ import annotations

import array
import hashlib
import io
import json
import math
import random
import struct
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from recordings.finish import (
    RenderStats,
    call_dir,
    finish_batch,
    finish_call,
    finish_pending,
    render_leg,
    spool_path,
)
from recordings.g711 import PT_PCMA, PT_PCMU, decode, encode, tone
from recordings.spool import (
    MAGIC,
    MAGIC_V3,
    CallMeta,
    SpoolBuffer,
    SpoolError,
    SpoolWriter,
    call_frames,
    read_call_spool,
    read_spool,
)
from relay.rtp.packet import RtpPacket

T0 = 1_763_800_000.0  # 2025-11-22 08:26:40 UTC
SPP = 160  # samples per 20 ms packet


@dataclass
class Sent:
    wall: float
    data: bytes


def packets(freq: float, pt: int, count: int, *, start_wall: float, seq0: int, ts0: int,
            ssrc: int, rng: random.Random, ssrc_change_at: int | None = None,
            dtmf: range = range(0)) -> list[tuple[int, Sent]]:
    """(index, packet) for a continuous tone, index i covering samples [i*160, (i+1)*160)."""
    out = []
    seq, ts, cur_ssrc = seq0, ts0, ssrc
    for i in range(count):
        if i == ssrc_change_at:
            # A new source (e.g. a transfer behind the peer): fresh SSRC, seq and ts.
            seq, ts, cur_ssrc = 1000, 123456, ssrc + 1
        if i in dtmf:
            # RFC 4733 event 1, timestamp of the event start, growing duration.
            start_ts = (ts - (i - dtmf.start) * SPP) & 0xFFFFFFFF
            pkt = RtpPacket(101, seq & 0xFFFF, start_ts, cur_ssrc, i == dtmf.start,
                            payload=bytes([1, 10, 0, (i - dtmf.start + 1) * SPP & 0xFF]))
        else:
            payload = encode(tone(freq, SPP, start=i * SPP), pt)
            pkt = RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, cur_ssrc, payload=payload)
        anchor = i == 0 or i == ssrc_change_at
        jitter = 0.0 if anchor else rng.uniform(0.0, 0.006)
        out.append((i, Sent(start_wall + i * 0.020 + jitter, bytes(pkt))))
        seq += 1
        ts += SPP
    return out


def caller_stream(rng: random.Random) -> list[Sent]:
    """3 s of 440 Hz PCMU with every impairment the finisher must survive."""
    pk = dict(packets(440, PT_PCMU, 150, start_wall=T0, seq0=65500, ts0=0xFFFFF000,
                      ssrc=0xC0FFEE, rng=rng, ssrc_change_at=130))
    order = [i for i in range(150) if i != 40 and i != 20 and not 90 <= i < 115]  # loss, DTX
    order[order.index(61)], order[order.index(60)] = 60, 61  # reordered within the window
    order.insert(order.index(70) + 3, 70)  # a duplicate
    order.insert(order.index(125) + 1, 20)  # 105 packets late: beyond the reorder window
    out = [pk[i] for i in order]
    # The duplicate and the late packet arrive when they arrive, not when they were due.
    for n in range(1, len(out)):
        if out[n].wall < out[n - 1].wall:
            out[n] = Sent(out[n - 1].wall + 0.0001, out[n].data)
    return out


def callee_stream(rng: random.Random) -> list[Sent]:
    """2 s of 1000 Hz PCMA starting 0.5 s late, with a DTMF digit at packets 50-54."""
    pk = packets(1000, PT_PCMA, 100, start_wall=T0 + 0.5, seq0=7, ts0=99, ssrc=0xBEEF, rng=rng,
                 dtmf=range(50, 55))
    return [p for _, p in pk]


def spool_call(root: Path, call_id: str, crash: bool = False) -> Path:
    rng = random.Random(4733)
    directory = call_dir(root, call_id, T0)
    directory.mkdir(parents=True)
    meta = CallMeta(call_id, T0, {"caller": {"codec": "PCMU"}, "callee": {"codec": "PCMA"}})
    (directory / "meta.json").write_text(meta.to_json())
    for leg, stream in (("caller", caller_stream(rng)), ("callee", callee_stream(rng))):
        with open(directory / f"{leg}.spool", "wb") as f:
            w = SpoolWriter(f, flush_packets=7)
            for s in stream:
                if w.append(s.data, s.wall):
                    w.flush(s.wall)
            if crash:
                w.flush()
                f.write(b"\x40\x00" + b"\x01" * 9)  # half a record: the crash hit mid-write
            else:
                w.close()
    return directory


def spool_call_v3(root: Path, call_id: str, crash: bool = False) -> Path:
    """The same call as `spool_call`, as the relay writes it now: one spool beside the
    call's folder-to-be (version 3), both legs' chunks interleaved, the metadata first
    and again when a codec is learnt; `crash` cuts the last frame short, as a `kill -9`
    mid-write would."""
    rng = random.Random(4733)
    directory = call_dir(root, call_id, T0)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = CallMeta(call_id, T0, {"caller": {"codec": None}, "callee": {"codec": None}})
    legs = (caller_stream(rng), callee_stream(rng))
    out = bytearray(MAGIC_V3 + call_frames(meta, (b"", b"")))
    meta.legs = {"caller": {"codec": "PCMU"}, "callee": {"codec": "PCMA"}}
    buffers = (SpoolBuffer(), SpoolBuffer())
    for second in range(4):
        for buf, stream in zip(buffers, legs, strict=True):
            for sent in stream:
                if second <= sent.wall - T0 < second + 1:
                    buf.add(sent.data, sent.wall)
        out += call_frames(meta if second == 0 else None, (buffers[0].take(), buffers[1].take()))
    if crash:
        out += call_frames(None, (b"\x01" * 40, b""))[:-9]  # half a frame: cut mid-write
    spool_path(directory).write_bytes(out)
    return directory


def samples(path: Path) -> tuple[array.array[int], int]:
    with wave.open(str(path), "rb") as w:
        assert (w.getsampwidth(), w.getframerate()) == (2, 8000)
        data = array.array("h", w.readframes(w.getnframes()))
        channels = w.getnchannels()
    if sys.byteorder == "big":
        data.byteswap()
    return data, channels


def goertzel(xs: array.array[int] | list[int], freq: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in xs:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / max(1, len(xs)) ** 2


def span(i: int, j: int) -> slice:
    return slice(i * SPP, j * SPP)


def expected(freq: float, pt: int, i: int, j: int) -> list[int]:
    return list(array.array("h", decode(encode(tone(freq, (j - i) * SPP, start=i * SPP), pt), pt)))


@pytest.fixture
def finished(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    directory = spool_call(tmp_path, "call-1")
    yield directory, finish_call(directory)


def test_layout_and_result(finished: tuple[Path, object], tmp_path: Path) -> None:
    directory, result = finished
    assert directory == tmp_path / "2025" / "11" / "22" / "call-1"
    files = result.files  # type: ignore[attr-defined]
    assert set(files) == {"caller", "callee", "mix"}
    for name, f in files.items():
        assert f.path == directory / f"{name}.wav"
        assert f.size == f.path.stat().st_size
        assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
        assert f.record_start_at == round(T0 * 1000)
    assert (files["caller"].duration_ms, files["callee"].duration_ms) == (3000, 2500)
    assert files["mix"].duration_ms == 3000
    assert not list(directory.glob("*.spool"))  # spools go after a successful finish
    assert json.loads((directory / "meta.json").read_text())["files"]["mix"]["duration_ms"] == 3000


def test_each_leg_holds_its_own_tone(finished: tuple[Path, object]) -> None:
    directory, _ = finished
    caller, ch = samples(directory / "caller.wav")
    callee, _ = samples(directory / "callee.wav")
    assert ch == 1
    a, b = caller[span(0, 20)], callee[span(25, 50)]
    assert goertzel(a, 440) > 1000 * goertzel(a, 1000)
    assert goertzel(b, 1000) > 1000 * goertzel(b, 440)


def test_packets_land_on_their_samples_and_gaps_are_silent(finished: tuple[Path, object]) -> None:
    directory, _ = finished
    caller, _ = samples(directory / "caller.wav")
    callee, _ = samples(directory / "callee.wav")
    # Placed by timestamp across the seq and ts wrap, reorder and duplicate.
    assert list(caller[span(0, 20)]) == expected(440, PT_PCMU, 0, 20)
    assert list(caller[span(21, 40)]) == expected(440, PT_PCMU, 21, 40)
    assert list(caller[span(41, 90)]) == expected(440, PT_PCMU, 41, 90)
    assert list(caller[span(115, 130)]) == expected(440, PT_PCMU, 115, 130)
    # After the SSRC change, re-anchored on the arrival wall clock.
    assert list(caller[span(130, 150)]) == expected(440, PT_PCMU, 130, 150)
    # Loss, the too-late packet and the silence-suppression gap are silence.
    for gap in (span(20, 21), span(40, 41), span(90, 115)):
        assert not any(caller[gap])
    # The callee's late start and its DTMF are silence, not decoded event payloads.
    assert not any(callee[span(0, 25)])
    assert not any(callee[span(25 + 50, 25 + 55)])
    assert list(callee[span(25, 75)]) == expected(1000, PT_PCMA, 0, 50)


def test_mix_is_stereo_caller_left_callee_right(finished: tuple[Path, object]) -> None:
    directory, _ = finished
    mix, channels = samples(directory / "mix.wav")
    caller, _ = samples(directory / "caller.wav")
    callee, _ = samples(directory / "callee.wav")
    assert channels == 2
    left, right = mix[0::2], mix[1::2]
    assert len(left) == len(caller) == 24000
    assert left == caller
    assert list(right[: len(callee)]) == list(callee) and not any(right[len(callee):])
    window = slice(30 * SPP, 45 * SPP)
    assert goertzel(left[window], 440) > 1000 * goertzel(left[window], 1000)
    assert goertzel(right[window], 1000) > 1000 * goertzel(right[window], 440)


def test_crash_recovery_finishes_leftover_spools(tmp_path: Path) -> None:
    directory = spool_call(tmp_path, "crashed", crash=True)
    live = spool_call(tmp_path, "live-call")
    results = finish_pending(tmp_path, skip={"live-call"})
    assert [r.call_id for r in results] == ["crashed"]
    assert results[0].files["caller"].duration_ms == 3000
    assert (directory / "mix.wav").exists() and not (directory / "caller.spool").exists()
    assert (live / "caller.spool").exists() and not (live / "mix.wav").exists()
    assert finish_pending(tmp_path, skip={"live-call"}) == []


def test_crash_recovery_finishes_a_version_3_spool_identically(tmp_path: Path) -> None:
    old = finish_call(spool_call(tmp_path / "v2", "same"))
    crashed = spool_call_v3(tmp_path / "v3", "crashed", crash=True)
    live = spool_call_v3(tmp_path / "v3", "live-call")
    results = finish_pending(tmp_path / "v3", skip={"live-call"})
    assert [r.call_id for r in results] == ["crashed"]
    for name, f in results[0].files.items():  # same audio as the per-leg spools gave
        assert f.sha256 == old.files[name].sha256
    assert not spool_path(crashed).exists() and spool_path(live).exists()
    assert not live.exists()  # no folder until it is finished
    meta = json.loads((crashed / "meta.json").read_text())
    assert meta["legs"]["callee"]["codec"] == "PCMA"  # the later metadata frame won
    assert finish_pending(tmp_path / "v3", skip={"live-call"}) == []
    # Taken from the free pool, then the crash before its header: nothing to finish.
    empty = spool_path(call_dir(tmp_path / "v3", "empty", T0))
    empty.write_bytes(b"")
    assert finish_pending(tmp_path / "v3", skip={"live-call"}) == [] and not empty.exists()


def test_version_3_reader_framing() -> None:
    meta = CallMeta("c", T0)
    buf = SpoolBuffer()
    buf.add(bytes(RtpPacket(0, 5, 800, 1, payload=b"\xff" * 160)), 1.0)
    data = MAGIC_V3 + call_frames(meta, (b"", buf.take()))
    got, (caller, callee) = read_call_spool(data)
    assert got == meta and caller == [] and [r.seq for r in callee] == [5]
    assert read_call_spool(MAGIC_V3[:2]) == (None, [[], []])  # crashed before the header
    assert read_call_spool(data[:-3])[1] == [[], []]  # the chunk's frame cut short
    with pytest.raises(SpoolError, match="unknown tag"):
        read_call_spool(MAGIC_V3 + b"\x07" + bytes(4))
    with pytest.raises(SpoolError, match="bad magic"):
        read_call_spool(MAGIC + data[5:])


def test_wav_files_match_the_wave_module(finished: tuple[Path, object]) -> None:
    directory, _ = finished
    for name in ("caller", "mix"):
        with wave.open(str(directory / f"{name}.wav"), "rb") as r:
            params, frames = r.getparams(), r.readframes(r.getnframes())
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setparams(params)
            w.writeframes(frames)
        assert out.getvalue() == (directory / f"{name}.wav").read_bytes()


def test_spool_reader_framing(tmp_path: Path) -> None:
    path = tmp_path / "x.spool"
    with open(path, "wb") as f:
        w = SpoolWriter(f, flush_packets=1000, flush_interval=1.0)
        pkt = bytes(RtpPacket(8, 65535, 7, 9, True, payload=b"\xd5" * 160))
        assert not w.append(pkt, 10.0)
        assert not w.append(b"\x80\xc8\x00\x01" + bytes(12), 10.1)  # RTCP: not spooled
        assert not w.append(b"\x80", 10.1)  # garbage: counted
        assert w.append(pkt, 11.0)  # a second later: flush is due
        w.close()
    recs = list(read_spool(path.read_bytes()))
    assert [(r.wall, r.seq, r.ts, r.ssrc, r.pt, r.marker) for r in recs] == [
        (10.0, 65535, 7, 9, 8, True), (11.0, 65535, 7, 9, 8, True)]
    assert recs[0].payload == b"\xd5" * 160 and w.invalid == 2 and w.packets == 2
    assert list(read_spool(b"")) == []
    with pytest.raises(SpoolError):
        list(read_spool(b"RIFF...."))


def test_render_stats_count_each_impairment() -> None:
    rng = random.Random(1)
    caller = [next(read_spool(_spooled(s))) for s in caller_stream(rng)]
    st = RenderStats()
    pcm = render_leg(caller, T0, st)
    assert len(pcm) == 2 * 150 * SPP
    # 150 sent - 27 never sent (loss 40, DTX 90-114) + 1 duplicate + 1 late (packet 20)
    assert (st.duplicates, st.late, st.reanchors, st.not_audio) == (1, 1, 1, 0)
    assert st.placed == 150 - 1 - 25 - 1
    # RTP loss as a receiver counts it (RFC 3550 A.3): both sources' sequence ranges
    # (130 + 20 packets) against what was placed; the late packet counts as lost.
    assert (st.expected, st.lost) == (150, 27)
    callee = [next(read_spool(_spooled(s))) for s in callee_stream(rng)]
    st2 = RenderStats()
    render_leg(callee, T0, st2)
    assert (st2.not_audio, st2.placed) == (5, 95)
    assert (st2.expected, st2.lost) == (100, 0)  # the digit's packets are not a loss


def _spooled(s: Sent) -> bytes:
    buf = io.BytesIO()
    w = SpoolWriter(buf)
    w.append(s.data, s.wall)
    w.flush()
    return buf.getvalue()


def test_spool_strips_csrc_extension_and_padding() -> None:
    pkt = RtpPacket(0, 5, 6, 7, False, [1, 2], (0xBEDE, b"\x10\x20\x30\x40"), b"\xff" * 8, 3)
    buf = io.BytesIO()
    w = SpoolWriter(buf)
    w.append(bytes(pkt), 1.0)
    w.append(bytes(pkt)[:-1] + b"\x40", 1.0)  # padding longer than the packet: invalid
    w.flush()
    (rec,) = read_spool(buf.getvalue())
    assert (rec.seq, rec.ts, rec.ssrc, rec.payload) == (5, 6, 7, b"\xff" * 8)
    assert w.invalid == 1


# --- spool format 2, the version 1 reader, and what the relay's recorder writes ---


def _v1_spool(stream: list[Sent]) -> bytes:
    """The version 1 framing, as an older relay wrote it (recordings.spool docstring)."""
    out = bytearray(b"RSPL\x01")
    for s in stream:
        rec = next(read_spool(_spooled(s)))
        body = struct.pack("<dHIIB", rec.wall, rec.seq, rec.ts, rec.ssrc,
                           rec.pt | (0x80 if rec.marker else 0)) + rec.payload
        out += struct.pack("<H", len(body)) + body
    return bytes(out)


def test_relay_spools_and_version_1_spools_finish_to_identical_files(tmp_path: Path) -> None:
    """The relay's path (monotonic arrival clock + offset, a chunk now and then) and
    the old per-record format give the same records and byte-identical WAVs."""
    offset = T0 - 1000.0  # wall minus the relay's monotonic clock
    outputs = []
    for version in (1, 2):
        rng = random.Random(4733)
        directory = call_dir(tmp_path / f"v{version}", "same-call", T0)
        directory.mkdir(parents=True)
        (directory / "meta.json").write_text(CallMeta("same-call", T0).to_json())
        for leg, stream in (("caller", caller_stream(rng)), ("callee", callee_stream(rng))):
            if version == 1:
                # The old relay's tap: wall = monotonic arrival + offset, per packet.
                data = _v1_spool([Sent((s.wall - offset) + offset, s.data) for s in stream])
            else:
                buf = SpoolBuffer(offset)
                data = MAGIC
                for n, s in enumerate(stream):
                    buf.datagrams.append(s.data)  # what the relay's tap does
                    buf.times.append(s.wall - offset)
                    if n % 37 == 0:
                        data += buf.take()
                data += buf.take()
            (directory / f"{leg}.spool").write_bytes(data)
        records = [list(read_spool((directory / f"{leg}.spool").read_bytes()))
                   for leg in ("caller", "callee")]
        result = finish_call(directory)
        outputs.append((records, {n: f.sha256 for n, f in result.files.items()}))
    assert outputs[0] == outputs[1]


def test_spool_chunks_survive_a_crash_and_reject_corruption() -> None:
    pkt = bytes(RtpPacket(0, 1, 160, 5, payload=b"\xff" * 160))
    buf = SpoolBuffer(100.0)
    buf.add(pkt, 1.5)
    buf.add(b"\x80\xc9\x00\x01" + bytes(4), 1.6)  # RTCP on the RTP port: skipped on reading
    buf.add(b"\x00garbage", 1.7)  # not RTP: skipped on reading
    first = buf.take()
    assert buf.take() == b"" and len(buf) == 0 and buf.packets == 3
    buf.add(pkt, 2.5)
    second = buf.take()
    spool = MAGIC + first + second
    assert [(r.wall, r.seq) for r in read_spool(spool)] == [(101.5, 1), (102.5, 1)]
    # A crash mid-write: the cut chunk is ignored, the ones before it are kept.
    assert [r.wall for r in read_spool(spool[:-10])] == [101.5]
    assert list(read_spool(MAGIC)) == [] and list(read_spool(MAGIC[:3])) == []
    corrupt = bytearray(MAGIC + first)
    corrupt[len(MAGIC) + 16 + 3 * 8] ^= 0x01  # the first datagram's length
    with pytest.raises(SpoolError):
        list(read_spool(bytes(corrupt)))


def test_spool_buffer_keeps_its_lists_for_the_relays_bound_appends() -> None:
    buf = SpoolBuffer()
    add_data, add_time = buf.datagrams.append, buf.times.append
    add_data(b"\x80\x00" + bytes(10))
    add_time(1.0)
    assert buf.take()
    add_data(b"\x80\x00" + bytes(10))
    add_time(2.0)
    assert len(buf) == 1  # still the same lists after take
    add_data(b"\x80\x00" + bytes(10))  # a time missing: a local error, not a bad file
    with pytest.raises(ValueError):
        buf.take()


def test_finishing_with_a_key_seals_before_the_spool_goes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With a manifest key the finishing seals each folder (no sealer process); a crash
    after the WAVs but before the seal leaves the spool, so the next start finishes
    and seals it: no finished recording is left unsealed."""
    from datetime import UTC, datetime

    import recordings.finish as finish_mod
    from recordings.manifest import MANIFEST, verify_day

    key = b"k" * 20
    first = spool_call_v3(tmp_path, "first")
    result = finish_call(first, seal=(key, T0 + 10))
    assert result.sealed and result.seal_error is None and (first / MANIFEST).exists()
    assert not spool_path(first).exists()

    crashed = spool_call_v3(tmp_path, "crashed")

    def crash(*_a: object, **_k: object) -> None:
        raise SystemExit("killed between the WAVs and the seal")

    monkeypatch.setattr(finish_mod, "seal_many", crash)
    with pytest.raises(SystemExit):
        finish_batch([crashed], seal=(key, T0 + 20))
    assert (crashed / "mix.wav").exists() and not (crashed / MANIFEST).exists()
    assert spool_path(crashed).exists()  # kept: the restart will redo it
    monkeypatch.undo()
    again = finish_pending(tmp_path, seal=(key, T0 + 30))
    assert [(r.call_id, r.sealed) for r in again] == [("crashed", True)]
    day = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%d")
    report = verify_day(tmp_path, day, (key,))
    assert report.ok and report.checked == 2 and report.unsealed == []
