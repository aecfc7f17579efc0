"""A webhook receiver on loopback for the events tests: records every POST, checks its
signature, and fails on command (503, with or without Retry-After)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Post:
    at: float
    key: str
    body: bytes
    signed_ok: bool
    status: int


@dataclass
class Receiver:
    """Start with `start()`, stop with `stop()` (the port then refuses connections)."""

    port: int
    secret: str
    fail_first: int = 0               # answer 503 to this many POSTs first
    retry_after: str | None = None    # ... with this Retry-After on the first of them
    posts: list[Post] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                want = "sha256=" + hmac.new(owner.secret.encode(), body,
                                            hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(want, self.headers.get("X-Relay-Signature", ""))
                with owner._lock:
                    failing = owner.fail_first > 0
                    first_failure = failing and not any(p.status == 503 for p in owner.posts)
                    if failing:
                        owner.fail_first -= 1
                    status = 503 if failing else 200
                    owner.posts.append(Post(time.time(), self.headers.get(
                        "Idempotency-Key", ""), body, ok, status))
                self.send_response(status)
                if first_failure and owner.retry_after:
                    self.send_header("Retry-After", owner.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def taken(self) -> list[dict[str, Any]]:
        """Bodies the receiver took (2xx), in arrival order, duplicates included."""
        with self._lock:
            return [json.loads(p.body) for p in self.posts if p.status == 200]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.taken()
            if predicate(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"events never arrived; got {[e['type'] for e in self.taken()]}")

    def check(self) -> None:
        """Every POST signed, keyed by its id, and no id with two different bodies."""
        bodies: dict[str, bytes] = {}
        with self._lock:
            posts = list(self.posts)
        for p in posts:
            assert p.signed_ok, p.body
            doc = json.loads(p.body)
            assert p.key == doc["id"]
            assert bodies.setdefault(doc["id"], p.body) == p.body, doc["id"]
