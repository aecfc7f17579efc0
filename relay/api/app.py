"""The HTTP API (DESIGN.md "HTTP API"): bindings, numbers, route dry run, health, metrics.

Handlers parse and check everything before calling the service, so a bad request never
reaches the store; every error leaves as `{"error": code, "detail": text}`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dialplan.blocklist import Block, parse_block
from dialplan.numbers import InvalidNumber, mask, normalise, normalise_ext
from dialplan.policy import NAME as POLICY_NAME
from dialplan.policy import PolicyError, counter_key, parse_policy
from dialplan.route import Bridge, counted, decide, scored
from dialplan.score import score_card
from recordings.api import is_signed_request

from ..bindings.model import State
from ..bindings.store import StoreUnavailable
from ..bindings.validate import parse_create, parse_numbers, parse_update
from ..errors import BadRequest, NotFound, RelayError
from .hardening import NumberFilter, RateLimiter, parse_json_body
from .openapi import openapi_document
from .query import check_params, query_limit, query_number
from .views import binding_view, iso, route_view

if TYPE_CHECKING:
    from ..app import Node

__all__ = ["NODE", "build_api"]

log = logging.getLogger("relay.api")

NODE: web.AppKey[Node] = web.AppKey("node")
ROLE: web.RequestKey[str] = web.RequestKey("role", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = frozenset({"/", "/healthz", "/readyz", "/metrics", "/v1/openapi.json"})
_WRITE = frozenset({"POST", "PATCH", "DELETE", "PUT"})


def _error(status: int, code: str, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status,
                             headers=headers or None)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE]
    try:
        resp = await handler(request)
    except RelayError as exc:
        resp = _error(exc.status, exc.code, exc.detail)
    except StoreUnavailable as exc:
        resp = _error(503, "store_unavailable", f"the store cannot be reached: {exc}",
                      **{"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        resp = _error(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        resp = _error(500, "internal", "internal error (logged)")
    node.metrics.inc("relay_api_requests_total", request.method, str(resp.status))
    return resp


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE]
    tokens = node.config.api_tokens
    if is_signed_request(request.method, request.path, request.query):
        # A signed recording link is its own credential (recordings.api checks it);
        # a token sent along changes nothing.
        request[ROLE] = "link"
        return await handler(request)
    if not tokens:  # loopback-only deployments (enforced at start): everyone is admin
        request[ROLE] = "admin"
    elif request.path in _PUBLIC:
        request[ROLE] = "ops"
    else:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        role = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            return _error(401, "unauthorized", "a valid bearer token is required",
                          **{"WWW-Authenticate": 'Bearer realm="relay"'})
        request[ROLE] = role
    if request.method in _WRITE and request.path.startswith("/v1/") \
            and request[ROLE] != "admin" and not _ops_may_post(request):
        return _error(403, "forbidden", "this token may only read")
    return await handler(request)


def _ops_may_post(request: web.Request) -> bool:
    """Ops staff may hand out recording links: it is reading, shared for a while."""
    return request.method == "POST" and request.path.startswith("/v1/recordings/") \
        and request.path.endswith("/links")


class Forbidden(RelayError):
    status = 403
    code = "forbidden"


async def _json(request: web.Request) -> Any:
    """The body as JSON; malformed, deeply nested or out-of-range input is a 400."""
    return parse_json_body(await request.read())


# -- issue 13: per-token rate limits, and one filter over every answer for `ops` ----------
GUARD: web.AppKey[tuple[RateLimiter, NumberFilter]] = web.AppKey("guard")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[NODE]
    limiter, numbers = request.app[GUARD]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    role = node.config.api_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if role is not None and (wait := limiter.wait(token.strip(), role)):
        node.metrics.inc("relay_api_requests_total", request.method, "429")
        return _error(429, "rate_limited", f"too many requests for this token; retry in "
                      f"{wait:.2f} s", **{"Retry-After": str(max(1, math.ceil(wait)))})
    resp = await handler(request)
    if request.get(ROLE) == "ops" and isinstance(resp, web.Response) \
            and resp.content_type == "application/json" and isinstance(resp.body, bytes):
        cleaned = numbers.clean_body(resp.body, request.path)
        if cleaned is not None:
            resp.body = cleaned
    return resp


# -- bindings -----------------------------------------------------------------------------

async def create_binding(request: web.Request) -> web.Response:
    node = request.app[NODE]
    req = parse_create(await _json(request), node.config.default_cc, node.clock())
    binding, created = await node.service.create(req)
    return web.json_response(binding_view(binding, request[ROLE], node.clock()),
                             status=201 if created else 200)


async def get_binding(request: web.Request) -> web.Response:
    node = request.app[NODE]
    b = await node.service.get(request.match_info["id"])
    return web.json_response(binding_view(b, request[ROLE], node.clock()))


async def list_bindings(request: web.Request) -> web.Response:
    check_params(request, frozenset({"x", "state", "out_id", "cursor", "limit"}))
    node = request.app[NODE]
    q = request.query
    x = query_number(request, "x", node.config.default_cc)
    state = q.get("state")
    if state is not None and state not in {s.value for s in State}:
        raise BadRequest("state must be active, frozen or released")
    cursor = q.get("cursor")
    if cursor is not None and not cursor.isdigit():
        raise BadRequest("cursor is not one this API gave out")
    found, nxt = await node.store.query(x=x, state=state, out_id=q.get("out_id"),
                                        cursor=cursor, limit=query_limit(request))
    now = node.clock()
    body: dict[str, Any] = {"bindings": [binding_view(b, request[ROLE], now) for b in found]}
    if nxt:
        body["next"] = nxt
    return web.json_response(body)


async def patch_binding(request: web.Request) -> web.Response:
    node = request.app[NODE]
    upd = parse_update(await _json(request), node.config.default_cc, node.clock())
    b = await node.service.update(request.match_info["id"], upd.changes)
    return web.json_response(binding_view(b, request[ROLE], node.clock()))


async def _stop_now(request: web.Request, op: str, reason: str = "api") -> web.Response:
    """A freeze or release; with the store down it is 202 and `"pending": true`: in force
    on this node now, written and propagated when the store returns (issue 13)."""
    node = request.app[NODE]
    b, stored = await node.service.stop_now(request.match_info["id"], op, reason)
    view = binding_view(b, request[ROLE], node.clock())
    if stored:
        return web.json_response(view)
    return web.json_response({**view, "pending": True}, status=202)


async def freeze_binding(request: web.Request) -> web.Response:
    return await _stop_now(request, "freeze")


async def release_binding(request: web.Request) -> web.Response:
    return await _stop_now(request, "release")


# -- numbers ------------------------------------------------------------------------------

async def add_numbers(request: web.Request) -> web.Response:
    node = request.app[NODE]
    numbers, area = parse_numbers(await _json(request), node.config.default_cc)
    added = await node.service.add_numbers(numbers, area)
    return web.json_response({"added": added, "already_present": len(numbers) - added},
                             status=201)


async def list_numbers(request: web.Request) -> web.Response:
    check_params(request, frozenset({"area", "cursor", "limit"}))
    node = request.app[NODE]
    now = node.clock()
    stats = node.pool.stats(node.table, now)
    limit = query_limit(request)
    cursor = request.query.get("cursor", "")
    area = request.query.get("area")
    numbers = sorted(n for n, r in node.pool.numbers.items()
                     if n > cursor and (area is None or r.area == area))
    page = numbers[:limit]
    rows = []
    for n in page:
        use = node.table.usage(n)
        q_until = node.table.quarantine.get(int(n[1:]), 0.0)
        rows.append({
            "id": n, "number": n, "area": node.pool.numbers[n].area,
            "mode": use[0].value if use else None, "bindings": use[1] if use else 0,
            "state": "in_use" if use else ("quarantined" if q_until > now else "free"),
        })
    body: dict[str, Any] = {
        "numbers": rows,
        "stats": {"total": stats.total, "in_use": stats.in_use, "free": stats.free,
                  "quarantined": stats.quarantined, "by_mode": stats.by_mode,
                  "by_area": stats.by_area},
    }
    if len(numbers) > limit:
        body["next"] = page[-1]
    return web.json_response(body)


# -- routing dry run, health, metrics -----------------------------------------------------

async def route(request: web.Request) -> web.Response:
    """What this node would do with a call right now, from its own memory (nothing placed)."""
    node = request.app[NODE]
    q = request.query
    if "to" not in q:
        raise BadRequest("to (the dialled X) is required")
    try:
        x = normalise(q["to"], node.config.default_cc)
        caller = normalise(q["from"], node.config.default_cc) if q.get("from") else None
        ext = normalise_ext(q["ext"]) if q.get("ext") else None
    except InvalidNumber as exc:
        raise BadRequest(str(exc), "invalid_number") from None
    service = q.get("service", "voice")
    if service not in ("voice", "sms"):
        raise BadRequest("service must be voice or sms")
    if request[ROLE] != "admin":
        # Issue 13: whether a caller is a party is the very thing `ops` must not learn
        # (masked numbers would fall to a few thousand guesses), so for ops the dry run
        # is X's own answer: the caller is not looked at, nor its blocklist or score.
        caller = None
    table = node.table
    entry = table.lookup(x, caller, ext)
    policy = node.policies.for_binding(entry.policy) if entry is not None else None
    now = node.clock()
    decision = decide(entry, table.in_use(x), caller, now, service, shared=table.shared(x),
                      ext=ext, policy=policy, blocked=node.policies.blocked(caller, x, now))
    if isinstance(decision, Bridge) and decision.max_score is not None:
        decision = scored(decision, await _score(node, caller, now))
    if isinstance(decision, Bridge) and decision.limit is not None:
        # A dry run looks at the counter without counting; a store that cannot answer
        # says what counter_fail would do.
        key = counter_key("call" if service == "voice" else "sms", decision.binding, caller)
        try:
            used = await asyncio.wait_for(node.counters.used(key, now, decision.limit.per),
                                          node.config.counter_timeout)
            admitted = not decision.limit.over(used)
        except (StoreUnavailable, TimeoutError):
            admitted = node.config.counter_fail == "open"
        decision = counted(decision, admitted)
    view = route_view(decision, request[ROLE])
    if request[ROLE] != "admin":
        view["caller_considered"] = False
    return web.json_response(view)


async def _score(node: Node, caller: str | None, now: float) -> int:
    """The caller's score as the call path would see it (counter_fail on a dead store)."""
    if not caller:
        return 0
    try:
        return await asyncio.wait_for(node.scores.score(caller, now),
                                      node.config.counter_timeout)
    except (StoreUnavailable, TimeoutError):
        return 0 if node.config.counter_fail == "open" else 101


