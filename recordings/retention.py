"""Retention: delete call recordings older than N days, then empty date folders.

A call folder `<root>/YYYY/MM/DD/<call_id>` goes when *both* its day (the end of
that UTC day) and its own mtime are older than the cutoff: the folder date is when
the call started, and a call that ran past midnight, or was finished late after a
crash (`finish_pending`), has a newer mtime and is kept until that too is old.
Symlinks are never followed: a link in the tree is removed as a link.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["sweep"]

log = logging.getLogger(__name__)
_PARTS = (re.compile(r"^\d{4}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"))


def _dirs(base: Path, pattern: re.Pattern[str]) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(base)
                      if e.is_dir(follow_symlinks=False) and pattern.match(e.name))
    except OSError:
        return []


def _day_end(year: Path, month: Path, day: Path) -> float | None:
    """Epoch seconds at the end of the folder's UTC day; None if not a real date."""
    try:
        start = datetime(int(year.name), int(month.name), int(day.name), tzinfo=UTC)
    except ValueError:
        return None
    return (start + timedelta(days=1)).timestamp()


def _remove(path: Path) -> bool:
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except OSError:
        log.warning("retention could not remove %s", path, exc_info=True)
        return False
    return True


def _rmdir_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or gone): keep it
        path.rmdir()


_DAY_FILES = frozenset({"chain.jsonl", "chain.lock"})  # recordings.manifest's day files


def _drop_chain_if_alone(day: Path) -> None:
    """A day whose calls are all gone loses its manifest chain too (nothing to check)."""
    try:
        names = {e.name for e in os.scandir(day)}
    except OSError:
        return
    if names and names <= _DAY_FILES:
        for name in names:
            with contextlib.suppress(OSError):
                (day / name).unlink()


def sweep(root: Path | str, days: float, now: float) -> int:
    """Remove call folders older than `days` days at `now` (epoch s); return how many.

    Empty day, month and year folders are removed afterwards. Files and folders
    that do not look like the dated layout are left alone.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    root = Path(root)
    cutoff = now - days * 86400
    removed = 0
    for year in _dirs(root, _PARTS[0]):
        for month in _dirs(year, _PARTS[1]):
            for day in _dirs(month, _PARTS[2]):
                end = _day_end(year, month, day)
                if end is None or end > cutoff:
                    continue  # the folder's day is not old enough: nothing in it is
                try:
                    entries = list(os.scandir(day))
                except OSError:
                    continue
                for entry in entries:
                    try:
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                    except OSError:
                        continue
                    if mtime < cutoff and entry.name not in _DAY_FILES \
                            and _remove(Path(entry.path)):
                        removed += 1
                _drop_chain_if_alone(day)
                _rmdir_if_empty(day)
            _rmdir_if_empty(month)
        _rmdir_if_empty(year)
    return removed
