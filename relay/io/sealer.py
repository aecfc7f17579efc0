"""Seals finished recordings (recordings.manifest) in a process of their own, one at a
time.

The call path hands over the folder of a call that ended with a recording. Sealing
reads and hashes every file (SHA-256 over megabytes), so it runs in one spawned worker
process: a thread of the relay would hold the call loop's GIL for the whole hash. One
worker keeps this process's seals serialised (other processes wait on the day's lock).
A failed seal is logged: the call folder then shows as unsealed in `relay recordings
verify`.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from recordings.manifest import seal

__all__ = ["Sealer"]

log = logging.getLogger("relay.recordings")


def _seal(directory: Path, key: bytes) -> str | None:
    """In the worker: seal `directory`; the error's text, or None."""
    try:
        seal(directory, key, time.time())
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


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
        fut = self._pool.submit(_seal, directory, self.key)
        fut.add_done_callback(lambda f: self._done(f, directory))

    def _done(self, fut: Future[str | None], directory: Path) -> None:
        error = fut.exception() or fut.result()
        if error is None:
            self.sealed += 1
        else:
            self.failed += 1
            log.error("could not seal the recording in %s: %s", directory, error)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
