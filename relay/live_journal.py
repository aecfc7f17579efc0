"""The journal of live calls (issue 13, crash safety): a call's record exists from its
first answer, even if the node is killed before the call ends.

The call path only puts the call event in a dict (`sink`); a task writes what changed to
a small SQLite table beside the node's data every `flush_every` seconds, on its own
thread, and touches every live row's `seen_at` every `touch_every` seconds. A call that
rings and ends between two flushes never reaches the disk. When the node starts again,
`close_crashed` turns every row left behind into a call record with `end_reason: crash`:
the end time is the last packet of its recording (the spool the media backend finished
at start) or, unrecorded, the last time the journal saw it live; the recording is
linked. A record already in the store (the call ended, only the row's removal was
lost) is left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .b2bua.events import CallAnswered, CallEnded, CallRefused, CallRinging

if TYPE_CHECKING:
    from .records import RecordStore

__all__ = ["LiveJournal", "crash_record"]

log = logging.getLogger("relay.records")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_calls(
    id TEXT PRIMARY KEY, doc TEXT NOT NULL, seen_at REAL NOT NULL);
"""
_PARTIES = ("x", "binding", "out_id", "direction", "caller", "callee")
Sink = Callable[[Any], None]


class LiveJournal:
    """Calls in progress on this node, in a local SQLite table written in batches."""

    def __init__(self, path: Path | str, flush_every: float = 0.2,
                 touch_every: float = 2.0) -> None:
        self.path = Path(path)
        self.flush_every = flush_every
        self.touch_every = touch_every
        self._live: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, dict[str, Any] | None] = {}  # id -> doc, or None: remove
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-journal")
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    # -- the call path: a dict update, nothing more --------------------------------------

    def sink(self, then: Sink | None) -> Sink:
        """The call-event sink for the SIP adapter: note the event, then pass it on."""
        def on_event(ev: Any) -> None:
            self.note(ev)
            if then is not None:
                then(ev)
        return on_event

    def note(self, ev: Any) -> None:
        t = type(ev)
        if t is CallRinging or t is CallAnswered:
            doc = self._live.get(ev.call_id)
            caller_invite, callee_invite = ev.invite_at
            if doc is None:
                # The call started with the caller's INVITE (the record's started_at).
                start = caller_invite / 1000 if caller_invite is not None else ev.at
                doc = self._live[ev.call_id] = {"id": ev.call_id, "started_at": start}
            for name in _PARTIES:
                if getattr(ev, name) is not None:
                    doc[name] = getattr(ev, name)
            if caller_invite is not None or callee_invite is not None:
                doc["invite_at"] = [caller_invite, callee_invite]
            doc.setdefault("ring_at" if t is CallRinging else "answer_at", ev.at)
            self._dirty[ev.call_id] = dict(doc)
        elif (t is CallEnded or t is CallRefused) \
                and self._live.pop(ev.call_id, None) is not None:
            self._dirty[ev.call_id] = None

    def __len__(self) -> int:
        return len(self._live)

    # -- the writer ------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _write(self, batch: dict[str, dict[str, Any] | None], touch: bool, now: float) -> None:
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO live_calls(id, doc, seen_at) VALUES(?,?,?) ON CONFLICT"
                           "(id) DO UPDATE SET doc=excluded.doc, seen_at=excluded.seen_at",
                           [(k, json.dumps(d), now) for k, d in batch.items() if d is not None])
            db.executemany("DELETE FROM live_calls WHERE id = ?",
                           [(k,) for k, d in batch.items() if d is None])
            if touch:
                db.execute("UPDATE live_calls SET seen_at = ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def flush(self, touch: bool = False) -> None:
        batch, self._dirty = self._dirty, {}
        if not batch and not touch:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._pool, self._write, batch, touch, time.time())
        except sqlite3.Error:
            self.failures += 1
            log.exception("live-call journal write failed; will retry")
            for k, d in batch.items():  # keep what failed unless newer news came meanwhile
                self._dirty.setdefault(k, d)

    async def _run(self) -> None:
        last_touch = time.monotonic()
        while True:
            await asyncio.sleep(self.flush_every)
            touch = bool(self._live) and time.monotonic() - last_touch >= self.touch_every
            if touch:
                last_touch = time.monotonic()
            await self.flush(touch)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-journal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._pool, db.close)
        self._pool.shutdown(wait=False)

    # -- after a crash ---------------------------------------------------------------------

    def _left_behind(self) -> list[tuple[dict[str, Any], float]]:
        rows = self._open().execute("SELECT doc, seen_at FROM live_calls").fetchall()
        return [(json.loads(doc), seen) for doc, seen in rows]

    def _forget(self, ids: list[str]) -> None:
        self._open().executemany("DELETE FROM live_calls WHERE id = ?", [(i,) for i in ids])

    async def close_crashed(self, records: RecordStore, recordings: Path | str,
                            announce: Sink | None = None) -> int:
        """Write a crash record for every call the last run left live; returns how many.
        Run at start, after the media backend finished the spools the crash left.
        `announce` (the events hub's sink) hears a CallEnded for each, after its record
        is stored, so webhooks get `call.ended` with `end_reason: crash`."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._pool, self._left_behind)
        if not rows:
            return 0
        out = []
        for doc, seen_at in rows:
            if await records.get("call", doc["id"]) is not None:
                continue  # it ended and was recorded; only its row outlived the crash
            meta = await loop.run_in_executor(None, _recording_meta, Path(recordings), doc)
            out.append(crash_record(doc, seen_at, meta))
        if out:
            await records.put_many("call", out)
            for rec in out:
                if announce is not None:
                    announce(CallEnded(rec["id"], time.time(), rec))
        await loop.run_in_executor(self._pool, self._forget, [d["id"] for d, _ in rows])
        log.warning("closed %d call record(s) left open by a crash (end_reason crash)",
                    len(out))
        return len(out)


def _recording_meta(root: Path, doc: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The finished recording's folder and meta.json of a journaled call, if any."""
    from recordings.finish import call_dir

    for day_shift in (0, -86400, 86400):
        try:
            folder = call_dir(root, doc["id"], float(doc["started_at"]) + day_shift)
        except ValueError:
            return None
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("files"):
                return folder, meta
    return None


