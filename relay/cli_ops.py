"""What the operator verbs share beyond one store: one time format for `--since` and
`--until`, CSV output, and the remote mode (`--url/--token`) that runs a verb against a
node's HTTP API instead of a store (the only way to see or end the calls in progress).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from .errors import RelayError

__all__ = ["ApiError", "RemoteApi", "parse_when", "to_csv"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
WHEN_HELP = "UNIX seconds, ISO 8601 (UTC unless a zone is given) or an age: 30m, 24h, 7d"


def parse_when(text: str, now: float | None = None, *, ahead: bool = False) -> float:
    """One time format for every verb: UNIX seconds, ISO 8601, or `30m`/`24h`/`7d`
    (that long ago; with `ahead`, from now on: a blocklist entry's end)."""
    now = time.time() if now is None else now
    raw = text.strip()
    m = _RELATIVE.match(raw)
    if m:
        span = float(m.group(1)) * _UNIT[m.group(2)]
        return now + span if ahead else now - span
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: use {WHEN_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso(ts: float) -> str:
    """ISO 8601 UTC with milliseconds (what the API takes and gives)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def to_csv(rows: list[dict[str, Any]], cols: tuple[str, ...] | list[str]) -> str:
    """RFC 4180 CSV with a header line; nested values as JSON."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else
                    json.dumps(r[c]) if isinstance(r.get(c), dict | list) else r[c]
                    for c in cols])
    return buf.getvalue()


class ApiError(RelayError):
    """An error answer of the remote API, with its code and detail."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code)
        self.status = status


class RemoteApi:
    """A node's HTTP API (`--url`), with a bearer token (`--token`) when given."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, query: dict[str, Any] | None = None,
             body: Any = None) -> Any:
        """One request; the decoded JSON answer, or ApiError naming the API's error."""
        q = {k: str(v) for k, v in (query or {}).items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(q) if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
                raise ApiError(exc.code, str(err.get("error")), str(err.get("detail"))) \
                    from None
            except (ValueError, AttributeError):
                raise ApiError(exc.code, "http_error", f"HTTP {exc.code} from {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"{self.base}: {reason}") from None
        return json.loads(raw) if raw else None
