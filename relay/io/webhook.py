"""Outbound SMS webhook: POST each forwarded message as JSON, signed, retried.

Every request carries `Idempotency-Key: <message id>` (the same on every retry, so a
receiver that saw the first attempt can drop the repeat) and
`X-Relay-Signature: sha256=<hex HMAC-SHA256 of the exact body with the shared secret>`.
Transient failures (connection errors, timeouts, 408, 425, 429, 5xx) are retried with
capped exponential backoff; any other 4xx is final (the receiver understood and said no).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

__all__ = ["SIGNATURE_HEADER", "WebhookSender", "sign"]

log = logging.getLogger("relay.sms.webhook")

SIGNATURE_HEADER = "X-Relay-Signature"
_RETRY_STATUS = frozenset({408, 425, 429})

# (message id, delivered?, last HTTP status or None, attempts)
ResultHook = Callable[[str, bool, int | None, int], None]


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Posts messages to one URL with at most `concurrency` requests in flight."""

    def __init__(
        self, url: str, secret: str, *, on_result: ResultHook | None = None,
        retries: int = 5, backoff: float = 0.5, backoff_max: float = 30.0,
        timeout: float = 10.0, concurrency: int = 32,
    ) -> None:
        self.url = url
        self.secret = secret
        self.on_result = on_result
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        """Open the HTTP client session."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "privacy-relay"})

    async def stop(self, grace: float = 5.0) -> None:
        """Give queued deliveries `grace` seconds, cancel the rest, close the session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def submit(self, key: str, payload: dict[str, Any]) -> None:
        """Queue one delivery (non-blocking); `key` is the Idempotency-Key."""
        task = asyncio.get_running_loop().create_task(self._deliver(key, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   SIGNATURE_HEADER: sign(self.secret, body)}
        delay = self.backoff
        status: int | None = None
        attempt = 0
        ok = False
        for attempt in range(1, self.retries + 2):  # the first try plus `retries`
            status = await self._attempt(body, headers)
            if status is not None and 200 <= status < 300:
                ok = True
                break
            if status is not None and 400 <= status < 500 and status not in _RETRY_STATUS:
                break
            if attempt <= self.retries:
                log.info("webhook attempt %d for %s failed (%s); retry in %.1fs",
                         attempt, key, status, delay)
                await asyncio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("webhook gave up on %s after %d attempt(s), last status %s",
                        key, attempt, status)
        if self.on_result is not None:
            self.on_result(key, ok, status, attempt)

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> int | None:
        assert self._session is not None, "start() first"
        async with self._sem:
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    await resp.read()
                    return resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook %s: %s", self.url, exc)
                return None
