"""API hardening (issue 13): strict JSON bodies, per-token rate limits, and the one
response filter that keeps real numbers away from the `ops` role.

The filter is deliberately deny-by-default: in an answer for `ops`, any E.164 number in
a string (`+` and 7 to 15 digits: the form every number takes once the relay has
normalised it) that is not one of the relay's own numbers (the pool, or the value of an
`x` field: X is never secret) is masked, whichever handler produced it. That covers every
party of every binding, including ones created a moment ago, without an index of
parties; the per-handler masking stays as the first line. Bare digit runs are left
alone: they cannot be told from times and sizes (`?expires=1796673706`) without one.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from dialplan.numbers import mask

from ..errors import BadRequest

__all__ = ["MAX_DEPTH", "NumberFilter", "RateLimiter", "parse_json_body"]

log = logging.getLogger("relay.api")

MAX_DEPTH = 32  # no request of this API nests deeper than 3; 32 leaves room, bounds work
_MAX_INT = 2 ** 63  # beyond this an integer is not a count, a time or a duration


class InvalidJson(BadRequest):
    status = 400
    code = "invalid_json"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf, which no field can hold
        raise InvalidJson(f"number out of range: {text[:24]}")
    return value


def _bounded(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) >= _MAX_INT:
        raise InvalidJson(f"integer out of range: {text[:24]}")
    return value


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON (RFC 8259 section 6)")


def _depth_ok(value: Any) -> bool:
    """Nesting at most MAX_DEPTH, checked without recursion."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            if d > MAX_DEPTH:
                return False
            stack.extend((item, d + 1) for item in v if isinstance(item, dict | list))
    return True


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON, or InvalidJson (400): empty, malformed, not UTF-8,
    nested deeper than MAX_DEPTH, a non-finite number or an integer beyond 64 bits."""
    if not raw:
        raise InvalidJson("a JSON body is required")
    try:
        value = json.loads(raw, parse_float=_finite, parse_int=_bounded,
                           parse_constant=_constant)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("the body is not valid JSON") from None
    if not _depth_ok(value):
        raise InvalidJson(f"the body nests deeper than {MAX_DEPTH} levels")
    return value


class RateLimiter:
    """A token bucket per API token: `rate` requests a second, bursts of `burst`.

    The key is the token itself (a handful are configured, so the table stays small).
    """

    def __init__(self, rates: dict[str, float], burst: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = {role: r for role, r in rates.items() if r > 0}
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill]
        self.limited = 0

    def wait(self, key: str, role: str) -> float:
        """0 when a request may go now (and take its token), else seconds to wait."""
        rate = self.rates.get(role)
        if rate is None:
            return 0.0
        cap = max(rate * self.burst, 1.0)
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [cap, now]
        b[0] = min(cap, b[0] + (now - b[1]) * rate)
        b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        self.limited += 1
        return (1.0 - b[0]) / rate


_PHONE = re.compile(r"(?<![\w+*])\+\d{7,15}(?![\w*])")


class NumberFilter:
    """Masks, in a JSON document, every phone number that is not one of `own`."""

    def __init__(self, own: Callable[[str], bool]) -> None:
        self.own = own
        self.masked = 0

    def _sub(self, m: re.Match[str]) -> str:
        e164 = m.group(0)
        if self.own(e164):
            return e164
        masked = mask(e164) or ""
        self._hits.append(masked)
        return masked

    def _clean(self, v: Any) -> Any:
        if isinstance(v, str):
            return _PHONE.sub(self._sub, v) if len(v) >= 7 else v
        if isinstance(v, dict):  # "x" holds the relay's own number, by contract
            return {self._clean(k): x if k == "x" else self._clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self._clean(x) for x in v]
        return v

    def clean_body(self, body: bytes, where: str) -> bytes | None:
        """The body with real numbers masked, or None when it held none (or is not JSON)."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return None
        self._hits: list[str] = []
        cleaned = self._clean(doc)
        if not self._hits:
            return None
        self.masked += len(self._hits)
        log.warning("response filter: %d real number(s) masked in an ops answer on %s: %s",
                    len(self._hits), where, ", ".join(sorted(set(self._hits))[:5]))
        return json.dumps(cleaned, separators=(",", ":")).encode()
