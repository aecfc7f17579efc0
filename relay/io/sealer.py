"""Seals finished recordings (recordings.manifest) in a process of their own, in batches.

For media backends that do not seal as they finish (rtpengine: its pcaps become WAVs in
the relay; the in-process backend seals in its finishing process). The call path hands
over the folder of a call that ended with a recording. Sealing
reads and hashes every file (SHA-256 over megabytes), so it runs in one spawned worker
process: a thread of the relay would hold the call loop's GIL for the whole hash. One
worker keeps this process's seals serialised (other processes wait on the day's lock).
A failed seal is logged: the call folder then shows as unsealed in `relay recordings
verify`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from recordings.manifest import seal_many

__all__ = ["Sealer"]

log = logging.getLogger("relay.recordings")


#: Calls ended within this many seconds are sealed in one job: one round trip to the
#: worker per batch, not per call (at hundreds of calls/s the pickling, the pipe and the
#: executor's threads cost the relay more than the seal costs the worker).
BATCH = 0.05


def _seal(directories: list[Path], key: bytes) -> list[str | None]:
    """In the worker: seal each of `directories`; per folder the error's text, or None."""
    return [f"{type(r).__name__}: {r}" if isinstance(r, Exception) else None
            for r in seal_many(directories, key, time.time())]


def _die_with_parent() -> None:
    from relay.media.recorder import _die_with_parent as die

    die()


class Sealer:
    """`submit(record)` for each ended call; `close()` waits for what is queued."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        # Spawned, not forked: the relay has threads and sockets by then. Started
        # here (at the voice subsystem's start), not on the first call's path.
        self._pool = ProcessPoolExecutor(max_workers=1,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_die_with_parent)
        self._pool.submit(int)
        self._pending: list[Path] = []
        self.sealed = 0
        self.failed = 0

    def submit_record(self, record: dict[str, Any]) -> None:
        """Seal the folder of a call record's recording, if it has one."""
        files = record.get("recording") or {}
        first = next(iter(files.values()), None)
        if first is None or not first.get("path"):
            return
        self.submit(Path(first["path"]).parent)

    def submit(self, directory: Path) -> None:
        """Queue `directory`; on an event loop the queue goes to the worker every `BATCH`
        seconds, elsewhere at once."""
        self._pending.append(directory)
        if len(self._pending) > 1:
            return
        try:
            asyncio.get_running_loop().call_later(BATCH, self._flush)
        except RuntimeError:  # no loop (a tool, a test): no batching
            self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            try:
                fut = self._pool.submit(_seal, batch, self.key)
            except RuntimeError:  # shut down: a call record after close()
                log.error("recordings not sealed (the sealer is closed): %s", batch)
                return
            fut.add_done_callback(lambda f: self._done(f, batch))

    def _done(self, fut: Future[list[str | None]], batch: list[Path]) -> None:
        exc = fut.exception()
        errors: list[str | None] = ([f"{type(exc).__name__}: {exc}"] * len(batch)
                                    if exc is not None else fut.result())
        for directory, error in zip(batch, errors, strict=True):
            if error is None:
                self.sealed += 1
            else:
                self.failed += 1
                log.error("could not seal the recording in %s: %s", directory, error)

    def close(self) -> None:
        """Seal what is queued and wait for it (from any thread, once calls have stopped)."""
        self._flush()
        self._pool.shutdown(wait=True)
