"""The API's access log (logger `relay.access`, INFO): method, path, status, bytes,
time, role and client address, one line a request.

Never logged: the Authorization header (tokens), a signed link's signature, and real
numbers (a path such as /v1/callers/+8613800000001 or a `party=` filter is masked as
the ops role would see it).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from dialplan.numbers import mask

__all__ = ["AccessLogger", "scrub"]

_NUMBER = re.compile(r"(?:\+|%2[bB])?\d{7,15}")
_SECRET = frozenset({"sig", "token", "password", "secret"})
_PLAIN = frozenset({"expires", "since", "until", "cursor", "limit", "ttl"})  # not numbers


def _mask_numbers(text: str) -> str:
    return _NUMBER.sub(lambda m: mask("+" + m.group(0).lstrip("+").removeprefix("%2B")
                                      .removeprefix("%2b")) or "", text)


def scrub(path_qs: str) -> str:
    """The request target with secrets cut and numbers masked."""
    path, sep, query = path_qs.partition("?")
    pairs = []
    for pair in query.split("&") if sep else ():
        key, eq, value = pair.partition("=")
        if key.lower() in _SECRET:
            value = "..."
        elif key.lower() not in _PLAIN:
            value = _mask_numbers(value)
        pairs.append(key + eq + value)
    return _mask_numbers(path) + sep + "&".join(pairs)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger hook: one scrubbed line per request."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        from .app import ROLE

        role = request.get(ROLE, "-") if hasattr(request, "get") else "-"
        fields: dict[str, Any] = {
            "method": request.method, "path": scrub(request.path_qs),
            "status": response.status, "bytes": response.body_length,
            "ms": round(time * 1000, 1), "role": role, "remote": request.remote}
        self.logger.info("%s %s %s %dB %.1fms role=%s from %s", fields["method"],
                         fields["path"], fields["status"], fields["bytes"], fields["ms"],
                         role, fields["remote"], extra={"fields": fields})

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
