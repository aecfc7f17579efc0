"""Recording for the in-process relay: spool buffers on the loop, file work on one thread.

Per recorded call, each leg has a `SpoolBuffer`; the relay's hot path only appends
the datagram and its arrival time to it (the session's tap). Nothing is parsed or
written per packet. A wheel on the event loop frames each call's buffers into one
write about once a second (calls are spread over the wheel's slots, so the work of
a thousand calls does not land in one loop iteration) and hands the writes to a
single IO thread, which also opens and closes the files: one thread keeps every
call's open, writes and close in order without locks, and allocation never waits
for the disk. A write failure stops that call's recording (the relay goes on) and
is counted.

Starting a recording costs the loop nothing but two buffers: the call's one spool
file (`<day>/<call_id>.spool`, version 3: both legs and the metadata, see
`recordings.spool`) is created by the IO thread in the next turn of the wheel,
together with every other call started in the same 40 ms (one hand-off for all of
them, not one per call). No folder per call: the day folder is made once a day, and
the call's folder by the finisher, in its own process. A crash then loses
what a crash lost before: the data of the last second, including the first 40 ms
of a call whose file was not open yet.

Finishing (spool to WAV files) is CPU work; `Finisher` batches the calls that ended
within `FINISH_BATCH` seconds into one job of an executor, preferably a process pool
(`finisher_pool`), so that it neither holds this process's GIL against the event
loop nor costs one round trip per call.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from recordings.fileio import CLOEXEC, CREATE_FLAGS, write_all
from recordings.finish import RecordingResult, finish_batch, spool_path
from recordings.spool import MAGIC_V3, CallMeta, SpoolBuffer, call_frames

__all__ = ["LEG_NAMES", "CallRecording", "Finisher", "FreeSpools", "Recorder", "finisher_pool"]

log = logging.getLogger(__name__)

#: Spool leg names, indexed by side (0 caller, 1 callee), as the finisher expects.
LEG_NAMES = ("caller", "callee")
#: The wheel: one slot every SLOT seconds, a call's buffers framed once per turn.
SLOT = 0.04
SLOTS = 25
#: Calls whose recording ended within this many seconds are finished in one job.
FINISH_BATCH = 0.05
#: After finding the free spool pool empty, create files for this long before looking again.
_POOL_RETRY = 0.5


class FreeSpools:
    """Emptied spool files to rename into place instead of creating new ones (IO thread).

    See recordings.finish.FREE_DIR: on some filesystems a create costs 20 times a
    rename. Names are listed a directory at a time; a name another relay process took
    first is skipped.
    """

    def __init__(self, directory: Path | None) -> None:
        """`directory` None: always create."""
        self.directory = directory
        self._names: list[str] = []
        self._empty_until = 0.0
        self.taken = 0
        self.created = 0

    def open(self, dest: Path) -> int:
        """An open, empty file at `dest` (taken from the pool when it can be)."""
        if self.directory is not None:
            while self._names or self._refill():
                name = self._names.pop()
                try:
                    os.rename(self.directory / name, dest)
                except FileNotFoundError:
                    continue  # another relay process on the same recordings took it
                except OSError:
                    break
                self.taken += 1
                return os.open(dest, os.O_WRONLY | os.O_TRUNC | CLOEXEC)
        self.created += 1
        return os.open(dest, CREATE_FLAGS, 0o644)

    def _refill(self) -> bool:
        now = time.monotonic()
        if now < self._empty_until or self.directory is None:
            return False
        try:
            self._names = [e.name for e in os.scandir(self.directory)]
        except OSError:
            self._names = []
        if not self._names:
            self._empty_until = now + _POOL_RETRY
        return bool(self._names)


class CallRecording:
    """One call's spool: buffers (loop side) and its file (IO-thread side)."""

    __slots__ = ("buffers", "directory", "failed", "fd", "meta", "meta_dirty", "slot", "spool")

    def __init__(self, directory: Path, meta: CallMeta, clock_offset: float) -> None:
        """`clock_offset` is wall time (epoch s) minus the loop's clock, fixed at allocation."""
        self.directory = directory  # the finished recording's folder
        self.spool = spool_path(directory)
        self.meta = meta
        self.buffers = (SpoolBuffer(clock_offset), SpoolBuffer(clock_offset))
        self.fd = -1  # opened by the IO thread
        self.failed = False  # set by either thread; the loop acts on it
        self.meta_dirty = True  # the metadata goes with the next write
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

    def set_codec(self, leg: str, codec: str | None) -> None:
        """Note a leg's codec (loop side); spooled with the next write."""
        info = self.meta.legs.setdefault(leg, {})
        if info.get("codec") != codec:
            info["codec"] = codec
            self.meta_dirty = True

    def take(self) -> bytes:
        """What to append to the spool: the metadata if it changed, then both legs'
        buffered datagrams as chunks (loop side; b"" if nothing)."""
        meta = None
        if self.meta_dirty:
            self.meta_dirty = False
            meta = self.meta
        return call_frames(meta, (self.buffers[0].take(), self.buffers[1].take()))

    # --- IO thread ---

    def open(self, days: set[Path], pool: FreeSpools) -> None:
        """Create the call's spool (IO thread; the metadata goes with the first write).

        `days` holds the day folders known to exist (the IO thread's own set), `pool`
        the emptied spools to reuse.
        """
        if self.fd >= 0 or self.failed:
            return
        try:
            day = self.directory.parent
            if day not in days:
                day.mkdir(parents=True, exist_ok=True)
                days.add(day)
            try:
                self.fd = pool.open(self.spool)
            except FileNotFoundError:  # the day folder went (retention, an operator)
                day.mkdir(parents=True, exist_ok=True)
                self.fd = pool.open(self.spool)
            os.write(self.fd, MAGIC_V3)
        except OSError:
            self._fail("opening")

    def write(self, data: bytes) -> None:
        """Append frames to the spool (IO thread)."""
        if self.failed or self.fd < 0 or not data:
            return
        try:
            write_all(self.fd, data)
        except OSError:
            self._fail("writing")

    def close(self, data: bytes, days: set[Path], pool: FreeSpools) -> bool:
        """Open if not yet done, write the last frames and close (IO thread).

        False if the recording failed at any point (nothing to finish).
        """
        self.open(days, pool)
        self.write(data)
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                self._fail("closing")
            self.fd = -1
        return not self.failed

    def _fail(self, doing: str) -> None:
        if not self.failed:
            log.warning("recording stopped for call %s: %s the spool failed",
                        self.meta.call_id, doing, exc_info=True)
        self.failed = True


