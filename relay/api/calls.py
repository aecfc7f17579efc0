"""`GET /v1/calls` and `GET /v1/calls/{id}`: call records, numbers masked for `ops`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import NotFound
from ..events.records import CallRecord
from .app import NODE, ROLE
from .openapi import add_paths
from .query import list_records

__all__ = ["add_call_routes", "call_view"]


def call_view(rec: dict[str, Any], role: str) -> dict[str, Any]:
    """A stored call record in the API's form (`CallRecord.to_json`: every time ISO 8601
    UTC with ms); caller and callee masked unless admin. X is never masked."""
    return CallRecord.from_doc(rec).to_json(real_numbers=role == "admin")


async def list_calls(request: web.Request) -> web.Response:
    return await list_records(request, "call", "calls", call_view)


async def get_call(request: web.Request) -> web.Response:
    node = request.app[NODE]
    rec = await node.records.get("call", request.match_info["id"])
    if rec is None:
        raise NotFound("no such call")
    return web.json_response(call_view(rec, request[ROLE]))


_CALL = {"type": "object", "description": "A call record (every time ISO 8601 UTC with "
         "milliseconds): started_at; legs with invite_at, ring_at, answer_at, end_at and "
         "sip_code; sip_code, cause (Q.850), released_by, "
         "end_reason (why the relay ended it: max_duration, frozen, drain, media_timeout, "
         "session_expired, media, no_extension, no_answer; null otherwise), "
         "unconnected_cause (none, "
         "no_binding, frozen, stranger, policy, untrusted, error, no_extension), "
         "policy_reason (the policy rule that refused it: quiet_hours, direction, blocked, "
         "frequency, score, hook; null otherwise), recording "
         "files (size, sha256, duration_ms, record_start_at); AXE calls add ext, and when "
         "the relay collected it by digits ivr_start_at and ivr_end_at; prompts lists "
         "the prompts the relay played"}


def add_call_routes(app: web.Application) -> None:
    """Add the call routes and document them in the OpenAPI document."""
    app.router.add_route("GET", "/v1/calls", list_calls)
    app.router.add_route("GET", "/v1/calls/{id}", get_call)
    q = [{"name": n, "in": "query", "schema": {"type": "string"}, "description": d}
         for n, d in (("x", "virtual number"), ("binding", "binding id"),
                      ("out_id", "platform reference"),
                      ("since", "UNIX seconds or ISO 8601"), ("until", "UNIX seconds or ISO 8601"),
                      ("cursor", "from `next`"), ("limit", "1-1000"))]
    add_paths({
        "/v1/calls": {"get": {
            "summary": "Call records, newest first", "parameters": q,
            "responses": {"200": {"description": '{"calls": [...], "next": cursor}',
                                  "content": {"application/json": {"schema": {
                                      "type": "object", "properties": {
                                          "calls": {"type": "array", "items": _CALL},
                                          "next": {"type": "string"}}}}}}}}},
        "/v1/calls/{id}": {"get": {
            "summary": "One call record",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the call",
                                  "content": {"application/json": {"schema": _CALL}}},
                          "404": {"description": "no such call"}}}},
    })
