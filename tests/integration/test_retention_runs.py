"""Retention runs: `relay serve` sweeps by itself, and `relay recordings sweep` on demand;
call records stay, and no event is announced for what was removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from event_receiver import Receiver
from test_recordings_api import make_call

pytestmark = pytest.mark.integration
DAY = 86400.0


def _age(path: Path, when: float) -> None:
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when), follow_symlinks=False)


def test_relay_serve_sweeps_by_itself(relay_factory: Any, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    now = time.time()
    old = make_call(rec, "old-call", now - 40 * DAY, packets=5)
    _age(old.directory, now - 40 * DAY)
    recent = make_call(rec, "recent-call", now - 2 * DAY, packets=5)
    receiver = Receiver(free_port(), "hook-secret-0123456789")
    receiver.start()
    conf = tmp_path / "relay.toml"
    conf.write_text("[recordings]\nretention_days = 30\nretention_interval = 0.2\n"
                    f'[events]\nurl = "{receiver.url}"\nsecret = "hook-secret-0123456789"\n')
    try:
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                              ["--config", str(conf), "--recordings", str(rec)])
        deadline = time.monotonic() + 10
        while old.directory.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not old.directory.exists() and recent.directory.exists()
        # A second old call appears later: the next periodic sweep takes it.
        later = make_call(rec, "old-later", now - 35 * DAY, packets=5)
        _age(later.directory, now - 35 * DAY)
        deadline = time.monotonic() + 10
        while later.directory.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not later.directory.exists()
        with urllib.request.urlopen(relay.base + "/healthz") as r:
            assert r.status == 200
        time.sleep(0.5)
        assert receiver.posts == []  # nothing is announced for removed recordings
    finally:
        receiver.stop()


def test_cli_sweep(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    now = time.time()
    old = make_call(rec, "old-cli", now - 40 * DAY, packets=5)
    _age(old.directory, now - 40 * DAY)
    keep = make_call(rec, "keep-cli", now - 10 * DAY, packets=5)
    _age(keep.directory, now - 10 * DAY)
    conf = tmp_path / "relay.toml"
    conf.write_text("[recordings]\nretention_days = 30\n")
    base = [sys.executable, "-m", "relay", "recordings", "--config", str(conf), "sweep",
            "--recordings", str(rec), "--json"]
    out = subprocess.run(base, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == {"removed": 1, "days": 30.0}
    assert not old.directory.exists() and keep.directory.exists()
    out = subprocess.run([*base, "--days", "5"], capture_output=True, text=True, timeout=60,
                         check=True)
    assert json.loads(out.stdout)["removed"] == 1 and not keep.directory.exists()
    # The folder may also come before the verb.
    gone = make_call(rec, "gone-cli", now - 40 * DAY, packets=5)
    _age(gone.directory, now - 40 * DAY)
    subprocess.run([sys.executable, "-m", "relay", "recordings", "--recordings", str(rec),
                    "sweep", "--days", "30"], capture_output=True, timeout=60, check=True)
    assert not gone.directory.exists()
    bare = subprocess.run([sys.executable, "-m", "relay", "recordings", "sweep",
                           "--recordings", str(rec)], capture_output=True, text=True,
                          timeout=60)
    assert bare.returncode == 2 and "retention" in bare.stderr
