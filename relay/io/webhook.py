"""The one webhook sender: signed POSTs, a retry policy, and the SMS route built on them.

Every request carries `Idempotency-Key: <id>` (the same on every retry, so a receiver
that saw the first attempt can drop the repeat) and `X-Relay-Signature: sha256=<hex
HMAC-SHA256 of the exact body with the shared secret>`. `WebhookClient.post` makes one
attempt and reports what happened (`Attempt`); `RetryPolicy` (pure) says whether and
when to try again: connection errors, timeouts, 408, 425, 429 and 5xx are transient,
retried with capped exponential backoff, and a `Retry-After` (RFC 9110 §10.2.3: seconds
or an HTTP date) is honoured when it asks for longer. Two users share them: the events
outbox (`relay.events.sender`, durable, never gives up) and the SMS webhook route
(`WebhookSender`). Given the store (`store=`, as the relay does), the SMS route uses
the same durable outbox and sender, in a queue of its own (`sms_outbox` in SQLite,
`{relay}:sms:outbox` in Redis): a message is retried until the receiver takes it, across
restarts and a `kill -9`, and only a final 4xx gives up. Without a store it keeps
its retries in memory and gives up after `retries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = [
    "SIGNATURE_HEADER", "Attempt", "RetryPolicy", "WebhookClient", "WebhookSender",
    "parse_retry_after", "sign",
]

log = logging.getLogger("relay.webhook")

SIGNATURE_HEADER = "X-Relay-Signature"
_RETRY_STATUS = frozenset({408, 425, 429})

# (message id, delivered?, last HTTP status or None, attempts)
ResultHook = Callable[[str, bool, int | None, int], None]


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST's outcome: the status (None: no answer) and any Retry-After (seconds)."""

    status: int | None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again. `final_4xx`: a 4xx other than 408/425/429 ends the attempts
    (the receiver understood and said no); off, every failure is retried."""

    backoff: float = 0.5
    backoff_max: float = 30.0
    final_4xx: bool = True
    retry_after_max: float = 3600.0

    def retryable(self, attempt: Attempt) -> bool:
        """Whether a failed attempt may be repeated."""
        s = attempt.status
        if s is None or s >= 500 or s in _RETRY_STATUS:
            return True
        return not (self.final_4xx and 400 <= s < 500)

    def delay(self, failures: int, attempt: Attempt) -> float:
        """Seconds before the next try after `failures` failed attempts (1 or more)."""
        wait = min(self.backoff_max, self.backoff * 2 ** min(failures - 1, 30))
        if attempt.retry_after is not None:
            # The receiver knows its own outage: wait at least that long (bounded,
            # so a typo of a year does not park the queue for a year).
            wait = max(wait, min(attempt.retry_after, self.retry_after_max))
        return wait


class WebhookClient:
    """Posts signed bodies to one URL with at most `concurrency` requests in flight."""

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0,
                 concurrency: int = 32) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client session."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "privacy-relay"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, key: str, body: bytes) -> Attempt:
        """One attempt: POST `body` (JSON) signed, with `Idempotency-Key: key`."""
        assert self._session is not None, "start() first"
        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   SIGNATURE_HEADER: sign(self.secret, body)}
        async with self._sem:
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    await resp.read()
                    return Attempt(resp.status, parse_retry_after(
                        resp.headers.get("Retry-After"), time.time()))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook %s: %s", self.url, exc)
                return Attempt(None)


class WebhookSender:
    """The SMS webhook route: each message posted, retried until taken (durable, with a
    `store`) or in memory up to `retries`; a final 4xx gives up (its record then says
    `failed`: an undelivered SMS is the sender's to know about)."""

    def __init__(
        self, url: str, secret: str, *, on_result: ResultHook | None = None,
        retries: int = 5, backoff: float = 0.5, backoff_max: float = 30.0,
        timeout: float = 10.0, concurrency: int = 32, store: str | None = None,
        lease_ttl: float = 10.0,
    ) -> None:
        self.client = WebhookClient(url, secret, timeout=timeout, concurrency=concurrency)
        self.policy = RetryPolicy(backoff=backoff, backoff_max=backoff_max)
        self.on_result = on_result
        self.retries = retries
        self.store = store
        self.lease_ttl = lease_ttl  # the durable sender's outbox lease ([events] lease_ttl)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0
        self._outbox: Any = None  # relay.events.outbox.Outbox, with a store
        self._sender: Any = None  # relay.events.sender.OutboxSender
        self._queue: list[Any] = []  # Events waiting for the outbox
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the HTTP client session (and, with a store, the outbox and its sender)."""
        await self.client.start()
        if self.store:
            # Imported here: relay.events imports this module.
            from relay.events.outbox import open_outbox
            from relay.events.sender import OutboxSender

            self._outbox = open_outbox(self.store, "sms")
            await self._outbox.open()
            self._sender = OutboxSender(self._outbox, self.client, self.policy,
                                        lease_ttl=self.lease_ttl, on_settled=self._settled)
            self._sender.start()
            self._flusher = asyncio.create_task(self._flush_loop(), name="sms-webhook")

    def _settled(self, row: Any, result: Attempt) -> None:
        if result.ok:
            self.sent += 1
        else:
            self.failed += 1
        if self.on_result is not None:
            self.on_result(row.id, result.ok, result.status, row.attempts + 1)

    async def _flush_loop(self) -> None:
        from relay.bindings.store import StoreUnavailable

        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except StoreUnavailable as exc:
                log.warning("sms webhook: %d messages wait for the store: %s",
                            len(self._queue), exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _flush(self) -> None:
        batch = list(self._queue)
        if batch:
            await self._outbox.put(batch)
            del self._queue[:len(batch)]
            self._sender.wake()

    async def stop(self, grace: float = 5.0) -> None:
        """Give queued deliveries `grace` seconds, cancel the rest, close the session
        (durable: what is undelivered waits in the outbox for the next start)."""
        if self._outbox is not None:
            from relay.bindings.store import StoreUnavailable

            if self._flusher is not None:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            try:
                await self._flush()
            except StoreUnavailable as exc:
                log.error("sms webhook: %d messages lost at stop: %s", len(self._queue), exc)
            await self._sender.stop()
            await self.client.close()
            await self._outbox.close()
            return
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.close()

    def submit(self, key: str, payload: dict[str, Any]) -> None:
        """Queue one delivery (non-blocking); `key` is the Idempotency-Key."""
        if self._outbox is not None:
            from relay.events.model import Event

            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            self._queue.append(Event(key, "sms.webhook", key, time.time(), body))
            self._wake.set()
            return
        task = asyncio.get_running_loop().create_task(self._deliver(key, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        result = Attempt(None)
        attempt = 0
        for attempt in range(1, self.retries + 2):  # the first try plus `retries`
            result = await self.client.post(key, body)
            if result.ok or not self.policy.retryable(result):
                break
            if attempt <= self.retries:
                delay = self.policy.delay(attempt, result)
                log.info("webhook attempt %d for %s failed (%s); retry in %.1fs",
                         attempt, key, result.status, delay)
                await asyncio.sleep(delay)
        if result.ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("webhook gave up on %s after %d attempt(s), last status %s",
                        key, attempt, result.status)
        if self.on_result is not None:
            self.on_result(key, result.ok, result.status, attempt)
