"""The in-process relay's recorder: spool buffers on the loop, files on one IO thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import relay.media.recorder as recorder_mod
from recordings.finish import finish_call
from recordings.spool import CallMeta, read_spool
from relay.media.recorder import CallRecording, Recorder
from relay.rtp.packet import RtpPacket


def recording(directory: Path, call_id: str = "rec-1") -> CallRecording:
    return CallRecording(directory / call_id, CallMeta(call_id, 1_763_800_000.0,
                                                       {"caller": {}, "callee": {}}),
                         clock_offset=1_763_800_000.0)


def pkt(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq, 160 * seq, 7, payload=b"\xff" * 160))


@pytest.fixture
def fast_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_mod, "SLOT", 0.005)  # a turn of the wheel in 0.125 s


async def test_the_wheel_writes_chunks_while_the_call_lasts(tmp_path: Path,
                                                          fast_wheel: None) -> None:
    rec = recording(tmp_path)
    recorder = Recorder()
    recorder.start(rec, lambda: None)
    tap = rec.tap()
    for seq in range(10):
        tap(seq % 2, pkt(seq), 0.02 * seq)
    await asyncio.sleep(0.3)  # more than a turn
    await recorder.drain()
    caller = list(read_spool((rec.directory / "caller.spool").read_bytes()))
    assert [r.seq for r in caller] == [0, 2, 4, 6, 8]  # on disk before the call ended
    assert caller[1].wall == 1_763_800_000.0 + 0.04
    tap(0, pkt(10), 0.2)
    assert await recorder.stop(rec)
    assert recorder.live == 0 and recorder.errors == 0
    result = finish_call(rec.directory)
    assert result.files["caller"].duration_ms == 220 and result.files["callee"].duration_ms == 200
    recorder.shutdown()


async def test_an_io_failure_stops_the_recording_not_the_call(tmp_path: Path,
                                                             fast_wheel: None) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the folder should go")
    rec = recording(blocked)
    detached: list[bool] = []
    recorder = Recorder()
    recorder.start(rec, lambda: detached.append(True))
    tap = rec.tap()
    tap(0, pkt(1), 0.0)
    await recorder.drain()
    assert rec.failed
    await asyncio.sleep(0.3)  # the wheel notices: tap detached, counted once
    assert detached == [True] and recorder.errors == 1 and len(rec.buffers[0]) == 0
    assert not await recorder.stop(rec)
    assert recorder.errors == 1 and recorder.live == 0
    recorder.shutdown()
