"""Events: retry policy, the builder (masking, statuses once), the SQLite outbox (heads
per key, lease) written in the records' transaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recordings.links import LinkSigner, LinkVerdict
from relay.b2bua.events import CallAnswered, CallEnded, CallRinging
from relay.events.build import EventBuilder, LinkSpec
from relay.events.model import make_event
from relay.events.outbox import SqliteOutbox
from relay.io.webhook import Attempt, RetryPolicy, parse_retry_after
from relay.records import RecordWriter, SqliteRecordStore

A, B, X = "+8613811112222", "+8613933334444", "+8617055556666"


def test_retry_policy_backoff_and_retry_after() -> None:
    p = RetryPolicy(backoff=1.0, backoff_max=8.0)
    assert [p.delay(n, Attempt(503)) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 8]
    assert p.delay(1, Attempt(429, retry_after=30.0)) == 30.0  # the receiver asked
    assert p.delay(5, Attempt(503, retry_after=0.5)) == 8.0  # never shorter than backoff
    assert p.delay(1, Attempt(503, retry_after=10**9)) == 3600.0  # bounded
    assert p.retryable(Attempt(None)) and p.retryable(Attempt(429))
    assert p.retryable(Attempt(503)) and not p.retryable(Attempt(400))
    assert RetryPolicy(final_4xx=False).retryable(Attempt(401))


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", 0.0) == 120.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 40.0) == 0.0
    for bad in (None, "", "soon", "-5", "1.5"):
        assert parse_retry_after(bad, 0.0) is None


def _ended(recording: dict[str, object] | None = None) -> CallEnded:
    rec = {"id": "c1", "started_at": 100.0, "x": X, "binding": "b1", "out_id": "o1",
           "caller": A, "callee": B, "direction": "a_to_b", "sip_code": 200, "cause": 16,
           "released_by": "caller", "end_reason": None, "unconnected_cause": "none",
           "duration_ms": 1000, "recording": recording}
    return CallEnded("c1", 101.5, rec)


def test_builder_masks_by_default_and_signs_recording_links() -> None:
    signer = LinkSigner((b"k" * 16,))
    b = EventBuilder(links=LinkSpec(signer, "http://relay", ttl=60))
    ring, = b.call(CallRinging("c1", 100.5, X, "b1", "o1", "a_to_b", A, B))
    doc = json.loads(ring.body)
    assert doc["type"] == "call.ringing" and doc["at"] == "1970-01-01T00:01:40.500Z"
    assert doc["caller"] == "+86138****2222" and doc["x"] == X and ring.key == "c1"
    files = {"mix": {"path": "/r/mix.wav", "size": 10, "sha256": "ab" * 32,
                     "duration_ms": 5}}
    ended, ready = b.call(_ended(files))
    assert A not in ended.body.decode() and B not in ended.body.decode()
    r = json.loads(ready.body)
    assert r["type"] == "recording.ready" and r["files"]["mix"]["sha256"] == "ab" * 32
    url = r["files"]["mix"]["url"]
    assert url.startswith("http://relay/v1/recordings/c1/mix.wav?expires=161&sig=")
    assert signer.verify("c1", "mix", "161", url.rsplit("=", 1)[1], 160.0) \
        is LinkVerdict.VALID
    real = EventBuilder(real_numbers=True)
    assert json.loads(real.call(CallAnswered("c1", 1.0, X, caller=A))[0].body)["caller"] == A
    assert len(real.call(_ended())) == 1  # no recording: no recording.ready


def test_builder_announces_each_message_status_once() -> None:
    b = EventBuilder()
    rec = {"id": "m1", "status": "received", "x": X, "sender": A, "recipient": B}
    assert b.message(rec, 1.0) == []
    rec["status"] = "forwarded"
    assert [e.type for e in b.message(rec, 2.0)] == ["sms.forwarded"]
    assert b.message(rec, 2.5) == []
    rec["status"] = "delivered"
    assert [e.type for e in b.message(rec, 3.0)] == ["sms.delivered"]
    direct = {"id": "m2", "status": "delivered", "sender": A}
    assert [e.type for e in b.message(direct, 1.0)] == ["sms.forwarded", "sms.delivered"]
    refused = {"id": "m3", "status": "refused", "sender": A, "reason": "frozen"}
    body = json.loads(b.message(refused, 1.0)[0].body)
    assert body["type"] == "sms.refused" and body["sender"] == "+86138****2222"


async def test_outbox_heads_per_key_defer_done_and_lease(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    store = SqliteRecordStore(db)
    await store.open()
    writer = RecordWriter(store, linger=0.0)
    committed: list[int] = []
    writer.on_commit.append(committed.append)
    writer.start()
    evs = [make_event("call.ringing", "c1", 1.0, {}), make_event("call.ringing", "c2", 1.0, {}),
           make_event("call.answered", "c1", 2.0, {}), make_event("call.ended", "c1", 3.0, {})]
    writer.submit("call", {"id": "c1", "started_at": 1.0})
    writer.submit_events(evs)
    await writer.stop()
    assert committed == [4]
    box = SqliteOutbox(db)
    await box.open()
    try:
        heads = await box.due(10.0, 100)
        assert [(r.key, r.type) for r in heads] == [("c1", "call.ringing"),
                                                    ("c2", "call.ringing")]
        await box.defer(heads[0], 503, 20.0)  # c1 waits: its later events wait too
        assert [r.key for r in await box.due(10.0, 100)] == ["c2"]
        await box.done([heads[1].id])
        assert await box.due(10.0, 100) == []
        again = await box.due(20.0, 100)
        assert [(r.type, r.attempts) for r in again] == [("call.ringing", 1)]
        await box.done([again[0].id])
        assert [r.type for r in await box.due(20.0, 100)] == ["call.answered"]
        assert await box.size() == 2
        # Waiting events committed again (a batch retried after a lost answer) add nothing.
        await store.put_batch({}, evs[2:])
        assert await box.size() == 2
        assert await box.acquire("me", 0.0, 10.0)
        assert await box.acquire("me", 5.0, 10.0)
        assert not await box.acquire("other", 14.0, 10.0)
        assert await box.acquire("other", 15.1, 10.0)  # the lease ran out
    finally:
        await box.close()
        await store.close()


def test_unknown_type_refused() -> None:
    with pytest.raises(ValueError):
        make_event("call.exploded", "c1", 0.0, {})


def test_events_settings_checked() -> None:
    from relay.config import ConfigError
    from relay.settings import load_sections

    assert load_sections({}).events.url == ""
    s = load_sections({"events": {"url": "http://h/e", "secret": "s",
                                  "backoff": 2, "real_numbers": True}}).events
    assert s.backoff == 2.0 and s.real_numbers is True
    for bad in ({"url": "http://h/e"}, {"url": "ftp://h", "secret": "s"},
                {"real_numbers": "false"}, {"urls": "x"}, {"backoff": 0},
                {"link_ttl": 0}, {"backoff": "soon"}):
        with pytest.raises(ConfigError):
            load_sections({"events": bad})


def test_binding_frozen_only_on_the_freeze() -> None:
    from relay.bindings.model import Binding, Mode, State

    b = EventBuilder()
    active = Binding("b1", Mode.AXB, X, B, a=A, out_id="o1")
    frozen = active.replace(state=State.FROZEN, frozen_at=5.0, reason="api")
    ev, = b.binding(active, frozen, 5.0)
    doc = json.loads(ev.body)
    assert doc["type"] == "binding.frozen" and ev.key == "b1" and doc["reason"] == "api"
    assert doc["a"] == "+86138****2222" and doc["frozen_at"] == "1970-01-01T00:00:05.000Z"
    assert b.binding(frozen, frozen.replace(version=3), 6.0) == []
    released = frozen.replace(state=State.RELEASED)
    assert b.binding(frozen, released, 7.0) == [] and b.binding(active, active, 1.0) == []