async def get_caller(request: web.Request) -> web.Response:
    """A caller's contact statistics (24 h, 7 d) and harassment score (dialplan.score)."""
    node = request.app[NODE]
    if request[ROLE] != "admin":  # issue 13: a number's history tells whether it is a party
        raise Forbidden("a caller's statistics are for admin tokens only")
    try:
        number = normalise(request.match_info["number"], node.config.default_cc)
    except InvalidNumber as exc:
        raise BadRequest(str(exc), "invalid_number") from None
    now = node.clock()
    card = score_card(await node.contacts.recent(number, now), now, node.config.score_tz)
    return web.json_response({
        "number": number if request[ROLE] == "admin" else mask(number),
        "score": card.score, "inputs": card.inputs, "points": card.points,
        "blocked": node.policies.blocklist.match(number, "", now) is not None,
        "at": iso(now)})


# -- policies (DESIGN.md "Policies") ------------------------------------------------------

def _policy_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not POLICY_NAME.fullmatch(name):
        raise BadRequest("a policy name is 1-64 letters, digits, '.', '_' or '-'")
    return name


async def list_policies(request: web.Request) -> web.Response:
    check_params(request, frozenset())
    node = request.app[NODE]
    book = node.policies
    return web.json_response({
        "policies": [p.as_dict() for n in book.names() if (p := book.get(n)) is not None],
        "default_policy": book.default})


