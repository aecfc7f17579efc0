"""The per-call decision hook (`[dialplan] hook_url`): the relay POSTs the call and waits
at most `hook_timeout` for `{"action": "allow"}` or `{"action": "refuse"}`.

The body is JSON `{"id", "type": "call.route", "at", "call_id", "x", "caller",
"binding", "out_id", "direction", "ext"}`: the caller's own number and the binding,
never the other party's number. It is signed as the SMS webhook is
(`X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`), with
`Idempotency-Key: <id>`. Anything but a 2xx with a JSON object whose `action` is
"allow" or "refuse" is an error; errors and timeouts raise `HookError`, and the
controller applies `[dialplan] hook_fallback` (and counts it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import aiohttp

from .webhook import SIGNATURE_HEADER, sign

__all__ = ["DecisionHook", "HookError"]


class HookError(Exception):
    """The hook did not answer allow or refuse in time."""


class DecisionHook:
    """One aiohttp session to the hook; `ask` returns True to allow, False to refuse."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def ask(self, payload: dict[str, Any]) -> bool:
        """POST the call; allow (True) or refuse (False), else HookError."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        hook_id = secrets.token_hex(8)
        body = json.dumps({"id": hook_id, "type": "call.route", **payload},
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
