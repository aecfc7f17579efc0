"""End to end: the per-call decision hook (`[dialplan] hook_url`) with SIPp calls through
`relay serve`, and a hook receiver on loopback that allows, refuses, is slow or fails.

The relay signs each request like the SMS webhook, never tells the hook B's number, and
waits at most `hook_timeout`: a slow or failing hook gets `hook_fallback` (here
"refuse", so the fallback shows as a 603), counted in relay_sip_hook_errors_total.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import A, B, X, bind, callee, caller, udp_port, write_config
from test_policy_calls import _refused
from test_sip_calls import _relay, _run

pytestmark = pytest.mark.integration
SECRET = "hook-secret"


class Receiver:
    """A hook on loopback; `mode` is allow, refuse, slow or fail."""

    def __init__(self) -> None:
        self.mode = "allow"
        self.seen: list[tuple[dict[str, Any], str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.seen.append((json.loads(body),
                                      self.headers.get("X-Relay-Signature", ""), body))
                if receiver.mode == "slow":
                    time.sleep(1.0)
                if receiver.mode == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                out = json.dumps({"action": "refuse" if receiver.mode == "refuse"
                                  else "allow"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/decide"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_hook_allows_refuses_and_falls_back(relay_factory: Any, tmp_path: Path) -> None:
    hook = Receiver()
    try:
        out = udp_port()
        cfg = write_config(tmp_path / "cfg", {}, dialplan={
            "hook_url": hook.url, "hook_secret": SECRET, "hook_timeout": 0.3,
            "hook_fallback": "refuse"})
        relay = _relay(relay_factory, tmp_path, out, "--config", str(cfg))
        binding = bind(relay.base, out_id="order-9")

        uas = callee(tmp_path, out, number=B, name="callee-allowed", extra=["-m", "1"])
        uac = caller(tmp_path, relay.sip_port, number=A, extra=["-m", "1", "-d", "100"],
                     name="caller-allowed")
        _run(uas, uac)
        asked, signature, raw = hook.seen[0]
        assert signature == "sha256=" + hmac.new(SECRET.encode(), raw,
                                                  hashlib.sha256).hexdigest()
        assert asked["type"] == "call.route" and asked["caller"] == A and asked["x"] == X
        assert asked["binding"] == binding["id"] and asked["out_id"] == "order-9"
        assert B not in raw.decode()

        for _i, mode in enumerate(("refuse", "slow", "fail")):
            hook.mode = mode
            t0 = time.monotonic()
            final = _refused(tmp_path, relay.sip_port, 603, A, X, f"hook-{mode}")
            assert 'text="hook"' in final, mode
            if mode == "slow":
                assert time.monotonic() - t0 < 0.95  # the relay did not wait for it
        with urllib.request.urlopen(relay.base + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "relay_sip_hook_errors_total 2" in metrics
    finally:
        hook.close()


def test_texts_ask_the_same_hook(relay_factory: Any, tmp_path: Path) -> None:
    """A text is asked about as a call is (`sms.route`, signed, never B's number); a
    refusal is the SMS refusal table's (HTTP 403 `hook`), a failing hook the fallback."""
    import sms_helpers as sms

    hook = Receiver()
    try:
        cfg = write_config(tmp_path / "cfg", {}, dialplan={
            "hook_url": hook.url, "hook_secret": SECRET, "hook_timeout": 0.3,
            "hook_fallback": "refuse"})
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", ["--config", str(cfg)], "sms")
        binding = sms.make_binding(relay.base)
        hook.mode = "refuse"
        status, body = sms.http("POST", f"{relay.base}/v1/sms",
                                {"from": sms.A, "to": sms.X, "text": "hello"})
        assert status == 403 and body["error"] == "hook", body
        asked, signature, raw = hook.seen[-1]
        assert signature == "sha256=" + hmac.new(SECRET.encode(), raw,
                                                  hashlib.sha256).hexdigest()
        assert asked["type"] == "sms.route" and asked["caller"] == sms.A
        assert asked["x"] == sms.X and asked["binding"] == binding
        assert sms.B not in raw.decode()
        hook.mode = "allow"
        status, body = sms.http("POST", f"{relay.base}/v1/sms",
                                {"from": sms.A, "to": sms.X, "text": "hello again"})
        assert (body or {}).get("error") != "hook", (status, body)
        assert len(hook.seen) == 2
        hook.mode = "fail"
        status, body = sms.http("POST", f"{relay.base}/v1/sms",
                                {"from": sms.A, "to": sms.X, "text": "and again"})
        assert status == 403 and body["error"] == "hook"  # the fallback: refuse
        with urllib.request.urlopen(relay.base + "/metrics", timeout=5) as r:
            assert "relay_sms_hook_errors_total 1" in r.read().decode()
    finally:
        hook.close()
