"""The ops page served at `/` (relay/api/static/ops.html: plain HTML and JS, no build
step, no third-party code), and `GET /v1/session`, which tells the page its token's role.

The page itself holds no data, so it is public; every figure on it comes from the API
under the token typed in (kept in sessionStorage only), and the `ops` role gets masked
numbers from the API and no write controls on the page.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["OPS_PAGE", "add_page_routes"]

OPS_PAGE = (Path(__file__).parent / "static" / "ops.html").read_text(encoding="utf-8")

# The page's own security headers: nothing of it may be framed, sniffed or sent on as
# a Referer (a signed recording link in a Referer would be a credential leaving).
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; "
                                           "base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache"}


async def session(request: web.Request) -> web.Response:
    """The role of the token sent (`admin` or `ops`)."""
    from .app import ROLE

    return web.json_response({"role": request[ROLE]})


def add_page_routes(app: web.Application) -> None:
    """Add `GET /v1/session` and describe it (the page itself is in the core routes)."""
    from .openapi import add_paths

    app.router.add_route("GET", "/v1/session", session)
    add_paths(app, {"/v1/session": {"get": {
        "summary": "The role of the bearer token (the ops page shows write controls to admin)",
        "responses": {"200": {"description": "the role", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "role": {"type": "string", "enum": ["admin", "ops"]}}}}}},
            "401": {"description": "missing or unknown token"}}}}})