async def get_policy(request: web.Request) -> web.Response:
    node = request.app[NODE]
    name = _policy_name(request)
    p = node.policies.get(name)
    if p is None:
        raise NotFound(f"no policy named {name!r}")
    return web.json_response(p.as_dict())


async def put_policy(request: web.Request) -> web.Response:
    """Create or replace a policy; an invalid one is 422 and changes nothing."""
    node = request.app[NODE]
    name = _policy_name(request)
    try:
        policy = parse_policy(name, await _json(request))
    except PolicyError as exc:
        raise BadRequest(str(exc), "invalid_policy") from None
    created = node.policies.get(name) is None
    await node.policy_store.put(policy)
    node.policies.put(policy)
    return web.json_response(policy.as_dict(), status=201 if created else 200)


async def delete_policy(request: web.Request) -> web.Response:
    """Delete a policy; bindings that name it route under the default policy."""
    node = request.app[NODE]
    name = _policy_name(request)
    p = node.policies.get(name)
    if not await node.policy_store.delete(name) and p is None:
        raise NotFound(f"no policy named {name!r}")
    node.policies.delete(name)
    return web.json_response({"deleted": name})


async def healthz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    f = node.follower
    body = {
        "status": "degraded" if f.degraded else "ok",
        "store": node.store_kind,
        "bindings": len(node.table),
        "numbers": len(node.pool),
        "feed_offset": f.offset,
        "store_error": f.last_error if f.degraded else None,
        "draining": node.draining,
        "pending_changes": len(node.service.pending or ()),
    }
    return web.json_response(body, status=503 if node.draining else 200)


async def readyz(request: web.Request) -> web.Response:
    """For load balancers: 200 only when this node is fully in step with the store;
    503 while it is degraded (serving from memory), holds changes the store has not
    taken, or drains. /healthz stays 200 then: the process is alive and routing."""
    node = request.app[NODE]
    f = node.follower
    pending = len(node.service.pending or ())
    why = ("draining" if node.draining else "degraded" if f.degraded
           else "pending_changes" if pending else None)
    body = {"status": why or "ready", "store": node.store_kind,
            "store_error": f.last_error if f.degraded else None, "pending_changes": pending}
    return web.json_response(body, status=503 if why else 200)


