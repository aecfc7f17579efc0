"""Retention sweep and the `relay recordings` verbs over real finished call folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_recordings_api import make_call

from recordings.cli import (
    RecordingNotFound,
    export_recording,
    list_recordings,
    parse_since,
    show_recording,
)
from recordings.finish import call_dir, spool_path
from recordings.retention import sweep
from recordings.spool import MAGIC_V3, CallMeta, call_frames

DAY = 86400.0


def _age(path: Path, when: float) -> None:
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when), follow_symlinks=False)


def test_sweep_removes_old_calls_and_empty_date_folders(tmp_path: Path) -> None:
    now = time.time()
    old = make_call(tmp_path, "old-1", now - 40 * DAY, packets=5)
    old2 = make_call(tmp_path, "old-2", now - 40 * DAY, packets=5)
    late = make_call(tmp_path, "late", now - 40 * DAY, packets=5)  # finished late: new mtime
    recent = make_call(tmp_path, "recent", now - 2 * DAY, packets=5)
    for r in (old, old2):
        _age(r.directory, now - 40 * DAY)
    _age(recent.directory, now - 2 * DAY)
    (tmp_path / "README.txt").write_text("not ours")
    (tmp_path / "2020" / "13" / "01").mkdir(parents=True)  # not a date: left alone
    assert sweep(tmp_path, 30, now) == 2
    assert not old.directory.exists() and not old2.directory.exists()
    assert late.directory.exists() and recent.directory.exists()
    assert (tmp_path / "README.txt").exists() and (tmp_path / "2020" / "13" / "01").exists()
    _age(late.directory, now - 35 * DAY)
    assert sweep(tmp_path, 30, now) == 1
    day_of_old = old.directory.parent
    assert not day_of_old.exists()  # day, month (and year if empty) folders went too
    assert recent.directory.exists()
    assert sweep(tmp_path, 30, now) == 0
    with pytest.raises(ValueError):
        sweep(tmp_path, -1, now)


def test_sweep_never_follows_symlinks(tmp_path: Path) -> None:
    now = time.time()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.wav").write_bytes(b"x")
    root = tmp_path / "rec"
    link = call_dir(root, "linked", now - 40 * DAY)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    os.utime(link, (now - 40 * DAY, now - 40 * DAY), follow_symlinks=False)
    assert sweep(root, 30, now) == 1
    assert (outside / "keep.wav").exists() and not link.is_symlink()


def test_ls_show_export(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "rec"
    a = make_call(root, "call-a", now - 3 * DAY, packets=10)
    b = make_call(root, "call-b", now - 60, packets=25)
    live = call_dir(root, "call-live", now)
    live.mkdir(parents=True)
    (live / "caller.spool").write_bytes(b"RSPL\x01")
    (live / "meta.json").write_text(json.dumps({"call_id": "call-live", "started_at": now}))
    # What the relay spools now: one version 3 file beside the folder-to-be.
    spooling = call_dir(root, "call-spooling", now - 1)
    spool_path(spooling).write_bytes(MAGIC_V3 + call_frames(
        CallMeta("call-spooling", now - 1, {"caller": {"codec": "PCMA"}}), (b"", b"")))
    rows = list_recordings(root)
    assert [r["call_id"] for r in rows] == ["call-live", "call-spooling", "call-b", "call-a"]
    assert rows[1]["state"] == "recording" and rows[1]["codecs"] == {"caller": "PCMA"}
    del rows[1]
    assert rows[1]["state"] == "finished" and rows[0]["state"] == "recording"
    assert rows[1]["duration_ms"] == 500 and rows[1]["codecs"]["caller"] == "PCMU"
    assert rows[1]["size"] == sum(f.size for f in b.files.values())
    assert [r["call_id"] for r in list_recordings(root, since=parse_since("1d", now))] == [
        "call-live", "call-spooling", "call-b"]
    json.dumps(rows)  # --json is the rows as they are
    cli = subprocess.run([sys.executable, "-m", "relay", "recordings", "ls",
                          "--recordings", str(root)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0].split()[:2] == ["CALL_ID", "STARTED_AT"]
    assert "call-a" in cli.stdout and "call-b" in cli.stdout
    cli = subprocess.run([sys.executable, "-m", "relay", "recordings", "show", "call-a",
                          "--recordings", str(root), "--json"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert json.loads(cli.stdout)["files"]["mix"]["sha256"] == a.files["mix"].sha256
    cli = subprocess.run([sys.executable, "-m", "relay", "recordings", "show", "nope",
                          "--recordings", str(root)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert cli.returncode == 1 and "nope" in cli.stderr

    shown = show_recording(root, "call-a")
    assert shown["files"]["mix"]["sha256"] == a.files["mix"].sha256
    assert shown["files"]["caller"]["path"].endswith("caller.wav")
    assert shown["files"]["mix"]["record_start_iso"].endswith("Z")

    out = export_recording(root, "call-a", tmp_path / "export")
    names = sorted(Path(p).name for p in out["files"])
    assert names == ["call-a-callee.wav", "call-a-caller.wav", "call-a-meta.json",
                     "call-a-mix.wav"]
    assert (tmp_path / "export" / "call-a-mix.wav").read_bytes() == (
        a.directory / "mix.wav").read_bytes()

    for bad in ("nope", "../etc", "call-live"):
        with pytest.raises(RecordingNotFound):
            export_recording(root, bad, tmp_path / "x")
    with pytest.raises(RecordingNotFound):
        show_recording(root, "..")
    (a.directory / "mix.wav").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        export_recording(root, "call-a", tmp_path / "export2")


def test_parse_since() -> None:
    now = 1_000_000.0
    assert parse_since("30m", now) == now - 1800
    assert parse_since("7d", now) == now - 7 * DAY
    assert parse_since("2026-01-02", now) == 1767312000.0
    assert parse_since("2026-01-02T01:00:00+01:00", now) == 1767312000.0
    with pytest.raises(ValueError):
        parse_since("yesterday", now)
