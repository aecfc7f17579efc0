"""Events end to end: SIPp calls through `relay serve`, a real webhook receiver on
loopback that fails, is down, and a relay killed with SIGKILL and started again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from event_receiver import Receiver
from sipp_harness import (
    A,
    B,
    X,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
)

pytestmark = pytest.mark.integration
SECRET = "hook-secret-0123456789"
CALL_ORDER = ["call.ringing", "call.answered", "call.ended", "recording.ready"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# A relay killed with -9 holds the outbox lease until it lapses; the restarted relay's
# sender waits that long before it delivers. 3 s rather than the default 10 keeps these
# waits short ([events] lease_ttl; the SMS webhook's sender takes it too).
LEASE = 3


def _config(tmp_path: Path, receiver: Receiver, **more: Any) -> Path:
    conf = tmp_path / "relay.toml"
    lines = ["[events]", f'url = "{receiver.url}"', f'secret = "{SECRET}"',
             "backoff = 0.1", "backoff_max = 0.5", *(f"{k} = {v}" for k, v in more.items())]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start(relay_factory: Any, tmp_path: Path, out: int, conf: Path) -> Any:
    return relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         relay_args(out, tmp_path, "--config", str(conf)))


def _calls(tmp_path: Path, relay: Any, out: int, n: int, name: str) -> None:
    uas = callee(tmp_path, out, name=f"{name}-uas", extra=["-m", str(n)])
    uac = caller(tmp_path, relay.sip_port, name=f"{name}-uac",
                 extra=["-m", str(n), "-d", "200", "-r", "10"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()


def _by_call(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Types per call id in first-arrival order (a redelivery does not reorder)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for e in events:
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        if "call_id" in e:
            out.setdefault(e["call_id"], []).append(e["type"])
    return out


def _complete(n: int) -> Any:
    return lambda got: sum(t == CALL_ORDER for t in _by_call(got).values()) >= n


def test_events_survive_503s_in_order_signed_and_masked(relay_factory: Any,
                                                        tmp_path: Path) -> None:
    out = udp_port()
    receiver = Receiver(free_port(), SECRET, fail_first=6, retry_after="1")
    receiver.start()
    try:
        relay = _start(relay_factory, tmp_path, out, _config(tmp_path, receiver))
        binding = bind(relay.base, out_id="order-7")
        _calls(tmp_path, relay, out, 3, "ok")
        stranger = caller(tmp_path, relay.sip_port, number="+8613700000077",
                          scenario_path=refused_scenario(tmp_path, 403), extra=["-m", "1"],
                          name="stranger")
        stranger.start()
        assert stranger.wait(30) == 0, stranger.tail()
        got = receiver.wait_for(lambda g: _complete(3)(g)
                                and any(e["type"] == "call.refused" for e in g))
        receiver.check()
        per_call = _by_call(got)
        assert sorted(per_call.values()) == sorted([CALL_ORDER] * 3 + [["call.refused"]])
        ended = [e for e in got if e["type"] == "call.ended"]
        for e in ended:
            assert e["x"] == X and e["binding"] == binding["id"] and e["out_id"] == "order-7"
            assert e["caller"] == "+86138****2222" and e["callee"] == "+86139****4444"
            assert e["record"]["caller"] == "+86138****2222"
            assert A not in str(e) and B not in str(e)  # masked by default, everywhere
            assert e["sip_code"] == 200 and e["direction"] == "a_to_b"
            assert ISO.match(e["at"])
        refused = next(e for e in got if e["type"] == "call.refused")
        assert refused["sip_code"] == 403 and refused["unconnected_cause"] == "stranger"
        ready = next(e for e in got if e["type"] == "recording.ready")
        assert set(ready["files"]) == {"caller", "callee", "mix"}
        for f in ready["files"].values():
            assert len(f["sha256"]) == 64 and f["size"] >= 44  # signalling only: no RTP
        with urllib.request.urlopen(ready["files"]["mix"]["url"]) as r:  # no token
            wav = r.read()
        assert hashlib.sha256(wav).hexdigest() == ready["files"]["mix"]["sha256"]
        # The receiver's first 503 asked for Retry-After: 1; that event waited that long.
        first = receiver.posts[0]
        again = next(p for p in receiver.posts[1:] if p.key == first.key)
        assert again.at - first.at >= 0.9
        assert sum(p.status == 503 for p in receiver.posts) == 6
        # Each recorded call was sealed into the day's manifest chain by the relay.
        out = subprocess.run(
            [sys.executable, "-m", "relay", "recordings", "verify", "--recordings",
             str(tmp_path / "rec"), "--json", "--date", ready["at"][:10]],
            capture_output=True, text=True, timeout=60)
        report = json.loads(out.stdout)
        assert out.returncode == 0 and report["checked"] == 3, report
        # `relay calls --json` speaks the same times as the API: ISO 8601 UTC with ms.
        out = subprocess.run(
            [sys.executable, "-m", "relay", "calls", "--json", "--store",
             f"sqlite:///{tmp_path}/relay.db"], capture_output=True, text=True, timeout=60)
        listed = json.loads(out.stdout)["calls"]
        assert len(listed) == 4 and all(ISO.match(c["started_at"]) for c in listed)
        bridged = next(c for c in listed if c["sip_code"] == 200)
        assert all(ISO.match(bridged["legs"]["callee"][k])
                   for k in ("invite_at", "ring_at", "answer_at", "end_at"))
    finally:
        receiver.stop()


def test_outage_and_kill_minus_9_lose_nothing(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    receiver = Receiver(free_port(), SECRET)  # down: nothing listens on its port yet
    conf = _config(tmp_path, receiver, lease_ttl=LEASE)
    relay = _start(relay_factory, tmp_path, out, conf)
    bind(relay.base)
    _calls(tmp_path, relay, out, 4, "outage")
    calls(relay.base, want=4)  # the records are committed, and their events with them
    time.sleep(0.5)  # the sender has failed a few times meanwhile
    relay.proc.kill()  # SIGKILL: no flush, no goodbye
    relay.proc.wait()
    receiver.start()
    try:
        _start(relay_factory, tmp_path, out, conf)  # the same store
        got = receiver.wait_for(_complete(4), timeout=60)  # the dead relay's lease lapses first
        receiver.check()
        assert len(_by_call(got)) == 4
        assert all(t == CALL_ORDER for t in _by_call(got).values())
    finally:
        receiver.stop()


def test_kill_minus_9_right_after_calls_end_loses_no_event(relay_factory: Any,
                                                          tmp_path: Path) -> None:
    """The relay is killed the moment the calls' last events are made, before the
    record writer's next commit (50-200 ms later): the journal had the events and their
    records on disk, and the restarted relay delivers every one and keeps the records."""
    out = udp_port()
    receiver = Receiver(free_port(), SECRET)  # down until the restart
    conf = _config(tmp_path, receiver, lease_ttl=LEASE)
    relay = _start(relay_factory, tmp_path, out, conf)
    bind(relay.base)
    n = 6
    uas = callee(tmp_path, out, name="kill-uas", extra=["-m", str(n)])
    uac = caller(tmp_path, relay.sip_port, name="kill-uac",
                 extra=["-m", str(n), "-d", "100", "-r", "20", "-l", str(n)])
    uas.start()
    uac.start()
    # call.ended is made once the call's media is released (its recording finished),
    # a moment after its BYE: kill as soon as the journal has had all of them, well
    # before the record writer's commit (which lingers 50 ms for company).
    journal = tmp_path / "relay.db-events"
    deadline = time.monotonic() + 30
    seen: dict[str, int] = {}  # segment -> its call.ended (a committed one is deleted)
    while sum(seen.values()) < n:
        assert time.monotonic() < deadline, "the calls' ends never reached the journal"
        for p in journal.glob("events-*.jnl"):
            with contextlib.suppress(FileNotFoundError):
                # Entry headers only (`[id,"call.ended",key,...]`), not the bodies.
                ended = p.read_bytes().count(b'","call.ended","')
                seen[p.name] = max(seen.get(p.name, 0), ended)
        time.sleep(0.002)
    relay.proc.kill()
    relay.proc.wait()
    uac.stop()  # its last BYE's 200 OK may have died with the relay
    uas.stop()
    receiver.start()
    try:
        again = _start(relay_factory, tmp_path, out, conf)
        got = receiver.wait_for(_complete(n), timeout=60)
        receiver.check()
        assert len(_by_call(got)) == n
        assert all(t == CALL_ORDER for t in _by_call(got).values())
        assert len(calls(again.base, want=n)) == n  # the records came back too
    finally:
        receiver.stop()


def test_sms_webhook_is_durable_across_an_outage_and_kill_minus_9(relay_factory: Any,
                                                                   tmp_path: Path) -> None:
    """The SMS webhook route rides the same outbox and sender as events: a message
    accepted while the webhook is down survives a `kill -9` and is posted, signed, with
    its id as Idempotency-Key, once the relay is back and the webhook is up; its record
    then says `forwarded` (it was `queued` when the relay died)."""
    import sqlite3

    from sms_helpers import A as SMS_A
    from sms_helpers import B as SMS_B
    from sms_helpers import X as SMS_X
    from sms_helpers import http, make_binding

    hook = Receiver(free_port(), "sms-secret")  # down until the restart
    conf = tmp_path / "relay.toml"
    conf.write_text(f'[sms]\nroute = "webhook"\nwebhook_url = "{hook.url}"\n'
                    'webhook_secret = "sms-secret"\nwebhook_backoff = 0.1\n'
                    f"[events]\nlease_ttl = {LEASE}\n")
    store = f"sqlite:///{tmp_path}/relay.db"
    relay = relay_factory(store, ["--config", str(conf)], "sms")
    make_binding(relay.base, x=SMS_X, a=SMS_A, b=SMS_B)
    status, body = http("POST", f"{relay.base}/v1/sms",
                        {"from": SMS_B, "to": SMS_X, "text": "still there?"})
    assert status == 202, body
    deadline = time.monotonic() + 10
    while True:  # in the store's queue and its record on disk (not only in memory)
        with sqlite3.connect(tmp_path / "relay.db", timeout=10) as db:
            queued = db.execute("SELECT count(*) FROM sms_outbox WHERE id = ?",
                                (body["id"],)).fetchone()[0]
            row = db.execute("SELECT doc FROM records WHERE kind = 'message' AND id = ?",
                             (body["id"],)).fetchone()
        if queued and row:
            break
        assert time.monotonic() < deadline, "the message never reached the store"
        time.sleep(0.05)
    assert json.loads(row[0])["status"] == "queued"
    relay.proc.kill()
    relay.proc.wait()
    hook.start()
    try:
        again = relay_factory(store, ["--config", str(conf)], "sms-again")
        got = hook.wait_for(lambda g: any(d["id"] == body["id"] for d in g), timeout=60)
        hook.check()
        (msg,) = {d["id"]: d for d in got}.values()
        assert msg["from"] == SMS_X and msg["to"] == SMS_A and msg["text"] == "still there?"
        assert SMS_B not in json.dumps(msg)
        deadline = time.monotonic() + 10
        while True:
            status, rec = http("GET", f"{again.base}/v1/messages/{body['id']}")
            if status == 200 and rec["status"] != "queued":
                break
            assert time.monotonic() < deadline, f"still {rec}"
            time.sleep(0.05)
        assert rec["status"] == "forwarded" and rec["forwarded_at"], rec
    finally:
        hook.stop()