class Recorder:
    """The spool wheel and the IO thread of one backend."""

    def __init__(self, free: Path | None = None) -> None:
        """Nothing starts until the first recording; spools come from `free` if given."""
        self.pool = FreeSpools(free)
        self._io: ThreadPoolExecutor | None = None
        self._slots: list[set[CallRecording]] = [set() for _ in range(SLOTS)]
        self._next_slot = 0
        self._timer: asyncio.TimerHandle | None = None
        self._turn = 0
        self.live = 0
        self.errors = 0  # recordings stopped by an IO failure
        self._on_failure: dict[CallRecording, Callable[[], None]] = {}
        self._opening: list[CallRecording] = []  # started since the last tick
        # Ended since the last tick: the last frames to write, and who waits for the close.
        self._closing: list[tuple[CallRecording, bytes, asyncio.Future[bool]]] = []
        self._days: set[Path] = set()  # day folders made (IO thread only)

    def _executor(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-io")
        return self._io

    def start(self, rec: CallRecording, on_failure: Callable[[], None]) -> None:
        """Put `rec` on the wheel; its file is opened at the next tick, in a batch.

        `on_failure` runs on the loop when its IO fails (detach the tap).
        """
        loop = asyncio.get_running_loop()
        self._opening.append(rec)
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
        opening, self._opening = self._opening, []
        closing, self._closing = self._closing, []
        batch = []
        for rec in list(self._slots[turn]):
            if rec.failed:
                self._drop(rec)
                continue
            data = rec.take()
            if data:
                batch.append((rec, data))
        if batch or opening or closing:
            done = self._executor().submit(_io_batch, opening, batch,
                                           [(r, d) for r, d, _ in closing], self._days,
                                           self.pool)
            if closing:
                asyncio.wrap_future(done).add_done_callback(
                    lambda f: _closed(f, [w for _, _, w in closing]))
        self._timer = (asyncio.get_running_loop().call_later(SLOT, self._tick)
                       if self.live or self._opening or self._closing else None)

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
        data = rec.take()
        if rec in self._opening:
            self._opening.remove(rec)  # (rare: a call shorter than a tick) close opens it
        # Closed at the next tick with every other call that ended meanwhile: one
        # hand-off to the IO thread per tick, not one per call.
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[bool] = loop.create_future()
        self._closing.append((rec, data, closed))
        if self._timer is None:
            self._timer = loop.call_later(SLOT, self._tick)
        ok = await closed
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


def _closed(done: asyncio.Future[list[bool]], waiting: list[asyncio.Future[bool]]) -> None:
    """Hand each waiting `stop` its close's outcome (all False if the batch broke)."""
    try:
        results = done.result()
    except Exception:
        log.exception("closing spools failed")
        results = [False] * len(waiting)
    for future, ok in zip(waiting, results, strict=True):
        if not future.done():
            future.set_result(ok)


def _io_batch(opening: list[CallRecording], batch: list[tuple[CallRecording, bytes]],
              closing: list[tuple[CallRecording, bytes]], days: set[Path],
              pool: FreeSpools) -> list[bool]:
    """One tick's IO: open the recordings started since the last, the writes, then
    close those that ended (their outcomes, in order)."""
    for rec in opening:
        try:
            rec.open(days, pool)
        except Exception:  # a bug, not the disk: still only this call's recording stops
            log.exception("opening the spool of call %s failed", rec.meta.call_id)
            rec.failed = True
    for rec, data in batch:
        try:
            rec.write(data)
        except Exception:  # as above
            log.exception("spool write of call %s failed", rec.meta.call_id)
            rec.failed = True
    closed = []
    for rec, data in closing:
        try:
            closed.append(rec.close(data, days, pool))
        except Exception:  # as above
            log.exception("closing the spool of call %s failed", rec.meta.call_id)
            rec.failed = True
            closed.append(False)
    return closed


class Finisher:
    """Finishes recordings (`recordings.finish.finish_call`) in batches on `executor`.

    The calls that end within FINISH_BATCH seconds go in one `finish_batch` job: with
    a process pool that is one pickled round trip for all of them.
    """

    def __init__(self, executor: Executor | None, free: Path | None = None,
                 fill: Callable[[], int] = lambda: 0, key: bytes | None = None) -> None:
        """`executor` None: the loop's default thread pool. Finished spools go back to
        the pool `free`, which each batch tops up towards `fill()` files. With `key`
        each batch is sealed too (one lock and fsync of the day's chain per batch)."""
        self.executor = executor
        self.free = free
        self.fill = fill
        self.key = key
        self._pending: list[tuple[Path, asyncio.Future[RecordingResult]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def finish(self, directory: Path) -> asyncio.Future[RecordingResult]:
        """The finished recording of `directory` (raises its OSError or SpoolError)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordingResult] = loop.create_future()
        self._pending.append((directory, future))
        if self._timer is None:
            self._timer = loop.call_later(FINISH_BATCH, self._flush)
        return future

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self.executor, finish_batch, [d for d, _ in pending],
                                   self.free, self.fill(),
                                   None if self.key is None else (self.key, time.time()))

        def done(job: asyncio.Future[list[RecordingResult | Exception]]) -> None:
            try:
                results: list[RecordingResult | Exception] = job.result()
            except Exception as exc:  # the pool broke (a killed worker, say): all fail
                results = [exc] * len(pending)
            for (_, future), result in zip(pending, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    if result.seal_error is not None:
                        log.error("could not seal the recording in %s: %s",
                                  result.directory, result.seal_error)
                    future.set_result(result)

        job.add_done_callback(done)

    async def close(self) -> None:
        """Finish what is pending now (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._flush()
        await asyncio.sleep(0)


def _die_with_parent() -> None:
    """A finishing worker must not outlive the relay, even after its `kill -9`."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # not Linux: the worker exits when its call queue breaks instead


def finisher_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for finishing, started now (not on the first
    call's path). Spawned, not forked: the relay has threads and sockets by then."""
    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent)
    for _ in range(workers):
        pool.submit(int).result(timeout=60)
    return pool

