"""The `relay` operator verbs as a user runs them: subprocesses on one SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def relay(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=tmp, text=True,
                          capture_output=True, timeout=60)


def test_numbers_bind_freeze_release(tmp_path: Path) -> None:
    r = relay(tmp_path, "numbers", "add", "+8617000000001", "+8617000000002", "--area", "0571")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "var" / "relay.db").exists()  # the embedded default location

    r = relay(tmp_path, "bind", "--a", "+8613800000001", "--b", "+8613900000001",
              "--ttl", "600", "--out-id", "ord-7", "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["state"] == "active" and b["out_id"] == "ord-7"

    r = relay(tmp_path, "bindings", "--role", "ops")
    assert r.returncode == 0 and b["id"] in r.stdout
    assert "+86138****0001" in r.stdout and "13800000001" not in r.stdout
    assert r.stdout.splitlines()[0].split()[:3] == ["ID", "MODE", "X"]

    r = relay(tmp_path, "freeze", b["id"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "frozen"
    r = relay(tmp_path, "bind", "--a", "+8613800000001", "--b", "+8613900000001",
              "--x", b["x"], "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "number_busy"

    r = relay(tmp_path, "release", b["id"])
    assert r.returncode == 0 and "released" in r.stdout
    r = relay(tmp_path, "freeze", b["id"])
    assert r.returncode == 1 and "illegal_transition" in r.stderr

    r = relay(tmp_path, "numbers", "--json")
    stats = json.loads(r.stdout)["stats"]
    assert stats["total"] == 2 and stats["in_use"] == 0


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    r = relay(tmp_path, "bind", "--a", "+86abc", "--b", "+8613900000001")
    assert r.returncode == 1 and "invalid_number" in r.stderr
    r = relay(tmp_path, "serve", "--http", "0.0.0.0:0")
    assert r.returncode == 2 and "without tokens" in r.stderr
    r = relay(tmp_path, "bindings", "--store", "mysql://x")
    assert r.returncode == 1 and "unknown store URL" in r.stderr
    (tmp_path / "bad.toml").write_text('[sms]\nroute = "pigeon"\n')
    r = relay(tmp_path, "serve", "--config", "bad.toml", "--http", "127.0.0.1:0",
              "--sip", "127.0.0.1:0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "relay: config error: [sms] route: one of gateway, upstream, webhook, got 'pigeon'")
    assert "Traceback" not in r.stderr
