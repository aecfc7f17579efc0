"""The OpenAPI 3 document for `/v1/openapi.json`; a test checks it against the router."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

__all__ = ["add_paths", "openapi_document"]

# The routes a subsystem adds are described on the application it adds them to (not in
# a module-level table): two nodes in one process each document only their own.
_PATHS = web.AppKey("openapi_paths", dict)
_SCHEMAS = web.AppKey("openapi_schemas", dict)


def add_paths(app: web.Application, paths: dict[str, dict[str, Any]],
              schemas: dict[str, dict[str, Any]] | None = None) -> None:
    """Subsystems (calls, recordings, SMS) describe the routes they add to `app`, and
    the component schemas those routes refer to (`#/components/schemas/NAME`)."""
    if _PATHS not in app:
        app[_PATHS], app[_SCHEMAS] = {}, {}
    for path, ops in paths.items():
        app[_PATHS].setdefault(path, {}).update(ops)
    app[_SCHEMAS].update(schemas or {})

_NUM = {"type": "string", "pattern": r"^\+?[0-9 ()./-]{6,20}$",
        "description": "E.164 (+8613800000001) or national with the default country code"}
_ERR = {"$ref": "#/components/schemas/Error"}
_BIND = {"$ref": "#/components/schemas/Binding"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"description": desc}
    if schema is not None:
        r["content"] = {"application/json": {"schema": schema}}
    return r


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed JSON", 401: "missing or unknown token", 403: "read-only token",
            404: "unknown id", 409: "conflict (illegal transition, pool exhausted, busy)",
            422: "invalid field", 429: "rate limited (Retry-After)",
            503: "store unavailable"}
    return {str(c): _resp(text[c], _ERR) for c in codes}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _q(name: str, desc: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": desc,
            "schema": {"type": "string"}}


_T = {"type": ["string", "null"], "format": "date-time"}
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "started_at"],
    "description": "A message record (numbers masked unless admin; times ISO 8601 UTC "
                   "with ms); status forwarded, refused, delivered or failed",
    "properties": {
        "id": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"},
        "binding": {"type": ["string", "null"]}, "x": {"type": ["string", "null"]},
        "sender": {"type": ["string", "null"]}, "recipient": {"type": ["string", "null"]},
        "direction": {"type": ["string", "null"]}, "origin": {"type": ["string", "null"]},
        "route": {"type": ["string", "null"]}, "status": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]}, "policy_reason": {"type": ["string", "null"]},
        "command_status": {"type": ["integer", "null"]},
        "received_at": _T, "forwarded_at": _T, "delivered_at": _T,
        "parts": {"type": ["integer", "null"]}, "data_coding": {"type": ["integer", "null"]},
        "text_sha256": {"type": ["string", "null"]}, "text": {"type": "string"}}}
LINKS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["call_id", "expires", "links"],
    "description": "Signed recording links: they work without a token until `expires`",
    "properties": {
        "call_id": {"type": "string"}, "expires": {"type": "integer"},
        "expires_at": {"type": "string", "format": "date-time"},
        "links": {"type": "object", "properties": {
            leg: {"type": "string", "format": "uri"} for leg in ("caller", "callee", "mix")}}}}
# Routes other modules describe whose answers have a schema here: (path, method, status).
_REFS = {("/v1/messages/{id}", "get", "200"): "Message",
         ("/v1/recordings/{call_id}/links", "post", "201"): "Links"}


def _refine(paths: dict[str, Any]) -> None:
    """Point the answers in _REFS at their component schemas (lists of messages too)."""
    for (path, method, status), name in _REFS.items():
        resp = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if resp is not None:
            resp["content"] = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{name}"}}}
    listing = paths.get("/v1/messages", {}).get("get", {}).get("responses", {}).get("200")
    if listing is not None:
        listing["content"] = {"application/json": {"schema": {
            "type": "object", "properties": {
                "messages": {"type": "array",
                             "items": {"$ref": "#/components/schemas/Message"}},
                "next": {"type": "string"}}}}}


def openapi_document(app: web.Application | None = None) -> dict[str, Any]:
    """The whole API description: the core routes and those `app`'s subsystems added."""
    extra_paths: dict[str, Any] = app.get(_PATHS, {}) if app is not None else {}
    extra_schemas: dict[str, Any] = app.get(_SCHEMAS, {}) if app is not None else {}
    binding_props = {
        "id": {"type": "string"}, "mode": {"type": "string", "enum": ["AXB", "AXN", "AXE"]},
        "x": {"type": "string"}, "a": {"type": ["string", "null"]},
        "b": {"type": ["string", "null"]}, "ext": {"type": ["string", "null"]},
        "state": {"type": "string", "enum": ["active", "frozen", "released"]},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "record": {"type": "boolean"}, "voice": {"type": "boolean"}, "sms": {"type": "boolean"},
        "out_id": {"type": ["string", "null"]},
        "max_call_seconds": {"type": ["integer", "null"]}, "policy": {"type": ["string", "null"]},
        "area": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "frozen_at": {"type": ["string", "null"], "format": "date-time"},
        "released_at": {"type": ["string", "null"], "format": "date-time"},
        "reason": {"type": ["string", "null"]}, "version": {"type": "integer"},
    }
    create = {
        "type": "object", "required": ["mode", "b"], "additionalProperties": False,
        "properties": {
            "mode": {"type": "string", "enum": ["AXB", "AXN", "AXE"]},
            "a": _NUM, "b": _NUM, "x": _NUM,
            "ext": {"type": "string", "pattern": "^[0-9]{1,8}$"},
            "ttl": {"type": "number", "minimum": 1, "maximum": 400 * 86400},
            "expires_at": {"oneOf": [{"type": "number"},
                                     {"type": "string", "format": "date-time"}]},
            "record": {"type": "boolean"}, "voice": {"type": "boolean"},
            "sms": {"type": "boolean"},
            "out_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "max_call_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
            "policy": {"type": "string", "maxLength": 64},
            "area": {"type": "string", "maxLength": 16},
        },
    }
    patch = {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {k: create["properties"][k] for k in  # type: ignore[index]
                       ("ttl", "expires_at", "record", "voice", "sms", "b",
                        "max_call_seconds", "policy")},
    }
    clock = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
    limit = {"type": "object", "required": ["count", "per"], "additionalProperties": False,
             "description": "per caller and binding; over it: 603 frequency",
             "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 10000},
                            "per": {"oneOf": [
                                {"type": "integer", "minimum": 1, "maximum": 604800},
                                {"type": "string", "pattern": "^[1-9][0-9]*[smhd]$"}]}}}
    policy = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "quiet_hours": {"type": "object", "required": ["from", "to", "tz"],
                            "additionalProperties": False,
                            "properties": {"from": clock, "to": clock,
                                           "tz": {"type": "string",
                                                  "description": "IANA zone"}}},
            "directions": {"type": "array", "minItems": 1,
                           "items": {"type": "string", "enum": ["a_to_b", "b_to_a"]}},
            "ring_timeout": {"type": "integer", "minimum": 1, "maximum": 600},
            "max_call_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
            "max_calls": limit, "max_sms": limit,
            "max_score": {"type": "integer", "minimum": 0, "maximum": 100,
                          "description": "callers scoring above it: 603 score"},
        },
    }
    block = {"type": "object", "properties": {
        "number": {"type": "string"}, "x": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "until": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"}}}
    block_put = {"type": "object", "required": ["reason"], "additionalProperties": False,
                 "properties": {"reason": {"type": "string", "maxLength": 200},
                                "x": _NUM,
                                "until": {"oneOf": [{"type": "number"},
                                                    {"type": "string", "format": "date-time"}]}}}
    number = {"name": "number", "in": "path", "required": True, "schema": _NUM}
    pol = {"$ref": "#/components/schemas/Policy"}
    pname = {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Privacy-number relay API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "detail"],
                          "properties": {"error": {"type": "string"},
                                         "detail": {"type": "string"}}},
                "Binding": {"type": "object", "properties": binding_props,
                            "required": ["id", "mode", "x", "state", "expires_at"]},
                "CreateBinding": create,
                "PatchBinding": patch,
                "Policy": policy,
                "Message": MESSAGE_SCHEMA,
                "Links": LINKS_SCHEMA,
                **copy.deepcopy(extra_schemas),
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/bindings": {
                "post": {
                    "summary": "Create a binding (an out_id with an active binding returns it)",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/CreateBinding"}}}},
                    "responses": {"201": _resp("created", _BIND),
                                  "200": _resp("the active binding with this out_id", _BIND),
                                  **_errors(400, 401, 403, 409, 422, 503)},
                },
                "get": {
                    "summary": "List bindings",
                    "parameters": [_q("x", "virtual number"), _q("state", "state"),
                                   _q("out_id", "platform reference"),
                                   _q("cursor", "from a previous page's next"),
                                   _q("limit", "1..1000")],
                    "responses": {"200": _resp("a page", {"type": "object", "properties": {
                        "bindings": {"type": "array", "items": _BIND},
                        "next": {"type": "string"}}}), **_errors(401, 422, 503)},
                },
            },
            "/v1/bindings/{id}": {
                "parameters": [_ID],
                "get": {"summary": "One binding",
                        "responses": {"200": _resp("the binding", _BIND),
                                      **_errors(401, 404, 503)}},
                "patch": {"summary": "Change expiry, switches or B of an active binding",
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/PatchBinding"}}}},
                          "responses": {"200": _resp("the binding", _BIND),
                                        **_errors(400, 401, 403, 404, 409, 422, 503)}},
                "delete": {"summary": "Release the binding (its number goes to quarantine)",
                           "responses": {"200": _resp("the released binding", _BIND),
                                         "202": _resp("store down: frozen on this node now, "
                                                      "released when the store returns",
                                                      _BIND),
                                         **_errors(401, 403, 404, 409, 429, 503)}},
            },
            "/v1/bindings/{id}/freeze": {
                "parameters": [_ID],
                "post": {"summary": "Freeze: every call and SMS to X is refused from now on",
                         "responses": {"200": _resp("the frozen binding", _BIND),
                                       "202": _resp("store down: frozen on this node now, "
                                                    "written when the store returns", _BIND),
                                       **_errors(401, 403, 404, 409, 429, 503)}},
            },
            "/v1/numbers": {
                "post": {
                    "summary": "Add numbers to the pool",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "required": ["numbers"], "properties": {
                            "numbers": {"type": "array", "items": _NUM},
                            "area": {"type": "string"}}}}}},
                    "responses": {"201": _resp("added", {"type": "object"}),
                                  **_errors(400, 401, 403, 422, 503)},
                },
                "get": {"summary": "The pool with statistics",
                        "parameters": [_q("area", "area tag"), _q("cursor", "next"),
                                       _q("limit", "1..1000")],
                        "responses": {"200": _resp("numbers and stats", {"type": "object"}),
                                      **_errors(401, 422)}},
            },
            "/v1/route": {
                "get": {"summary": "Dry run: what this node would do with a call now",
                        "parameters": [_q("to", "dialled X", True), _q("from", "caller"),
                                       _q("ext", "AXE extension"),
                                       _q("service", "voice (default) or sms")],
                        "responses": {"200": _resp("bridge or refuse", {"type": "object"}),
                                      **_errors(401, 422)}},
            },
            "/v1/policies": {
                "get": {"summary": "Every named policy, and the default policy's name",
                        "responses": {"200": _resp("policies", {"type": "object",
                                                                "properties": {
                            "policies": {"type": "array", "items": pol},
                            "default_policy": {"type": ["string", "null"]}}}),
                            **_errors(401)}},
            },
            "/v1/policies/{name}": {
                "parameters": [pname],
                "get": {"summary": "One policy",
                        "responses": {"200": _resp("the policy", pol), **_errors(401, 404)}},
                "put": {"summary": "Create or replace a policy (invalid: 422, nothing changes)",
                        "requestBody": {"required": True, "content": {
                            "application/json": {"schema": pol}}},
                        "responses": {"201": _resp("created", pol),
                                      "200": _resp("replaced", pol),
                                      **_errors(400, 401, 403, 422, 503)}},
                "delete": {"summary": "Delete a policy (its bindings fall back to the default)",
                           "responses": {"200": _resp("deleted", {"type": "object"}),
                                         **_errors(401, 403, 404, 503)}},
            },
            "/v1/callers/{number}": {
                "parameters": [number],
                "get": {"summary": "A caller's contacts over 24 h and 7 d and harassment score "
                                   "(number masked for ops)",
                        "responses": {"200": _resp("statistics", {"type": "object",
                                                                  "properties": {
                            "number": {"type": "string"},
                            "score": {"type": "integer", "minimum": 0, "maximum": 100},
                            "inputs": {"type": "object"}, "points": {"type": "object"},
                            "blocked": {"type": "boolean",
                                        "description": "on the global blocklist"},
                            "at": {"type": "string", "format": "date-time"}}}),
                            **_errors(401, 422, 503)}},
            },
            "/v1/blocklist": {
                "get": {"summary": "Blocked callers in force (numbers masked for ops)",
                        "responses": {"200": _resp("entries", {"type": "object", "properties": {
                            "blocklist": {"type": "array", "items": block}}}),
                            **_errors(401)}},
            },
            "/v1/blocklist/{number}": {
                "parameters": [number, _q("x", "only this X (else every X)")],
                "put": {"summary": "Block a caller on every X, or on one X (603)",
                        "requestBody": {"required": True, "content": {
                            "application/json": {"schema": block_put}}},
                        "responses": {"201": _resp("blocked", block),
                                      "200": _resp("replaced", block),
                                      **_errors(400, 401, 403, 422, 503)}},
                "delete": {"summary": "Unblock (the global entry, or the one for `x`)",
                           "responses": {"200": _resp("deleted", {"type": "object"}),
                                         **_errors(401, 403, 404, 422, 503)}},
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": _resp("OpenAPI 3.1")}}},
            "/healthz": {"get": {"summary": "ok or degraded (store unreachable)",
                                 "security": [],
                                 "responses": {"200": _resp("health", {"type": "object"}),
                                               "503": _resp("draining")}}},
            "/readyz": {"get": {"summary": "For load balancers: 200 when in step with the "
                                           "store; 503 degraded, pending changes or draining",
                                "security": [],
                                "responses": {"200": _resp("ready", {"type": "object"}),
                                              "503": _resp("not ready", {"type": "object"})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                                 "responses": {"200": {"description": "text format"}}}},
            "/": {"get": {"summary": "The ops page",
                          "responses": {"200": {"description": "HTML"}}}},
            **copy.deepcopy(extra_paths),
        },
    }
    _refine(doc["paths"])
    return doc
