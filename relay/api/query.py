"""Query-string parsing shared by the list endpoints, and the record lists themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from dialplan.numbers import InvalidNumber, normalise

from ..errors import BadRequest

__all__ = ["UnknownParameter", "check_params", "list_records", "query_limit", "query_number",
           "query_time"]


class UnknownParameter(BadRequest):
    status = 400
    code = "unknown_parameter"


def check_params(request: web.Request, allowed: frozenset[str]) -> None:
    """A list endpoint answers 400 naming any query parameter it does not know: a typo
    (`?staus=frozen`) must not quietly return everything."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise UnknownParameter(
            "unknown query parameter" + ("s " if len(unknown) > 1 else " ")
            + ", ".join(unknown) + "; known: " + ", ".join(sorted(allowed)))


_RECORD_PARAMS = frozenset({"x", "binding", "out_id", "since", "until", "cursor", "limit"})


def query_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000")
    return int(raw)


def query_number(request: web.Request, name: str, default_cc: str) -> str | None:
    """An E.164 number from the query string (national with the default country code)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return normalise(raw, default_cc)
    except InvalidNumber as exc:
        raise BadRequest(f"{name}: {exc}", "invalid_number") from None


def query_time(request: web.Request, name: str) -> float | None:
    """UNIX seconds, ISO 8601 (a trailing Z means UTC; naive means UTC) or an age
    (`30m`, `24h`, `7d`): the one time format of the API, the CLI and the page."""
    from ..cli_ops import parse_when

    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_when(raw)
    except ValueError:
        raise BadRequest(f"{name} must be UNIX seconds, ISO 8601 or an age "
                         "(30m, 24h, 7d)") from None


async def list_records(request: web.Request, kind: str, key: str,
                       view: Callable[[dict[str, Any], str], dict[str, Any]]) -> web.Response:
    """`GET /v1/calls` and `GET /v1/messages`: newest first, filtered, paged, masked."""
    from .app import NODE, ROLE

    check_params(request, _RECORD_PARAMS)
    node = request.app[NODE]
    q = request.query
    try:
        found, nxt = await node.records.query(
            kind, x=query_number(request, "x", node.config.default_cc),
            binding=q.get("binding"), out_id=q.get("out_id"),
            since=query_time(request, "since"), until=query_time(request, "until"),
            cursor=q.get("cursor"), limit=query_limit(request))
    except ValueError as exc:  # a cursor this API never gave out
        raise BadRequest(str(exc)) from None
    body: dict[str, Any] = {key: [view(r, request[ROLE]) for r in found]}
    if nxt:
        body["next"] = nxt
    return web.json_response(body)
