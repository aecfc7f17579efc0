"""This node's own state for operators and the balancer: `GET /v1/node`, and draining
(`POST /v1/node/drain`, `DELETE /v1/node/drain` to take calls again).

A draining node answers new INVITEs and OPTIONS with 503: Kamailio's dispatcher probes
with OPTIONS, so it marks the node inactive and sends new calls elsewhere, while the
node's live calls (in-dialog requests) carry on until they end."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from .app import NODE

__all__ = ["NODE_PATHS", "add_node_routes", "node_view", "set_draining"]

_NODE = {"type": "object", "properties": {
    "pid": {"type": "integer"}, "draining": {"type": "boolean"},
    "live_calls": {"type": "integer"}, "sip": {"type": "string"}},
    "description": "This node (on a `--workers` set: `workers`, one such object each, "
                   "with `draining` true when all drain and `live_calls` their sum)"}
_ANSWER = {"200": {"description": "the node", "content": {
    "application/json": {"schema": _NODE}}}}
NODE_PATHS: dict[str, dict[str, Any]] = {
    "/v1/node": {"get": {"summary": "This node: draining, live calls", "responses": _ANSWER}},
    "/v1/node/drain": {
        "post": {"summary": "Admin: refuse new calls (INVITE and OPTIONS get 503) while "
                            "live calls finish", "responses": _ANSWER},
        "delete": {"summary": "Admin: take new calls again", "responses": _ANSWER}},
}


def set_draining(node: Any, draining: bool) -> None:
    """Refuse (or admit again) new calls on this node: the API's health and the SIP
    switch's admission both follow the flag."""
    node.draining = draining
    switch = getattr(getattr(node, "voice", None), "switch", None)
    if switch is not None:
        switch.draining = draining


def node_view(node: Any) -> dict[str, Any]:
    """What `GET /v1/node` answers."""
    switch = getattr(getattr(node, "voice", None), "switch", None)
    return {"pid": os.getpid(), "draining": bool(node.draining),
            "live_calls": int(switch.live) if switch is not None else 0,
            "sip": f"{node.config.sip[0]}:{node.config.sip[1]}"}


async def get_node(request: web.Request) -> web.Response:
    return web.json_response(node_view(request.app[NODE]))


async def drain(request: web.Request) -> web.Response:
    """Admin: stop taking new calls; live calls finish."""
    node = request.app[NODE]
    set_draining(node, True)
    return web.json_response(node_view(node))


async def undrain(request: web.Request) -> web.Response:
    """Admin: take new calls again."""
    node = request.app[NODE]
    set_draining(node, False)
    return web.json_response(node_view(node))


def add_node_routes(app: web.Application) -> None:
    """Register the routes (writes are admin-only through the API's auth middleware)."""
    from .openapi import add_paths

    add_paths(app, NODE_PATHS)
    node = app[NODE]
    node.metrics.gauge("relay_draining", "1 while this node refuses new calls",
                       lambda: 1.0 if node.draining else 0.0)
    app.router.add_route("GET", "/v1/node", get_node)
    app.router.add_route("POST", "/v1/node/drain", drain)
    app.router.add_route("DELETE", "/v1/node/drain", undrain)
