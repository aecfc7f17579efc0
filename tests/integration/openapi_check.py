"""The check that the OpenAPI document describes exactly the routes an app serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def documented_and_routed(doc: dict[str, Any], app: web.Application
                          ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(method, path) pairs in the document, and in the app's router (HEAD aside)."""
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops
                  if m != "parameters"}
    routed = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    return documented, routed
