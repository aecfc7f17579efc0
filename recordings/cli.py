"""The operator verbs `relay recordings ls | show | export`, as pure functions.

Each returns plain rows/dicts (JSON-ready) over the recordings folder; the console
script (relay/cli.py) prints them as a table or as JSON. Nothing
here needs the relay to run: it reads `<root>/YYYY/MM/DD/<call_id>/meta.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recordings.api import RecordingIndex, valid_call_id
from recordings.finish import SPOOL_SUFFIX, spool_path
from recordings.spool import SpoolError, read_call_spool

__all__ = [
    "RecordingNotFound",
    "export_recording",
    "list_recordings",
    "parse_since",
    "show_recording",
]

_FILES = ("caller", "callee", "mix")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PARTS = (re.compile(r"^\d{4}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"))


class RecordingNotFound(LookupError):
    """No (finished) recording for the call id; the CLI exits non-zero with it."""


def parse_since(text: str, now: float) -> float:
    """`--since` as epoch seconds: `30m`, `24h`, `7d`, or an ISO date/datetime (UTC if naive)."""
    m = _RELATIVE.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: use 30m, 24h, 7d or an ISO date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _subdirs(base: Path, pattern: re.Pattern[str] | None = None) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(base)
                      if e.is_dir(follow_symlinks=False)
                      and (pattern.match(e.name) if pattern else valid_call_id(e.name)))
    except OSError:
        return []


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        raw = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _row(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    files = _dict(meta.get("files"))
    finished = bool(files) and all((folder / f"{name}.wav").exists() for name in files)
    started = meta.get("started_at")
    mix = _dict(files.get("mix"))
    legs = _dict(meta.get("legs"))
    return {
        "call_id": folder.name,
        "started_at": _iso(float(started)) if isinstance(started, (int, float)) else None,
        "duration_ms": mix.get("duration_ms"),
        "size": sum(int(_dict(f).get("size", 0)) for f in files.values()),
        "codecs": {leg: (info or {}).get("codec") for leg, info in legs.items()},
        "state": "finished" if finished else ("recording" if _has_spools(folder)
                                              else "incomplete"),
        "path": str(folder),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _has_spools(folder: Path) -> bool:
    return (spool_path(folder).exists()
            or any((folder / f"{leg}.spool").exists() for leg in ("caller", "callee")))


def _spooling(day: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Calls being recorded in `day` (a version 3 spool and no folder yet): each
    call's folder-to-be and the metadata the spool starts with."""
    out = []
    try:
        entries = [e for e in os.scandir(day)
                   if e.name.endswith(SPOOL_SUFFIX) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    for entry in entries:
        folder = Path(entry.path).with_suffix("")
        if not valid_call_id(folder.name) or folder.exists():
            continue
        try:
            with open(entry.path, "rb") as f:
                meta, _legs = read_call_spool(f.read(1 << 16))  # the metadata comes first
        except (OSError, SpoolError):
            meta = None
        out.append((folder, asdict(meta) if meta is not None else {}))
    return out


def list_recordings(root: Path | str, since: float | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """`relay recordings ls`: one row per call folder, newest first.

    `since` (epoch s) skips whole day folders before it, then calls that started
    before it. Rows: call_id, started_at (ISO UTC), duration_ms, size (bytes, all
    WAVs), codecs, state (finished / recording / incomplete), path.
    """
    root = Path(root)
    since_day = (datetime.fromtimestamp(since, UTC).date() if since is not None else None)
    rows: list[dict[str, Any]] = []
    for year in reversed(_subdirs(root, _PARTS[0])):
        for month in reversed(_subdirs(year, _PARTS[1])):
            for day in reversed(_subdirs(month, _PARTS[2])):
                try:
                    date = datetime(int(year.name), int(month.name), int(day.name)).date()
                except ValueError:
                    continue
                if since_day is not None and date < since_day:
                    continue
                for folder, meta in [(f, _read_meta(f)) for f in _subdirs(day)] + _spooling(day):
                    started = meta.get("started_at")
                    if (since is not None and isinstance(started, (int, float))
                            and started < since):
                        continue
                    rows.append(_row(folder, meta))
    rows.sort(key=lambda r: r["started_at"] or "", reverse=True)
    return rows[:limit] if limit is not None else rows


def _folder(root: Path | str, call_id: str) -> Path:
    if not valid_call_id(call_id):
        raise RecordingNotFound(f"{call_id!r} is not a valid call id")
    folder = RecordingIndex(Path(root), rescan_interval=0.0).find(call_id)
    if folder is None:
        raise RecordingNotFound(f"no recording for call {call_id}")
    return folder


def show_recording(root: Path | str, call_id: str) -> dict[str, Any]:
    """`relay recordings show CALL_ID`: the row plus meta.json's legs and files with paths."""
    folder = _folder(root, call_id)
    meta = _read_meta(folder)
    row = _row(folder, meta)
    files = {}
    for name, info in (meta.get("files") or {}).items():
        entry = dict(info) if isinstance(info, dict) else {}
        entry["path"] = str(folder / f"{name}.wav")
        if isinstance(entry.get("record_start_at"), (int, float)):
            entry["record_start_iso"] = _iso(entry["record_start_at"] / 1000)
        files[name] = entry
    return {**row, "legs": meta.get("legs") or {}, "files": files}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_recording(root: Path | str, call_id: str, dest: Path | str) -> dict[str, Any]:
    """`relay recordings export CALL_ID DEST`: copy the WAVs and meta.json into `dest/`.

    `dest` is created if missing; each copied WAV is checked against the SHA-256
    in meta.json (a mismatch raises `ValueError`: the archive must not silently
    carry a damaged file). Returns {"call_id", "dest", "files": [paths]}.
    Raises `RecordingNotFound` if the call has no finished recording.
    """
    folder = _folder(root, call_id)
    meta = _read_meta(folder)
    files = meta.get("files") or {}
    if not files:
        raise RecordingNotFound(f"the recording of call {call_id} is not finished")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for name in _FILES:
        src = folder / f"{name}.wav"
        if name not in files or not src.exists():
            continue
        target = out / f"{call_id}-{name}.wav"
        shutil.copyfile(src, target)
        want = files[name].get("sha256") if isinstance(files[name], dict) else None
        if want and _sha256(target) != want:
            raise ValueError(f"{src}: SHA-256 differs from meta.json")
        copied.append(str(target))
    meta_target = out / f"{call_id}-meta.json"
    shutil.copyfile(folder / "meta.json", meta_target)
    copied.append(str(meta_target))
    return {"call_id": call_id, "dest": str(out), "files": copied}
