"""A real Kannel (Debian `kannel`: bearerbox + smsbox) for the SMS tests (issue 17).

`Kannel` writes kannel.conf from kannel.conf.in next to this file, starts bearerbox and
smsbox on free loopback ports, sends with smsbox's HTTP sendsms, and stops both.
`Receiver` is the local aiohttp server smsbox calls for every MO message (sms-service
get-url) and every delivery report (the dlr-url given with each sendsms).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import free_port
from procs import stop_process

HERE = Path(__file__).parent


def kannel_binaries() -> tuple[str, str] | None:
    """(bearerbox, smsbox) if Kannel is installed."""
    found = [shutil.which(b) or (f"/usr/sbin/{b}" if Path(f"/usr/sbin/{b}").exists() else None)
             for b in ("bearerbox", "smsbox")]
    return (found[0], found[1]) if found[0] and found[1] else None


@dataclass
class Mo:
    """An MO message smsbox handed to the receiver."""

    sender: str
    to: str
    coding: int
    text: str


@dataclass
class Dlr:
    """A delivery report smsbox handed to the receiver (`type`: Kannel's DLR value)."""

    tag: str
    type: int
    reply: str


@dataclass
class Receiver:
    """aiohttp on a free loopback port, in its own thread; records MO and DLR calls."""

    port: int = field(default_factory=free_port)
    mo: list[Mo] = field(default_factory=list)
    dlr: list[Dlr] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("receiver did not start")

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_get("/mo", self._on_mo)
        app.router.add_get("/dlr", self._on_dlr)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    async def _on_mo(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        # The octets of text= as smsbox sent them (yarl would decode them as UTF-8).
        qs = request.rel_url.raw_query_string
        raw_text = qs.split("text=", 1)[1].split("&", 1)[0] if "text=" in qs else ""
        raw = urllib.parse.unquote_to_bytes(raw_text.replace("+", "%20"))
        coding = int(q.get("coding") or 0)
        # %b is the message as smsbox holds it: UCS-2 (coding 2) stays UTF-16BE octets.
        text = raw.decode("utf-16-be") if coding == 2 else raw.decode("utf-8", "replace")
        self.mo.append(Mo(q.get("from", ""), q.get("to", ""), coding, text))
        return web.Response(text="")

    async def _on_dlr(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        self.dlr.append(Dlr(q.get("tag", ""), int(q.get("type") or 0), q.get("reply", "")))
        return web.Response(text="")

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


class Kannel:
    """bearerbox + smsbox bound to the relay's SMPP server as one transceiver."""

    def __init__(self, workdir: Path, smpp_port: int, system_id: str, password: str,
                 receiver: Receiver) -> None:
        bins = kannel_binaries()
        assert bins is not None
        self.bearerbox, self.smsbox = bins
        self.dir = workdir
        self.receiver = receiver
        self.admin_port, self.smsbox_port, self.sendsms_port = (free_port() for _ in range(3))
        self.conf = workdir / "kannel.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text((HERE / "kannel.conf.in").read_text().format(
            dir=workdir, admin_port=self.admin_port, smsbox_port=self.smsbox_port,
            sendsms_port=self.sendsms_port, smpp_port=smpp_port, system_id=system_id,
            password=password, receiver_port=receiver.port))
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 30.0) -> None:
        """Start bearerbox, then smsbox; return once sendsms answers."""
        with open(self.dir / "bearerbox.out", "ab") as out:
            self._procs.append(subprocess.Popen([self.bearerbox, str(self.conf)],
                                                stdout=out, stderr=subprocess.STDOUT))
        self._wait_port(self.smsbox_port, timeout)
        with open(self.dir / "smsbox.out", "ab") as out:
            self._procs.append(subprocess.Popen([self.smsbox, str(self.conf)],
                                                stdout=out, stderr=subprocess.STDOUT))
        self._wait_port(self.sendsms_port, timeout)

    def _wait_port(self, port: int, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    raise RuntimeError(f"kannel exited: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"kannel port {port} did not open: {self.log()[-2000:]}")

    def status(self) -> str:
        """bearerbox's status page (plain text)."""
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?password=admin"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode("utf-8", "replace"))

    def wait_online(self, timeout: float = 30.0) -> None:
        """Until the SMPP link to the relay is bound ("online" on the status page)."""
        deadline = time.monotonic() + timeout
        page = ""
        while time.monotonic() < deadline:
            try:
                page = self.status()
            except OSError:
                page = ""
            if "relay" in page and "(online" in page:
                return
            time.sleep(0.2)
        raise AssertionError(f"kannel did not bind to the relay: {page}\n{self.log()[-3000:]}")

    def send(self, sender: str, to: str, text: str, tag: str, *, ucs2: bool = False) -> str:
        """sendsms over HTTP asking for delivery reports (delivered, failed, rejected)."""
        dlr_url = (f"http://127.0.0.1:{self.receiver.port}/dlr?tag={tag}&type=%d"
                   "&reply=%A")
        params: dict[str, Any] = {
            "username": "tester", "password": "secret", "from": sender, "to": to,
            "text": text, "charset": "UTF-8", "dlr-mask": 19, "dlr-url": dlr_url}
        if ucs2:
            params["coding"] = 2
        url = (f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms?"
               + urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def log(self) -> str:
        """bearerbox's and smsbox's logs."""
        return "".join(p.read_text(errors="replace") for p in
                       (self.dir / "bearerbox.log", self.dir / "smsbox.log") if p.exists())

    def stop(self) -> None:
        for p in reversed(self._procs):
            stop_process(p, grace=10.0)
        self._procs.clear()
