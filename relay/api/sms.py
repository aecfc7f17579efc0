"""SMS over HTTP: `POST /v1/sms` (an HTTP gateway hands a message over) and the message
records, `GET /v1/messages` and `GET /v1/messages/{id}`, masked by role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import BadRequest, NotFound, Unavailable
from ..events.records import MessageRecord, to_iso
from .app import NODE, ROLE, _json
from .openapi import add_paths
from .query import list_records

if TYPE_CHECKING:
    from relay.io.sms_service import SmsService

__all__ = ["message_view", "register_routes"]

KIND = "message"
MAX_TEXT = 255 * 67  # the most a 255-part UCS-2 message can carry


def message_view(rec: dict[str, Any], role: str) -> dict[str, Any]:
    """A stored message record in the API's form (`MessageRecord.to_json`): real numbers
    for admin, masked for ops. X is the relay's own number and is never masked."""
    out = MessageRecord.from_doc(rec).to_json(real_numbers=role == "admin")
    # Issue 17: the ids of a long message's parts (each leads here), and how often a
    # gateway resent the message (refused, or its answer lost) within the retry window.
    if rec.get("part_ids"):
        out["part_ids"] = list(rec["part_ids"])
    if rec.get("retries"):
        out["retries"] = int(rec["retries"])
        out["last_retry_at"] = to_iso(rec.get("last_retry_at"))
    return out


def _service(request: web.Request) -> SmsService:
    svc: SmsService | None = getattr(request.app[NODE], "sms", None)
    if svc is None:
        raise Unavailable("the SMS subsystem is not running", "sms_unavailable")
    return svc


async def post_sms(request: web.Request) -> web.Response:
    """Accept a message: 202 with its id, or the refusal with the mapped status."""
    from relay.sms.router import Reject

    body = await _json(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    fields = {}
    for name in ("from", "to", "text"):
        value = body.get(name)
        if not isinstance(value, str) or (name != "text" and not value):
            raise BadRequest(f"{name} must be a non-empty string")
        fields[name] = value
    if not fields["text"] or len(fields["text"]) > MAX_TEXT:
        raise BadRequest(f"text must have 1 to {MAX_TEXT} characters")
    action, msg_id = await _service(request).accept_http(fields["from"], fields["to"],
                                                         fields["text"])
    if isinstance(action, Reject):
        return web.json_response(
            {"error": action.reason, "detail": f"message refused: {action.reason}",
             "id": msg_id, "command_status": action.command_status},
            status=action.http_status,
            headers=({"Retry-After": str(action.retry_after)}
                     if action.retry_after is not None else None))
    return web.json_response({"id": msg_id, "status": "accepted"}, status=202)


async def list_messages(request: web.Request) -> web.Response:
    """Message records, newest first, filtered by x, binding, out_id and time."""
    return await list_records(request, KIND, "messages", message_view)


async def get_message(request: web.Request) -> web.Response:
    """One message record."""
    node = request.app[NODE]
    msg_id = request.match_info["id"]
    rec = await node.records.get(KIND, msg_id)
    if rec is None:
        # Written in batches (look at the recent ones too), and a part's id leads to its
        # message's record (issue 17: gateways keep the id of each part).
        svc = node.sms
        rec = await svc.find(msg_id) if svc is not None else None
    if rec is None:
        raise NotFound(f"no message {msg_id}")
    return web.json_response(message_view(rec, request[ROLE]))


_MSG = {"type": "object", "description": "a message record (numbers masked for ops)"}
_REFUSAL = {"description": "refused: the error is the reason (no_binding 404, frozen or "
                           "expired 410, stranger 403, ...), see relay/sms/SMPP.md"}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/sms": {"post": {
        "summary": "An HTTP gateway hands over a message for X",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["from", "to", "text"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                           "text": {"type": "string"}}}}}},
        "responses": {"202": {"description": "accepted; forwarded with X as the sender",
                              "content": {"application/json": {"schema": {
                                  "type": "object", "properties": {
                                      "id": {"type": "string"},
                                      "status": {"type": "string"}}}}}},
                      "403": _REFUSAL, "404": _REFUSAL, "409": _REFUSAL, "410": _REFUSAL,
                      "422": {"description": "invalid field"},
                      "503": {"description": "no route to the far side right now"}}}},
    "/v1/messages": {"get": {
        "summary": "Message records, newest first",
        "parameters": [{"name": n, "in": "query", "required": False,
                        "schema": {"type": "string"}}
                       for n in ("x", "binding", "out_id", "since", "until", "cursor",
                                 "limit")],
        "responses": {"200": {"description": "`{messages: [...], next}`",
                              "content": {"application/json": {"schema": {
                                  "type": "object", "properties": {
                                      "messages": {"type": "array", "items": _MSG},
                                      "next": {"type": "string"}}}}}}}}},
    "/v1/messages/{id}": {"get": {
        "summary": "One message record (by its id or the id of any of its parts)",
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the record",
                              "content": {"application/json": {"schema": _MSG}}},
                      "404": {"description": "unknown id"}}}},
}


def register_routes(app: web.Application) -> None:
    """Add the SMS routes to the node's API and describe them in the OpenAPI document."""
    app.router.add_route("POST", "/v1/sms", post_sms)
    app.router.add_route("GET", "/v1/messages", list_messages)
    app.router.add_route("GET", "/v1/messages/{id}", get_message)
    add_paths(app, PATHS)
