"""Headless Chromium driven over the DevTools protocol (a WebSocket, through aiohttp):
navigate, evaluate, wait for a condition, take screenshots, and keep every network
response the page received (to check what a role was sent, not only what it shows)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
from procs import stop_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; use as `async with Browser(tmp) as b:`."""

    def __init__(self, workdir: Path) -> None:
        self.profile = workdir / "chromium-profile"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.responses: dict[str, dict[str, Any]] = {}  # requestId -> url, mime, status
        self.requests: list[str] = []  # every URL the page asked for
        self.console: list[str] = []

    async def __aenter__(self) -> Browser:
        assert CHROMIUM is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--mute-audio",
             "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        for _ in range(100):
            async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                break
            await asyncio.sleep(0.1)
        self.ws = await self.http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Network.enable", maxResourceBufferSize=50_000_000,
                        maxTotalBufferSize=200_000_000)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        stop_process(self.proc)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(RuntimeError(str(data["error"])))
                else:
                    fut.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.responseReceived":
                r = params["response"]
                self.responses[params["requestId"]] = {
                    "url": r["url"], "mime": r.get("mimeType"), "status": r.get("status")}
            elif method == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value")) for a in params["args"]))

    async def send(self, method: str, **params: Any) -> Any:
        assert self.ws is not None
        n = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[n] = fut
        await self.ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
        return await asyncio.wait_for(fut, 60)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait("document.readyState === 'complete'")

    async def eval(self, expr: str) -> Any:
        """The value of a JS expression (promises awaited)."""
        r = await self.send("Runtime.evaluate", expression=expr, awaitPromise=True,
                            returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait(self, expr: str, timeout: float = 30.0) -> Any:
        """Poll until `expr` is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError):
                # A DOM node does not serialise: found is found.
                value = await self.eval(f"(v => v instanceof Node ? true : v)({expr})")
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expr}")
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(r["data"]))

    async def bodies(self, prefix: str) -> list[tuple[str, str]]:
        """(url, body text) of every text response from URLs starting with `prefix`."""
        out = []
        for rid, r in list(self.responses.items()):
            if not r["url"].startswith(prefix) or "wav" in (r["mime"] or ""):
                continue
            with contextlib.suppress(RuntimeError):  # evicted or not kept (redirects)
                body = await self.send("Network.getResponseBody", requestId=rid)
                if not body.get("base64Encoded"):
                    out.append((r["url"], body["body"]))
        return out
