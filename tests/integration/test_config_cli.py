"""`relay config check|show` and config errors as an operator meets them: subprocesses,
exit codes and the one line on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TYPO = "relay: config error: [sip] sesion_expires: unknown key (did you mean session_expires?)"


def relay(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=tmp, text=True,
                          capture_output=True, timeout=60)


def _typo(tmp_path: Path) -> Path:
    f = tmp_path / "typo.toml"
    f.write_text('[relay]\nstore = "sqlite:///var/relay.db"\n\n[sip]\nsesion_expires = 600\n')
    return f


def test_check_names_the_bad_key(tmp_path: Path) -> None:
    _typo(tmp_path)
    r = relay(tmp_path, "config", "check", "--config", "typo.toml")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [TYPO]

    (tmp_path / "good.toml").write_text("[sip]\nsession_expires = 600\n")
    r = relay(tmp_path, "config", "check", "--config", "good.toml")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")

    (tmp_path / "type.toml").write_text('[sms]\nretry_window = "soon"\n')
    r = relay(tmp_path, "config", "check", "--config", "type.toml")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "relay: config error: [sms] retry_window: expected a number, got string"]


def test_serve_stops_on_a_typo(tmp_path: Path) -> None:
    _typo(tmp_path)
    r = relay(tmp_path, "serve", "--config", "typo.toml", "--sip", "127.0.0.1:0",
              "--http", "127.0.0.1:0")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [TYPO]
    assert not (tmp_path / "var").exists()  # stopped before opening anything
    # Every verb that loads the file refuses it the same way.
    r = relay(tmp_path, "bindings", "--config", "typo.toml")
    assert r.returncode == 2 and r.stderr.splitlines() == [TYPO]


def test_show_hides_secrets_and_applies_flags(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text("""
[api]
tokens = { "admin-token-SECRET1" = "admin" }
[dialplan]
hook_url = "http://127.0.0.1:9/hook"
hook_secret = "SECRET2"
[sip]
trunk_auth_user = "relay"
trunk_auth_password = "SECRET3"
session_expires = 600
[sms]
route = "webhook"
webhook_url = "http://127.0.0.1:9/sms"
webhook_secret = "SECRET4"
[smpp]
accounts = { gw1 = "SECRET5" }
[events]
url = "http://127.0.0.1:9/events"
secret = "SECRET6"
[recordings]
link_keys = ["SECRET7-0123456789abcdef"]
""")
    r = relay(tmp_path, "config", "show", "--config", "relay.toml", "--json",
              "--sip", "127.0.0.1:5999", "--smpp-account", "gw2:SECRET8")
    assert r.returncode == 0, r.stderr
    assert "SECRET" not in r.stdout
    data = json.loads(r.stdout)
    assert data["relay"]["sip"] == "127.0.0.1:5999"  # the flag, over the default
    assert data["sip"]["session_expires"] == 600 and data["sip"]["min_se"] == 90
    assert data["sip"]["trunk_auth_password"] == "***"
    assert data["api"]["tokens"] == ["***:admin"]
    assert data["smpp"]["accounts"] == {"gw2": "***"}  # the flag replaced the file's
    assert data["events"]["secret"] == "***" and data["recordings"]["link_keys"] == ["***"]
    assert data["dialplan"]["hook_secret"] == "***"

    r = relay(tmp_path, "config", "show", "--config", "relay.toml")
    assert r.returncode == 0, r.stderr
    assert "SECRET" not in r.stdout
    assert "[sip]\n" in r.stdout and "session_expires = 600\n" in r.stdout
    assert 'webhook_secret = "***"' in r.stdout
