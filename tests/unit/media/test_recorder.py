"""The in-process relay's recorder: spool buffers on the loop, files on one IO thread."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import relay.media.recorder as recorder_mod
from recordings.finish import FREE_DIR, finish_batch, finish_call, prefill
from recordings.spool import CallMeta, read_call_spool
from relay.media.recorder import CallRecording, Recorder
from relay.rtp.packet import RtpPacket


def recording(directory: Path, call_id: str = "rec-1") -> CallRecording:
    return CallRecording(directory / "2025" / "11" / "22" / call_id,
                         CallMeta(call_id, 1_763_800_000.0, {"caller": {}, "callee": {}}),
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
    meta, (caller, _) = read_call_spool(rec.spool.read_bytes())
    assert meta is not None and meta.call_id == "rec-1"
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
    rec = CallRecording(blocked / "rec-1", CallMeta("rec-1", 1_763_800_000.0), 0.0)
    detached: list[bool] = []
    recorder = Recorder()
    recorder.start(rec, lambda: detached.append(True))
    tap = rec.tap()
    tap(0, pkt(1), 0.0)
    await asyncio.sleep(0.02)  # the next tick opens it (and fails)
    await recorder.drain()
    assert rec.failed
    await asyncio.sleep(0.3)  # the wheel notices: tap detached, counted once
    assert detached == [True] and recorder.errors == 1 and len(rec.buffers[0]) == 0
    assert not await recorder.stop(rec)
    assert recorder.errors == 1 and recorder.live == 0
    recorder.shutdown()


async def test_opens_are_batched_and_a_short_call_still_leaves_a_spool(
        tmp_path: Path, fast_wheel: None) -> None:
    recorder = Recorder()
    recs = [recording(tmp_path, f"rec-{i}") for i in range(5)]
    for rec in recs:
        recorder.start(rec, lambda: None)
    assert not any(r.spool.exists() for r in recs)  # nothing on the caller's path
    assert await recorder.stop(recs[0])  # ended before the wheel turned: close opens it
    assert recs[0].spool.exists() and not recs[0].directory.exists()
    await asyncio.sleep(0.02)  # one tick: the other four opened in one IO job
    await recorder.drain()
    assert all(r.spool.exists() for r in recs)
    result = finish_call(recs[0].directory)
    assert result.files["mix"].duration_ms == 0 and not recs[0].spool.exists()
    for rec in recs[1:]:
        assert await recorder.stop(rec)
    recorder.shutdown()


async def test_spools_come_from_the_free_pool_and_go_back_to_it(tmp_path: Path,
                                                               fast_wheel: None) -> None:
    free = tmp_path / FREE_DIR
    assert prefill(free, 3) == 3
    recorder = Recorder(free)
    recs = [recording(tmp_path, f"rec-{i}") for i in range(4)]
    for rec in recs:
        recorder.start(rec, lambda: None)
    await asyncio.sleep(0.02)
    await recorder.drain()
    assert (recorder.pool.taken, recorder.pool.created) == (3, 1)  # the 4th: pool empty
    assert not list(free.iterdir())
    for rec in recs:
        assert await recorder.stop(rec)
    results = finish_batch([r.directory for r in recs], free, fill=6)
    assert all(r.files["mix"].size == 44 for r in results)  # type: ignore[union-attr]
    assert len(list(free.iterdir())) == 6  # 4 emptied spools back, 2 created
    assert all(p.stat().st_size == 0 for p in free.iterdir())
    assert not any(r.spool.exists() for r in recs)
    recorder.shutdown()


async def test_a_day_folder_removed_under_the_recorder_is_made_again(tmp_path: Path,
                                                                   fast_wheel: None) -> None:
    import shutil

    recorder = Recorder(tmp_path / FREE_DIR)
    first = recording(tmp_path, "first")
    recorder.start(first, lambda: None)
    assert await recorder.stop(first)
    shutil.rmtree(tmp_path / "2025")  # the IO thread still believes the day exists
    second = recording(tmp_path, "second")
    recorder.start(second, lambda: None)
    assert await recorder.stop(second) and second.spool.exists()
    recorder.shutdown()