def crash_record(doc: dict[str, Any], seen_at: float,
                 meta: tuple[Path, dict[str, Any]] | None) -> dict[str, Any]:
    """The call record of a call a crash ended: `end_reason` crash, released by the
    relay, the end from the recording's last packet (else the journal's last sight)."""
    recording = None
    end_ms = int(seen_at * 1000)
    started_at = float(doc["started_at"])
    if meta is not None:
        folder, m = meta
        files = m["files"]
        recording = {name: {"path": str(folder / f"{name}.wav"), **f}
                     for name, f in files.items()}
        end_ms = max(int(f["record_start_at"]) + int(f["duration_ms"])
                     for f in files.values())
        if not doc.get("invite_at"):  # else the journal's start (the INVITE) is the call's
            started_at = float(m.get("started_at") or started_at)
    ring = int(doc["ring_at"] * 1000) if doc.get("ring_at") else None
    answer = int(doc["answer_at"] * 1000) if doc.get("answer_at") else None
    end_ms = max(end_ms, answer or 0, ring or 0)
    leg = {"invite_at": None, "ring_at": ring, "answer_at": answer, "end_at": end_ms,
           "sip_code": 200 if answer else None}
    caller_invite, callee_invite = (doc.get("invite_at") or [None, None])[:2]
    return {
        "id": doc["id"], "started_at": started_at,
        **{name: doc.get(name) for name in _PARTIES},
        "legs": {"caller": {**leg, "invite_at": caller_invite},
                 "callee": {**leg, "invite_at": callee_invite}},
        "sip_code": 200 if answer else None, "cause": None, "released_by": "relay",
        "end_reason": "crash", "unconnected_cause": "none" if answer else "error",
        "policy_reason": None, "duration_ms": end_ms - answer if answer else 0,
        "recording": recording,
    }
