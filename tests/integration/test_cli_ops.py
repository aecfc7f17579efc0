"""Operator verbs with API parity, as a user runs them (subprocesses): `relay calls
--live` and `relay hangup` against a serving relay with a real call (SIPp), `relay
messages`, `--since/--until` in one format, `--csv`, `--url/--token`, `--version`,
help for every option, and the store a verb opened when nobody chose one."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sipp_harness import A, B, X, bind, callee, caller, calls, relay_args, udp_port

from relay.cli import _parser

TOKENS = {"RELAY_API_TOKENS": "adm:admin,opstok:ops"}


def relay(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60)


def test_every_option_has_help_and_version(tmp_path: Path) -> None:
    missing = []

    def walk(p: argparse.ArgumentParser, where: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{where} {action.dest}")

    walk(_parser(), "relay")
    assert missing == []
    r = relay(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.startswith("relay ")
    r = relay(tmp_path, "calls", "--help")
    assert r.returncode == 0 and "--since" in r.stdout and "30m" in r.stdout


def test_a_verb_says_which_store_it_opened(tmp_path: Path) -> None:
    r = relay(tmp_path, "calls")
    assert r.returncode == 0
    assert f"store {tmp_path}/var/relay.db (no such file" in r.stderr
    r = relay(tmp_path, "calls", "--json")
    assert json.loads(r.stdout)["calls"] == []
    assert f"store {tmp_path}/var/relay.db" in r.stderr  # now it exists: no warning
    assert "no such file" not in r.stderr
    r = relay(tmp_path, "calls", "--store", f"sqlite:///{tmp_path}/other.db")
    assert r.stderr == ""  # chosen: nothing to say
    r = relay(tmp_path, "calls", "--since", "yesterday")
    assert r.returncode == 2 and "--since 'yesterday': use UNIX seconds, ISO 8601" in r.stderr
    r = relay(tmp_path, "calls", "--live", "--url", "http://127.0.0.1:9")
    assert r.returncode == 1 and "unreachable" in r.stderr and "Traceback" not in r.stderr


def test_live_hangup_and_lists_through_the_api(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    store = f"sqlite:///{tmp_path}/relay.db"
    node = relay_factory(store, relay_args(out, tmp_path), env=TOKENS)
    base = node.base
    bind(node.base, token="adm", out_id="order-9")
    uas = callee(tmp_path, out, "uas.xml", number=B, extra=["-m", "1"])
    uac = caller(tmp_path, node.sip_port, "uac_wait_bye.xml", number=A, x=X,
                 extra=["-m", "1"])
    uas.start()
    uac.start()
    try:
        live: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not live and time.monotonic() < deadline:
            r = relay(tmp_path, "calls", "--live", "--url", base, "--token", "adm", "--json")
            assert r.returncode == 0, r.stderr
            live = [c for c in json.loads(r.stdout)["calls"] if c["phase"] == "connected"]
            time.sleep(0.2)
        assert live and live[0]["caller"] == A and live[0]["out_id"] == "order-9"
        call_id = live[0]["id"]
        r = relay(tmp_path, "calls", "--live", "--url", base, "--token", "opstok")
        assert call_id in r.stdout and "+86138****2222" in r.stdout and A[1:] not in r.stdout
        assert r.stdout.splitlines()[0].split()[:3] == ["ID", "NODE", "STARTED_AT"]
        r = relay(tmp_path, "hangup", call_id, "--url", base, "--token", "opstok")
        assert r.returncode == 1 and "forbidden" in r.stderr
        r = relay(tmp_path, "hangup", call_id, "--url", base, "--token", "adm", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["end_reason"] == "operator"
        assert uac.wait(30) == 0, uac.tail()
        assert uas.wait(30) == 0, uas.tail()
    finally:
        uac.stop()
        uas.stop()
    assert any(m.startswith("BYE") for m in uac.received())
    assert any(m.startswith("BYE") for m in uas.received())
    r = relay(tmp_path, "hangup", call_id, "--url", base, "--token", "adm")
    assert r.returncode == 1 and "not_found" in r.stderr

    calls(base, token="adm")
    # The same filters remote and local, in CSV; --since/--until in every form.
    started = time.time() - 600
    remote = relay(tmp_path, "calls", "--url", base, "--token", "adm", "--csv",
                   "--since", "10m", "--outcome", "answered")
    local = relay(tmp_path, "calls", "--store", store, "--csv",
                  "--since", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                  "--outcome", "answered")
    rows = list(csv.DictReader(io.StringIO(remote.stdout)))
    assert remote.returncode == 0 and len(rows) == 1, remote.stderr
    assert rows[0]["id"] == call_id and rows[0]["end_reason"] == "operator"
    assert rows[0]["caller"] == A
    assert list(csv.DictReader(io.StringIO(local.stdout))) == rows
    for until in ("1h", str(int(started)), "2000-01-01T00:00:00Z"):
        r = relay(tmp_path, "calls", "--store", store, "--json", "--until", until)
        assert r.returncode == 0 and json.loads(r.stdout)["calls"] == [], until
    r = relay(tmp_path, "calls", "--url", base, "--token", "opstok", "--party", A)
    assert r.returncode == 1 and "forbidden" in r.stderr

    # Texts: one forwarded or refused attempt recorded; listed remote and local alike.
    urllib_post(base, "/v1/sms", {"from": A, "to": X, "text": "at the door"})
    deadline = time.monotonic() + 10
    msgs: list[dict[str, Any]] = []
    while not msgs and time.monotonic() < deadline:
        r = relay(tmp_path, "messages", "--url", base, "--token", "opstok", "--json")
        assert r.returncode == 0, r.stderr
        msgs = json.loads(r.stdout)["messages"]
        time.sleep(0.2)
    assert msgs and msgs[0]["x"] == X and msgs[0]["sender"] == "+86138****2222"
    r = relay(tmp_path, "messages", "--store", store, "--role", "ops", "--since", "1h")
    assert msgs[0]["id"] in r.stdout and A[1:] not in r.stdout
    r = relay(tmp_path, "bindings", "--url", base, "--token", "opstok", "--csv")
    assert r.stdout.startswith("id,mode,x,a,b,") and "order-9" in r.stdout


def urllib_post(base: str, path: str, body: Any) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer adm"})
    # Refused or without a route, the attempt is recorded either way.
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=10).close()
