"""Events on Redis: the outbox in Redis, the webhook, and the capped stream read through a
consumer group while Redis restarts; SMS events from the HTTP path."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from event_receiver import Receiver
from sipp_harness import A, B, X, bind, callee, caller, relay_args, udp_port

pytestmark = pytest.mark.integration
SECRET = "hook-secret-0123456789"
CALL_ORDER = ["call.ringing", "call.answered", "call.ended", "recording.ready"]


def _calls(tmp_path: Path, relay: Any, out: int, n: int, name: str) -> None:
    uas = callee(tmp_path, out, name=f"{name}-uas", extra=["-m", str(n)])
    uac = caller(tmp_path, relay.sip_port, name=f"{name}-uac",
                 extra=["-m", str(n), "-d", "200", "-r", "10"])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()


def _read_group(r: Any, seen: dict[str, dict[str, Any]]) -> None:
    """Everything new for consumer c1 of group g1, acknowledged."""
    while True:
        got = r.xreadgroup("g1", "c1", {"{relay}:events": ">"}, count=100, block=200)
        if not got:
            return
        for _stream, entries in got:
            for entry_id, fields in entries:
                doc = json.loads(fields[b"body"])
                assert fields[b"id"].decode() == doc["id"]
                seen[doc["id"]] = doc
                r.xack("{relay}:events", "g1", entry_id)


def _per_call(events: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        if "call_id" in e:
            out.setdefault(e["call_id"], []).append(e["type"])
    return out


def test_redis_outbox_stream_and_sms_events(relay_factory: Any, redis_server: Any,
                                            tmp_path: Path) -> None:
    import redis

    r = redis.Redis(port=redis_server.port)
    r.xgroup_create("{relay}:events", "g1", id="$", mkstream=True)
    receiver = Receiver(free_port(), SECRET)
    receiver.start()
    sms_hook = Receiver(free_port(), "sms-secret")
    sms_hook.start()
    conf = tmp_path / "relay.toml"
    conf.write_text(f'[events]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
                    "backoff = 0.1\nbackoff_max = 0.5\n"
                    f'[sms]\nroute = "webhook"\nwebhook_url = "{sms_hook.url}"\n'
                    'webhook_secret = "sms-secret"\n')
    out = udp_port()
    try:
        relay = relay_factory(redis_server.url, relay_args(out, tmp_path, "--config", str(conf)))
        bind(relay.base)
        _calls(tmp_path, relay, out, 2, "before")
        req = urllib.request.Request(relay.base + "/v1/sms", method="POST", data=json.dumps(
            {"from": B, "to": X, "text": "hi"}).encode())
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 202
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen) < 9:
            _read_group(r, seen)
        assert len(seen) == 9, [e["type"] for e in seen.values()]
        redis_server.stop()  # the stream, the group and its offset are in the AOF
        time.sleep(0.5)
        redis_server.start()
        r = redis.Redis(port=redis_server.port)
        _calls(tmp_path, relay, out, 2, "after")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 17:
            _read_group(r, seen)
        per_call = _per_call(seen.values())
        assert len(per_call) == 4 and all(sorted(t) == sorted(CALL_ORDER)
                                          for t in per_call.values())
        sms = [e for e in seen.values() if e["type"].startswith("sms.")]
        assert [e["type"] for e in sms] == ["sms.forwarded"]
        assert sms[0]["sender"] == "+86139****4444" and A not in json.dumps(sms[0])
        # The webhook got the same events, in order per call, from the Redis outbox.
        got = receiver.wait_for(lambda g: len({e["id"] for e in g}) >= 17)
        receiver.check()
        assert {e["id"] for e in got} == set(seen)
        ordered = _per_call({e["id"]: e for e in got}.values())
        assert all(t == CALL_ORDER for t in ordered.values())
        assert r.zcard("{relay}:outbox") == 0 and r.hlen("{relay}:outbox:ev") == 0
    finally:
        receiver.stop()
        sms_hook.stop()


def test_stream_only_without_a_webhook(relay_factory: Any, redis_server: Any,
                                       tmp_path: Path) -> None:
    """`[events] stream = true` and no url: every event reaches the stream for a
    consumer group, and the outbox does not keep them (no webhook will ever take them)."""
    import redis

    r = redis.Redis(port=redis_server.port)
    r.xgroup_create("{relay}:events", "g1", id="$", mkstream=True)
    conf = tmp_path / "relay.toml"
    conf.write_text("[events]\nstream = true\n")
    out = udp_port()
    relay = relay_factory(redis_server.url, relay_args(out, tmp_path, "--config", str(conf)))
    bind(relay.base)
    _calls(tmp_path, relay, out, 2, "stream")
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < 8:
        _read_group(r, seen)
    per_call = _per_call(seen.values())
    assert len(per_call) == 2 and all(sorted(t) == sorted(CALL_ORDER)
                                      for t in per_call.values())
    deadline = time.monotonic() + 20
    while r.zcard("{relay}:outbox") or r.hlen("{relay}:outbox:ev"):
        assert time.monotonic() < deadline, "the outbox kept stream-only events"
        time.sleep(0.1)
