"""The decision hook (`[dialplan] hook_url`): the relay POSTs each call and each text
and waits at most `hook_timeout` for `{"action": "allow"}` or `{"action": "refuse"}`.

A call's body is JSON `{"id", "type": "call.route", "at", "call_id", "x", "caller",
"binding", "out_id", "direction", "ext"}`; a text's is `{"id", "type": "sms.route",
"at", "message_id", "x", "caller", "binding", "out_id", "direction"}` (the sender is
the caller): the caller's own number and the binding, never the other party's number.
It is signed as the SMS webhook is (`X-Relay-Signature: sha256=<hex
HMAC-SHA256(secret, raw body)>`), with `Idempotency-Key: <id>`. Anything but a 2xx
with a JSON object whose `action` is "allow" or "refuse" is an error; errors and
timeouts raise `HookError`, and the controller (or the SMS service, `allow_text`)
applies `[dialplan] hook_fallback` and counts it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING, Any

import aiohttp

from .webhook import SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    from relay.app import Node

__all__ = ["DecisionHook", "HookError", "text_hook"]


class HookError(Exception):
    """The hook did not answer allow or refuse in time."""


class DecisionHook:
    """One aiohttp session to the hook; `ask` returns True to allow, False to refuse."""

    def __init__(self, url: str, secret: str, timeout: float,
                 fallback_allow: bool = True) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.fallback_allow = fallback_allow  # for `allow_text`; calls: their settings
        self.errors = 0  # texts decided by the fallback
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, payload: dict[str, Any], type_: str = "call.route") -> bool:
        """POST the call (or text); allow (True) or refuse (False), else HookError."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        hook_id = secrets.token_hex(8)
        body = json.dumps({"id": hook_id, "type": type_, **payload},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": hook_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        try:
            # wait_for runs the request in a task of its own: the adapter may start this
            # job eagerly, outside any task, where timeout context managers refuse to run.
            answer = await asyncio.wait_for(self._post(body, headers), self.timeout)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise HookError(f"hook failed: {exc!r}") from None
        action = answer.get("action") if isinstance(answer, dict) else None
        if action not in ("allow", "refuse"):
            raise HookError(f"hook answered no action: {str(answer)[:80]!r}")
        return action == "allow"

    async def _post(self, body: bytes, headers: dict[str, str]) -> Any:
        assert self._session is not None
        async with self._session.post(self.url, data=body, headers=headers) as r:
            if r.status // 100 != 2:
                raise HookError(f"hook answered HTTP {r.status}")
            return await r.json(content_type=None)

    async def allow_text(self, payload: dict[str, Any]) -> bool:
        """Ask about a text (`sms.route`); an error or a late answer is the fallback,
        counted in `errors`."""
        try:
            return await self.ask(payload, "sms.route")
        except HookError:
            self.errors += 1
            return self.fallback_allow

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def text_hook(node: Node) -> DecisionHook | None:
    """The hook the SMS service asks (None without `[dialplan] hook_url`), its error
    count in the node's metrics."""
    cfg = node.config
    if not cfg.hook_url:
        return None
    hook = DecisionHook(cfg.hook_url, cfg.hook_secret, cfg.hook_timeout,
                        fallback_allow=cfg.hook_fallback == "allow")
    node.metrics.counter_from("relay_sms_hook_errors_total",
                              "texts whose decision hook failed or was late (fallback applied)",
                              lambda: float(hook.errors))
    return hook