async def metrics(request: web.Request) -> web.Response:
    from ..metrics import CONTENT_TYPE

    text = request.app[NODE].metrics.render()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app))


async def ops_page(request: web.Request) -> web.Response:
    from .page import OPS_PAGE, PAGE_HEADERS

    return web.Response(text=OPS_PAGE, content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


async def not_found(request: web.Request) -> web.Response:
    raise NotFound(f"no route for {request.path}")


# -- blocklist (DESIGN.md "HTTP API", "Policies") -----------------------------------------

def _block_view(b: Block, role: str) -> dict[str, Any]:
    return {"number": b.number if role == "admin" else mask(b.number), "x": b.x,
            "reason": b.reason, "until": iso(b.until), "created_at": iso(b.created_at)}


def _block_key(request: web.Request, body_x: Any = None) -> tuple[str, str | None]:
    cc = request.app[NODE].config.default_cc
    raw_x = request.query.get("x") or body_x
    try:
        number = normalise(request.match_info["number"], cc)
        x = normalise(str(raw_x), cc) if raw_x else None
    except InvalidNumber as exc:
        raise BadRequest(str(exc), "invalid_number") from None
    return number, x


async def list_blocklist(request: web.Request) -> web.Response:
    check_params(request, frozenset())
    node = request.app[NODE]
    now = node.clock()
    return web.json_response({"blocklist": [
        _block_view(b, request[ROLE]) for b in node.policies.blocklist.entries() if b.live(now)]})


async def put_block(request: web.Request) -> web.Response:
    """Block a caller on every X, or on one (`x`), until `until` or for good."""
    node = request.app[NODE]
    body = await _json(request)
    number, x = _block_key(request, body.get("x") if isinstance(body, dict) else None)
    try:
        entry = parse_block(number, body, x, node.clock())
    except ValueError as exc:
        raise BadRequest(str(exc), "invalid_block") from None
    created = not any((b.number, b.x) == (number, x) for b in node.policies.blocklist.entries())
    await node.policy_store.block(entry)
    node.policies.block(entry)
    return web.json_response(_block_view(entry, request[ROLE]), status=201 if created else 200)


async def delete_block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await _json(request) if request.can_read_body else None
    number, x = _block_key(request, body.get("x") if isinstance(body, dict) else None)
    if not await node.policy_store.unblock(number, x):
        raise NotFound("that number is not on the blocklist" + (" for this X" if x else ""))
    node.policies.unblock(number, x)
    return web.json_response({"deleted": number if request[ROLE] == "admin" else mask(number),
                              "x": x})


ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/bindings", create_binding),
    ("GET", "/v1/bindings", list_bindings),
    ("GET", "/v1/bindings/{id}", get_binding),
    ("PATCH", "/v1/bindings/{id}", patch_binding),
    ("DELETE", "/v1/bindings/{id}", release_binding),
    ("POST", "/v1/bindings/{id}/freeze", freeze_binding),
    ("POST", "/v1/numbers", add_numbers),
    ("GET", "/v1/numbers", list_numbers),
    ("GET", "/v1/route", route),
    ("GET", "/v1/policies", list_policies),
    ("GET", "/v1/policies/{name}", get_policy),
    ("PUT", "/v1/policies/{name}", put_policy),
    ("DELETE", "/v1/policies/{name}", delete_policy),
    ("GET", "/v1/callers/{number}", get_caller),
    ("GET", "/v1/blocklist", list_blocklist),
    ("PUT", "/v1/blocklist/{number}", put_block),
    ("DELETE", "/v1/blocklist/{number}", delete_block),
    ("GET", "/v1/openapi.json", openapi),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/", ops_page),
]


def build_api(node: Node) -> web.Application:
    """The aiohttp application for one node. More routes (calls, SMS) register on it."""
    app = web.Application(middlewares=[_guard, _errors, _auth],
                          client_max_size=8 * 1024 * 1024)
    app[NODE] = node
    limiter = RateLimiter(node.config.api_rates, node.config.api_burst)
    numbers = NumberFilter(lambda n: n in node.pool)
    app[GUARD] = (limiter, numbers)
    node.metrics.counter_from("relay_api_rate_limited_total", "API requests refused with "
                              "429 (per-token rate limit)", lambda: float(limiter.limited))
    node.metrics.counter_from("relay_api_numbers_masked_total", "real numbers the response "
                              "filter masked in answers for the ops role",
                              lambda: float(numbers.masked))
    node.metrics.counter("relay_api_requests_total", "API requests by method and status",
                         ("method", "status"))
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    from .page import add_page_routes
    add_page_routes(app)
    from .node import add_node_routes  # drain and the node's state (issue 16)
    add_node_routes(app)
    return app
