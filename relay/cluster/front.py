"""The one HTTP address of `relay serve --workers N`.

Most requests go to one worker (they all share the store, so any can create a binding
or list records): worker 0, or the next one up while it restarts. What is per process
is gathered from every worker: `/healthz`, `/metrics` (each sample labelled
`worker="i"`), `/v1/node` and its drain, and the live calls (`GET /v1/calls/live`: the
lists are joined; `DELETE /v1/calls/live/{id}`: the worker that holds the call
answers). FANOUT_GET is the list to extend when a route of that kind appears.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .supervisor import Child, Cluster

__all__ = ["FANOUT_GET", "Front", "merge_json", "merge_metrics"]

log = logging.getLogger("relay.cluster")

# GET paths whose answer is per worker: JSON lists are joined (merge_json).
FANOUT_GET = frozenset({"/v1/calls/live", "/v1/node"})
# Paths sent to every worker whatever the method (the node's own state).
FANOUT_ALL = frozenset({"/v1/node/drain"})
# Paths (prefixes) where exactly one worker holds the thing: the first non-404 wins.
FIRST_FOUND = ("/v1/calls/live/",)
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "upgrade",
                  "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "content-length"})


def merge_json(bodies: list[Any]) -> Any:
    """One answer from the workers' answers: lists joined, other values from the first
    worker; a `next` cursor is dropped (it belongs to one worker)."""
    if not bodies or not all(isinstance(b, dict) for b in bodies):
        return bodies[0] if bodies else {}
    out: dict[str, Any] = {}
    for b in bodies:
        for k, v in b.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            elif k not in out:
                out[k] = v
    if "next" in out:
        out["next"] = None
    return out


def merge_metrics(texts: list[tuple[int, str]]) -> str:
    """Prometheus text of every worker as one exposition: each family's HELP and TYPE
    once, then its samples from every worker with a `worker` label."""
    families: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for index, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    head = families.setdefault(family, [])
                    if not any(h.split(" ", 2)[1] == parts[1] for h in head):
                        head.append(line)
                continue
            if not line.strip():
                continue
            name, brace, rest = line.partition("{")
            if brace:
                labelled = f'{name}{{worker="{index}",{rest}'
                labelled = labelled.replace(",}", "}")
            else:
                name, _, value = line.partition(" ")
                labelled = f'{name}{{worker="{index}"}} {value}'
            samples.setdefault(family or name, []).append(labelled)
    out: list[str] = []
    for family in dict.fromkeys([*families, *samples]):
        out.extend(families.get(family, []))
        out.extend(samples.get(family, []))
    return "\n".join(out) + "\n"


class Front:
    """The aiohttp server on `--http` for the whole set."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, addr: tuple[str, int]) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, addr[0], addr[1], reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- routing -------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if method == "GET" and path == "/healthz":
            return await self._health(request)
        if method == "GET" and path == "/metrics":
            return await self._metrics(request)
        if path in FANOUT_ALL or (method == "GET" and path in FANOUT_GET):
            return await self._fanout(request)
        if path.startswith(FIRST_FOUND) and method != "GET":
            return await self._first_found(request)
        up = self._up()
        if not up:
            return _unavailable()
        return await self._proxy(request, up[0])

    def _up(self) -> list[Child]:
        return [w for w in self.cluster.workers if w.up]

    @staticmethod
    def _url(w: Child, request: web.Request) -> str:
        assert w.http is not None
        return f"http://{w.http[0]}:{w.http[1]}{request.rel_url}"

    @staticmethod
    def _headers(request: web.Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in _HOP}

    async def _proxy(self, request: web.Request, w: Child) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        try:
            async with self._session.request(request.method, self._url(w, request),
                                             headers=self._headers(request), data=body,
                                             allow_redirects=False) as r:
                resp = web.StreamResponse(status=r.status, reason=r.reason)
                for k, v in r.headers.items():
                    if k.lower() not in _HOP:
                        resp.headers.add(k, v)
                if r.content_length is not None:
                    resp.content_length = r.content_length
                await resp.prepare(request)
                async for chunk in r.content.iter_chunked(65536):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s did not answer %s %s: %s", w.name, request.method,
                        request.path, exc)
            return _unavailable(f"{w.name} did not answer")

    async def _each(self, request: web.Request, workers: list[Child]
                    ) -> list[tuple[Child, int, bytes, str]]:
        """The same request to each worker: (worker, status, body, content type);
        a worker that does not answer is left out."""
        assert self._session is not None
        session = self._session
        body = await request.read()
        headers = self._headers(request)
        headers.pop("Accept-Encoding", None)

        async def one(w: Child) -> tuple[Child, int, bytes, str] | None:
            try:
                async with session.request(request.method, self._url(w, request),
                                           headers=headers, data=body,
                                           timeout=aiohttp.ClientTimeout(total=10)) as r:
                    return w, r.status, await r.read(), r.content_type
            except (TimeoutError, aiohttp.ClientError):
                return None

        got = await asyncio.gather(*(one(w) for w in workers))
        return [g for g in got if g is not None]

    async def _fanout(self, request: web.Request) -> web.StreamResponse:
        answers = await self._each(request, self._up())
        if not answers:
            return _unavailable()
        ok = [a for a in answers if 200 <= a[1] < 300]
        if not ok:  # the same refusal everywhere (401, 403, 404...): pass the first on
            w, status, body, ctype = answers[0]
            return web.Response(status=status, body=body, content_type=ctype)
        bodies = []
        for w, _s, body, _c in ok:
            data = json.loads(body)
            if isinstance(data, dict) and request.path.startswith("/v1/node"):
                data["worker"] = self.cluster.workers.index(w)
                data = {"workers": [data], "draining": data.get("draining"),
                        "live_calls": data.get("live_calls", 0)}
            bodies.append(data)
        merged = merge_json(bodies)
        if request.path.startswith("/v1/node") and isinstance(merged, dict):
            ws = merged.get("workers", [])
            merged["draining"] = bool(ws) and all(x.get("draining") for x in ws)
            merged["live_calls"] = sum(int(x.get("live_calls", 0)) for x in ws)
        return web.json_response(merged)

    async def _first_found(self, request: web.Request) -> web.StreamResponse:
        answers = await self._each(request, self._up())
        if not answers:
            return _unavailable()
        for _w, status, body, ctype in answers:
            if status != 404:
                return web.Response(status=status, body=body, content_type=ctype)
        _w, status, body, ctype = answers[0]
        return web.Response(status=status, body=body, content_type=ctype)

    async def _health(self, request: web.Request) -> web.Response:
        answers = {id(a[0]): a for a in await self._each(request, self._up())}
        workers: list[dict[str, Any]] = []
        first: dict[str, Any] | None = None
        for i, w in enumerate(self.cluster.workers):
            a = answers.get(id(w))
            health = json.loads(a[2]) if a is not None and a[3] == "application/json" \
                else None
            if health is not None and first is None:
                first = health
            workers.append({"worker": i, "pid": w.pid, "up": w.up, "restarts": w.restarts,
                            "sip": f"{w.sip[0]}:{w.sip[1]}" if w.sip else None,
                            "http": f"{w.http[0]}:{w.http[1]}" if w.http else None,
                            "health": health})
        k = self.cluster.kamailio
        answered = [x["health"] for x in workers if x["health"] is not None]
        draining = bool(answered) and all(h.get("draining") for h in answered)
        bad = (len(answered) < len(workers) or not k.up
               or any(h.get("status") != "ok" for h in answered))
        body = dict(first or {})
        body.update({"status": "degraded" if bad else "ok", "draining": draining,
                     "workers": workers,
                     "kamailio": {"pid": k.pid, "up": k.up, "restarts": k.restarts}})
        status = 503 if not answered or draining else 200
        return web.json_response(body, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        answers = await self._each(request, self._up())
        if answers and all(a[1] in (401, 403) for a in answers):
            _w, status, body, ctype = answers[0]
            return web.Response(status=status, body=body, content_type=ctype)
        texts = [(self.cluster.workers.index(w), body.decode("utf-8", "replace"))
                 for w, status, body, _c in answers if status == 200]
        k = self.cluster.kamailio
        own = ["# HELP relay_workers_up worker processes running",
               "# TYPE relay_workers_up gauge",
               f"relay_workers_up {sum(1 for w in self.cluster.workers if w.up)}",
               "# HELP relay_worker_restarts_total restarts of a worker or kamailio",
               "# TYPE relay_worker_restarts_total counter"]
        own += [f'relay_worker_restarts_total{{child="{c.name}"}} {c.restarts}'
                for c in self.cluster.children]
        own += ["# HELP relay_kamailio_up 1 while the dispatcher runs",
                "# TYPE relay_kamailio_up gauge", f"relay_kamailio_up {1 if k.up else 0}"]
        text = "\n".join(own) + "\n" + merge_metrics(texts)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


def _unavailable(detail: str = "no worker is running") -> web.Response:
    return web.json_response({"error": "unavailable", "detail": detail}, status=503)
