"""Recording for the in-process relay: spool buffers on the loop, file work on one thread.

Per recorded call, each leg has a `SpoolBuffer`; the relay's hot path only appends
the datagram and its arrival time to it (the session's tap). Nothing is parsed or
written per packet. A wheel on the event loop frames each leg's buffer into one
chunk about once a second (calls are spread over the wheel's slots, so the work of
a thousand calls does not land in one loop iteration) and hands the chunks to a
single IO thread, which also opens and closes the files: one thread keeps every
call's open, writes and close in order without locks, and allocation never waits
for the disk. A write failure stops that call's recording (the relay goes on) and
is counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from recordings.spool import MAGIC, CallMeta, SpoolBuffer

__all__ = ["LEG_NAMES", "CallRecording", "Recorder"]

log = logging.getLogger(__name__)

#: Spool file names, indexed by side (0 caller, 1 callee), as the finisher expects.
LEG_NAMES = ("caller", "callee")
#: The wheel: one slot every SLOT seconds, a call's buffers framed once per turn.
SLOT = 0.04
SLOTS = 25


class CallRecording:
    """One call's spools: buffers (loop side) and files (IO-thread side)."""

    __slots__ = ("buffers", "directory", "failed", "files", "meta", "slot")

    def __init__(self, directory: Path, meta: CallMeta, clock_offset: float) -> None:
        """`clock_offset` is wall time (epoch s) minus the loop's clock, fixed at allocation."""
        self.directory = directory
        self.meta = meta
        self.buffers = (SpoolBuffer(clock_offset), SpoolBuffer(clock_offset))
        self.files: list[BinaryIO] = []  # opened by the IO thread
        self.failed = False  # set by either thread; the loop acts on it
        self.slot = 0

    def tap(self) -> Callable[[int, bytes, float], None]:
        """The session tap: two appends to the side's buffer per accepted packet."""
        (d0, t0), (d1, t1) = ((b.datagrams.append, b.times.append) for b in self.buffers)

        def tap(side: int, data: bytes, now: float) -> None:
            if side:
                d1(data)
                t1(now)
            else:
                d0(data)
                t0(now)

        return tap

    def take(self) -> tuple[bytes, bytes]:
        """Both legs' buffered datagrams framed as chunks (loop side)."""
        return self.buffers[0].take(), self.buffers[1].take()

    # --- IO thread ---

    def open(self) -> None:
        """Create the folder, meta.json and the two spools (IO thread)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "meta.json").write_text(self.meta.to_json())
            for name in LEG_NAMES:
                f: BinaryIO = open(self.directory / f"{name}.spool", "wb",  # noqa: SIM115
                                   buffering=0)
                self.files.append(f)
                f.write(MAGIC)
        except OSError:
            self._fail("opening")

    def write(self, chunks: tuple[bytes, bytes]) -> None:
        """Append one chunk per leg to the spools (IO thread)."""
        if self.failed or not self.files:
            return
        try:
            for f, chunk in zip(self.files, chunks, strict=True):
                if chunk:
                    f.write(chunk)
        except OSError:
            self._fail("writing")

    def close(self, chunks: tuple[bytes, bytes]) -> bool:
        """Write the last chunks, close the spools, write the final meta.json (IO thread).

        False if the recording failed at any point (nothing to finish).
        """
        self.write(chunks)
        for f in self.files:
            try:
                f.close()
            except OSError:
                self._fail("closing")
        self.files = []
        if not self.failed:
            try:
                (self.directory / "meta.json").write_text(self.meta.to_json())
            except OSError:
                self._fail("closing")
        return not self.failed

    def _fail(self, doing: str) -> None:
        if not self.failed:
            log.warning("recording stopped for call %s: %s the spools failed",
                        self.meta.call_id, doing, exc_info=True)
        self.failed = True


class Recorder:
    """The spool wheel and the IO thread of one backend."""

    def __init__(self) -> None:
        """Nothing starts until the first recording."""
        self._io: ThreadPoolExecutor | None = None
        self._slots: list[set[CallRecording]] = [set() for _ in range(SLOTS)]
        self._next_slot = 0
        self._timer: asyncio.TimerHandle | None = None
        self._turn = 0
        self.live = 0
        self.errors = 0  # recordings stopped by an IO failure
        self._on_failure: dict[CallRecording, Callable[[], None]] = {}

    def _executor(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        return self._io

    def start(self, rec: CallRecording, on_failure: Callable[[], None]) -> None:
        """Open `rec`'s files (in the background) and put it on the wheel.

        `on_failure` runs on the loop when its IO fails (detach the tap).
        """
        loop = asyncio.get_running_loop()
        self._executor().submit(rec.open)
        rec.slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % SLOTS
        self._slots[rec.slot].add(rec)
        self._on_failure[rec] = on_failure
        self.live += 1
        if self._timer is None:
            self._timer = loop.call_later(SLOT, self._tick)

    def _tick(self) -> None:
        """Frame the buffers of one slot's calls and queue their writes."""
        self._turn = turn = (self._turn + 1) % SLOTS
        batch = []
        for rec in list(self._slots[turn]):
            if rec.failed:
                self._drop(rec)
                continue
            chunks = rec.take()
            if chunks[0] or chunks[1]:
                batch.append((rec, chunks))
        if batch:
            self._executor().submit(_write_batch, batch)
        self._timer = (asyncio.get_running_loop().call_later(SLOT, self._tick)
                       if self.live else None)

    def _drop(self, rec: CallRecording) -> None:
        """A failed recording: off the wheel, tap detached, counted once."""
        self._slots[rec.slot].discard(rec)
        callback = self._on_failure.pop(rec, None)
        if callback is not None:
            self.live -= 1
            self.errors += 1
            callback()
        for buf in rec.buffers:
            buf.take()

    async def stop(self, rec: CallRecording) -> bool:
        """Take `rec` off the wheel, write what is left and close it; False if it failed.

        Call once per recording (the backend's release guards that).
        """
        live = self._on_failure.pop(rec, None) is not None
        if live:
            self._slots[rec.slot].discard(rec)
            self.live -= 1
        chunks = rec.take()
        future: Future[bool] = self._executor().submit(rec.close, chunks)
        ok = await asyncio.wrap_future(future)
        if not ok and live:
            self.errors += 1  # (a recording dropped from the wheel was counted then)
        return ok

    async def drain(self) -> None:
        """Wait until the IO thread has done everything queued so far (tests, benchmarks)."""
        if self._io is not None:
            await asyncio.wrap_future(self._io.submit(int))

    def shutdown(self) -> None:
        """Stop the wheel and the thread (after the last `stop`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None


def _write_batch(batch: list[tuple[CallRecording, tuple[bytes, bytes]]]) -> None:
    for rec, chunks in batch:
        try:
            rec.write(chunks)
        except Exception:  # a bug, not the disk: still only this call's recording stops
            log.exception("spool write of call %s failed", rec.meta.call_id)
            rec.failed = True

