"""The call routes: records (`GET /v1/calls`, `GET /v1/calls/{id}`) and the calls in
progress on this node (`GET /v1/calls/live`, `DELETE /v1/calls/live/{id}`).

Numbers are masked for every role but `admin`; X (the relay's own number) never is.
The live-call functions take the node, not a request, so a front that fans a request
out to every worker of a cluster can call them per node and merge the answers.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dialplan.numbers import mask

from ..calllog import outcome as call_outcome
from ..errors import BadRequest, NotFound, RelayError
from ..events.records import CallRecord, to_iso
from .app import NODE, ROLE
from .openapi import add_paths
from .query import check_params, query_limit, query_number, query_time

if TYPE_CHECKING:
    from ..app import Node

__all__ = ["OUTCOMES", "add_call_routes", "call_outcome", "call_view", "hangup_live",
           "live_calls", "node_id"]

#: What became of a call, as the ops page and `relay calls --outcome` filter on it.
OUTCOMES = ("answered", "unanswered", "refused")
_LIST_PARAMS = frozenset({"x", "binding", "out_id", "party", "outcome", "since", "until",
                          "cursor", "limit"})
_SCAN_MAX = 5000  # records read per request when filtering by party or outcome


class Forbidden(RelayError):
    status = 403
    code = "forbidden"


def call_view(rec: dict[str, Any], role: str) -> dict[str, Any]:
    """A stored call record in the API's form (`CallRecord.to_json`: every time ISO 8601
    UTC with ms) plus its outcome; caller and callee masked unless admin."""
    out = CallRecord.from_doc(rec).to_json(real_numbers=role == "admin")
    out["outcome"] = call_outcome(rec)
    return out


async def list_calls(request: web.Request) -> web.Response:
    """Newest first; x, binding, out_id and time from the store's indexes, party (admin)
    and outcome by reading on (at most _SCAN_MAX records a request; `next` goes on)."""
    check_params(request, _LIST_PARAMS)
    node = request.app[NODE]
    role = request[ROLE]
    q = request.query
    party = query_number(request, "party", node.config.default_cc)
    if party is not None and role != "admin":
        raise Forbidden("searching by a party's number needs an admin token")
    outcome = q.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest("outcome must be one of " + ", ".join(OUTCOMES))
    limit = query_limit(request)
    filters: dict[str, Any] = {"x": query_number(request, "x", node.config.default_cc),
               "binding": q.get("binding"), "out_id": q.get("out_id"),
               "since": query_time(request, "since"), "until": query_time(request, "until")}
    cursor = q.get("cursor")
    found: list[dict[str, Any]] = []
    scanned = 0
    while True:
        want = limit - len(found)
        try:
            page, cursor = await node.records.query("call", cursor=cursor,
                                                    limit=want, **filters)
        except ValueError as exc:  # a cursor this API never gave out
            raise BadRequest(str(exc)) from None
        scanned += len(page)
        found += [r for r in page
                  if (party is None or party in (r.get("caller"), r.get("callee")))
                  and (outcome is None or call_outcome(r) == outcome)]
        if cursor is None or len(found) >= limit or scanned >= _SCAN_MAX:
            break
    body: dict[str, Any] = {"calls": [call_view(r, role) for r in found]}
    if cursor:
        body["next"] = cursor
    return web.json_response(body)


async def get_call(request: web.Request) -> web.Response:
    node = request.app[NODE]
    rec = await node.records.get("call", request.match_info["id"])
    if rec is None:
        raise NotFound("no such call")
    return web.json_response(call_view(rec, request[ROLE]))


# -- calls in progress ----------------------------------------------------------------

def node_id(node: Node) -> str:
    """This process's name in a cluster: the node's own, RELAY_NODE_ID (a worker of
    `relay serve --workers` is `<host>/worker-<i>`), or host and process id."""
    return str(getattr(node, "node_id", None) or os.environ.get("RELAY_NODE_ID")
               or f"{socket.gethostname()}:{os.getpid()}")


def _switch(node: Node) -> Any:
    return getattr(node.voice, "switch", None)


def live_calls(node: Node, role: str, now: float | None = None) -> list[dict[str, Any]]:
    """The calls in progress on `node`, oldest first, in the API's form: the fields of a
    record so far (ISO 8601 UTC with ms; `recording` stays null until the record), plus
    `phase`, `node`, `age_ms` and `recorded` (whether it is being recorded)."""
    switch = _switch(node)
    if switch is None:
        return []
    now = time.time() if now is None else now
    me = node_id(node)
    num = (lambda n: n) if role == "admin" else mask
    out = []
    for c in switch.live_calls():
        legs = {name: {k: (to_iso(v / 1000) if k.endswith("_at") and v is not None else v)
                       for k, v in leg.items()} for name, leg in c["legs"].items()}
        answered = c["answered_at"]
        out.append({
            "id": c["id"], "node": me, "x": c["x"], "ext": c["ext"],
            "caller": num(c["caller"]), "callee": num(c["callee"]),
            "binding": c["binding"], "out_id": c["out_id"], "direction": c["direction"],
            "phase": c["phase"], "started_at": to_iso(c["started_at"]),
            "answered_at": to_iso(answered / 1000) if answered is not None else None,
            "age_ms": max(0, int((now - c["started_at"]) * 1000)),
            "duration_ms": max(0, int(now * 1000) - answered) if answered is not None else 0,
            "legs": legs, "recording": None, "recorded": c["recording"],
        })
    return out


def hangup_live(node: Node, call_id: str) -> bool:
    """End a live call on `node` (both legs get BYE, or CANCEL and a final response if
    not yet answered; the record says `end_reason: operator`). False: not live here."""
    switch = _switch(node)
    if switch is None or not switch.hangup_call(call_id, time.time(), reason="operator"):
        return False
    if node.voice is not None:
        node.voice.flush()  # the BYEs leave now
    return True


async def list_live(request: web.Request) -> web.Response:
    check_params(request, frozenset())
    node = request.app[NODE]
    return web.json_response({"calls": live_calls(node, request[ROLE]),
                              "node": node_id(node)})


async def delete_live(request: web.Request) -> web.Response:
    node = request.app[NODE]
    call_id = request.match_info["id"]
    if not hangup_live(node, call_id):
        raise NotFound(f"no live call {call_id} on this node")
    return web.json_response({"id": call_id, "ended": True, "end_reason": "operator",
                              "node": node_id(node)})


# -- OpenAPI --------------------------------------------------------------------------

_TIME = {"type": ["string", "null"], "format": "date-time"}
_NUMBER = {"type": ["string", "null"], "description": "E.164; masked (+86138****0001) "
           "unless the token is admin"}
_LEG = {"type": "object", "properties": {
    "invite_at": _TIME, "ring_at": _TIME, "answer_at": _TIME, "end_at": _TIME,
    "sip_code": {"type": ["integer", "null"]}}}
_FILE = {"type": "object", "properties": {
    "path": {"type": "string"}, "size": {"type": "integer"},
    "sha256": {"type": "string"}, "duration_ms": {"type": "integer"},
    "record_start_at": _TIME,
    "packets": {"type": "integer", "description": "caller/callee: RTP audio packets that "
                "side sent the relay, by sequence number"},
    "lost": {"type": "integer", "description": "caller/callee: of those, never received "
             "(or too late to play)"}}}
CALL_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "started_at", "legs", "outcome"],
    "description": "A call record (every time ISO 8601 UTC with milliseconds). "
    "end_reason says why the relay ended it (max_duration, frozen, drain, media_timeout, "
    "session_expired, crash, media, no_extension, no_answer, operator; null otherwise); "
    "unconnected_cause is "
    "none, no_binding, frozen, stranger, policy, untrusted, error or no_extension; "
    "policy_reason names the policy rule that refused it (quiet_hours, direction, "
    "blocked, frequency, score, hook). AXE calls add ext, and ivr_start_at and "
    "ivr_end_at when the relay collected it by digits; prompts lists the prompts played.",
    "properties": {
        "id": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"},
        "x": {"type": ["string", "null"]}, "binding": {"type": ["string", "null"]},
        "out_id": {"type": ["string", "null"]}, "caller": _NUMBER, "callee": _NUMBER,
        "direction": {"type": ["string", "null"]},
        "legs": {"type": "object", "properties": {"caller": _LEG, "callee": _LEG}},
        "sip_code": {"type": ["integer", "null"]},
        "cause": {"type": ["integer", "null"], "description": "Q.850"},
        "released_by": {"type": ["string", "null"]},
        "end_reason": {"type": ["string", "null"]},
        "unconnected_cause": {"type": ["string", "null"]},
        "policy_reason": {"type": ["string", "null"]},
        "duration_ms": {"type": "integer"},
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "recording": {"type": ["object", "null"], "properties": {
            "caller": _FILE, "callee": _FILE, "mix": _FILE}},
        "ext": {"type": ["string", "null"]}, "ivr_start_at": _TIME, "ivr_end_at": _TIME,
        "prompts": {"type": "array", "items": {"type": "string"}},
        "trunk": {"type": "string", "description": "the outbound trunk that carried (or "
                  "last tried) the call"},
        "failovers": {"type": "integer", "description": "trunks tried before it"},
        "node": {"type": "string", "description": "the node (worker) that handled it"},
    }}
LIVE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "node", "phase", "started_at", "legs"],
    "description": "A call in progress: the fields of a record so far",
    "properties": {
        "id": {"type": "string"}, "node": {"type": "string"},
        "x": {"type": ["string", "null"]}, "ext": {"type": ["string", "null"]},
        "caller": _NUMBER, "callee": _NUMBER,
        "binding": {"type": ["string", "null"]}, "out_id": {"type": ["string", "null"]},
        "direction": {"type": ["string", "null"]},
        "phase": {"type": "string", "enum": ["routing", "collecting", "placing", "ringing",
                                             "connected"]},
        "started_at": {"type": "string", "format": "date-time"}, "answered_at": _TIME,
        "age_ms": {"type": "integer"}, "duration_ms": {"type": "integer"},
        "legs": {"type": "object", "properties": {"caller": _LEG, "callee": _LEG}},
        "recording": {"type": "null", "description": "the files come with the record"},
        "recorded": {"type": "boolean", "description": "this call is being recorded"},
    }}


def _json(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def add_call_routes(app: web.Application) -> None:
    """Add the call routes and document them in the OpenAPI document (the live routes
    first: aiohttp matches in order, and `/v1/calls/{id}` would take `live`)."""
    app.router.add_route("GET", "/v1/calls", list_calls)
    app.router.add_route("GET", "/v1/calls/live", list_live)
    app.router.add_route("DELETE", "/v1/calls/live/{id}", delete_live)
    app.router.add_route("GET", "/v1/calls/{id}", get_call)
    q = [{"name": n, "in": "query", "schema": {"type": "string"}, "description": d}
         for n, d in (("x", "virtual number"), ("binding", "binding id"),
                      ("out_id", "platform reference"),
                      ("party", "caller or callee number (admin only)"),
                      ("outcome", "answered, unanswered or refused"),
                      ("since", "UNIX seconds, ISO 8601 or an age (30m, 24h, 7d)"),
                      ("until", "UNIX seconds, ISO 8601 or an age (30m, 24h, 7d)"),
                      ("cursor", "from `next`"), ("limit", "1-1000"))]
    err = {"$ref": "#/components/schemas/Error"}
    ref = {"$ref": "#/components/schemas/Call"}
    live_ref = {"$ref": "#/components/schemas/LiveCall"}
    add_paths(app, {
        "/v1/calls": {"get": {
            "summary": "Call records, newest first; unknown parameters are a 400",
            "parameters": q,
            "responses": {"200": _json('{"calls": [...], "next": cursor}', {
                "type": "object", "properties": {
                    "calls": {"type": "array", "items": ref}, "next": {"type": "string"}}}),
                "400": _json("an unknown query parameter", err),
                "403": _json("party without an admin token", err),
                "422": _json("an invalid filter", err)}}},
        "/v1/calls/live": {"get": {
            "summary": "Calls in progress on this node, oldest first",
            "responses": {"200": _json('{"calls": [...], "node": id}', {
                "type": "object", "properties": {
                    "calls": {"type": "array", "items": live_ref},
                    "node": {"type": "string"}}})}}},
        "/v1/calls/live/{id}": {"delete": {
            "summary": "Hang up a live call (admin): both legs get BYE, end_reason operator",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json("the call is ending", {
                "type": "object", "properties": {
                    "id": {"type": "string"}, "ended": {"type": "boolean"},
                    "end_reason": {"type": "string"}, "node": {"type": "string"}}}),
                "403": _json("a read-only token", err),
                "404": _json("no such call in progress on this node", err)}}},
        "/v1/calls/{id}": {"get": {
            "summary": "One call record",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json("the call", ref),
                          "404": _json("no such call", err)}}},
    }, schemas={"Call": CALL_SCHEMA, "LiveCall": LIVE_SCHEMA})
