"""Plain-descriptor file IO for recordings: spools, WAVs, meta.json and manifests.

A buffered `open()` adds an fstat, an ioctl and an lseek to every file it opens; a
finished call writes four files and the relay opens a spool per call, so these go
through `os.open` and `os.write` instead. Blocking: off the event loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CLOEXEC", "CREATE_FLAGS", "read_all", "replace_file", "write_all"]

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A new (or emptied) file to write.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | CLOEXEC


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of `data` to `fd` (a regular file takes it at once; a full disk raises)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_all(path: Path | str) -> bytes:
    """The whole file, in as few system calls as `open().read()` makes at best."""
    fd = os.open(path, os.O_RDONLY | CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, max(size, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def replace_file(path: Path | str, parts: Iterable[bytes | bytearray | memoryview]
                 ) -> tuple[int, str, float]:
    """Write `parts` to `path` through a temporary name beside it: (size, SHA-256, mtime)
    of what was written.

    Hashed as written and its mtime taken from the open file, so nobody needs to read it
    back; renamed into place, so readers never see it half-written.
    """
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    h = hashlib.sha256()
    size = 0
    fd = os.open(tmp, CREATE_FLAGS, 0o644)
    try:
        for part in parts:
            h.update(part)
            write_all(fd, part)
            size += len(part)
        mtime = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return size, h.hexdigest(), mtime
