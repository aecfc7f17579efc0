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
_SECRET = re.compile(r"(?i)\b(sig|token|password|secret)=[^&]*")


def scrub(path_qs: str) -> str:
    """The request target with secrets cut and numbers masked."""
    out = _SECRET.sub(lambda m: m.group(1) + "=...", path_qs)
    return _NUMBER.sub(lambda m: mask("+" + m.group(0).lstrip("+").removeprefix("%2B")
                                      .removeprefix("%2b")) or "", out)


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
