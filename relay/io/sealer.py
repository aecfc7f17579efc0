"""Seals finished recordings (recordings.manifest) off the event loop, one at a time.

The call path hands over the folder of a call that ended with a recording; a single
worker thread writes its manifest and chain line, so this process's seals are
serialised (other processes wait on the day's lock). A failed seal is logged: the
call folder then shows as unsealed in `relay recordings verify`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from recordings.manifest import seal

__all__ = ["Sealer"]

log = logging.getLogger("relay.recordings")


class Sealer:
    """`submit(record)` for each ended call; `close()` waits for what is queued."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sealer")
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
        self._pool.submit(self._seal, directory)

    def _seal(self, directory: Path) -> None:
        try:
            seal(directory, self.key, time.time())
            self.sealed += 1
        except (OSError, ValueError):
            self.failed += 1
            log.exception("could not seal the recording in %s", directory)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
