"""SMS beyond the gateway route: the relay as an SMPP client of an upstream SMSC (a peer
in its own process), and HTTP in (`POST /v1/sms`) and out (signed, retried webhook)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import free_port
from sms_helpers import A, B, X, close, connect, digits, http, make_binding, receive, wait_messages

pytestmark = pytest.mark.integration

# The upstream SMSC: relay.io.smpp_server.SmppServer in a child process. Once the relay
# binds (and the test says go) it sends one MO deliver_sm (A -> X), prints each submit_sm
# it gets as JSON, and answers the first with a delivery receipt.
SMSC = r"""
import asyncio, json, sys
from datetime import datetime
from relay.io.smpp_server import SmppServer
from relay.sms.receipt import Receipt, receipt_deliver_sm

async def main(port, a, x):
    n = 0
    srv = None
    async def hook(ref, msg):
        nonlocal n
        n += 1
        print("SUBMIT " + json.dumps({
            "src": msg.source_addr, "dst": msg.destination_addr, "text": msg.text,
            "ton": msg.source_addr_ton, "rd": msg.registered_delivery,
            "parts": len(msg.parts)}), flush=True)
        mid = f"up-{n}"
        now = datetime.now()
        # A long message: each part was answered with its own id; receipt each, as SMSCs do.
        ids = list(msg.part_ids) if len(msg.parts) > 1 else [mid]
        async def receipt():
            await asyncio.sleep(0.1)
            for i in ids:
                await srv.deliver("relay", receipt_deliver_sm(
                    msg.destination_addr, msg.source_addr, Receipt(i, "DELIVRD", now, now)))
        asyncio.get_running_loop().create_task(receipt())
        return 0, mid
    srv = SmppServer("127.0.0.1", port, {"relay": "pw"}, on_message=hook)
    await srv.start()
    print("READY", flush=True)
    while not srv.bound_receivers("relay"):
        await asyncio.sleep(0.05)
    print("BOUND", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the test has made the binding
    resps = await srv.deliver_text("relay", a, x, "MO: where are you?",
                                   source_addr_ton=1, dest_addr_ton=1)
    print("MO_RESP " + json.dumps([r.command_status for r in resps]), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
"""


class Lines:
    """A child's stdout, line by line, with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        def pump() -> None:
            for line in stdout:
                self.q.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        while True:
            line = self.q.get(timeout=timeout)
            if line.startswith(prefix):
                return line[len(prefix):].strip()


def test_upstream_mo_is_forwarded_as_submit_sm_with_x_as_sender(
    relay_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    smsc = subprocess.Popen([sys.executable, "-c", SMSC, str(port), digits(A), digits(X)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    try:
        out = Lines(smsc)
        out.expect("READY")
        cfg = tmp_path / "relay.toml"
        cfg.write_text(f'[sms]\nroute = "upstream"\n[smpp.upstream]\nhost = "127.0.0.1"\n'
                       f'port = {port}\nsystem_id = "relay"\npassword = "pw"\n')
        smpp_port = free_port()
        relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                              ["--config", str(cfg), "--smpp", f"127.0.0.1:{smpp_port}",
                               "--smpp-account", "gw1:pw1"], "up")
        binding = make_binding(relay.base)
        out.expect("BOUND")
        assert smsc.stdin is not None
        smsc.stdin.write("go\n")
        smsc.stdin.flush()
        # The relay forwards before it answers the MO, so the submit_sm comes first.
        sub = json.loads(out.expect("SUBMIT "))
        assert json.loads(out.expect("MO_RESP")) == [0]
        assert sub == {"src": digits(X), "dst": digits(B), "text": "MO: where are you?",
                       "ton": 1, "rd": 1, "parts": 1}
        (rec,) = wait_messages(relay.base, {"binding": binding}, 1)
        assert rec["origin"] == "upstream" and rec["route"] == "upstream"
        assert rec["sender"] == A and rec["recipient"] == B
        # The SMSC's receipt (for its id "up-1") marks our record delivered.
        for _ in range(100):
            rec = http("GET", f"{relay.base}/v1/messages/{rec['id']}")[1]
            if rec["status"] == "delivered":
                break
            threading.Event().wait(0.05)
        assert rec["status"] == "delivered" and rec["delivered_at"]

        # A gateway's message on route "upstream": submit_sm upstream, and the SMSC's
        # receipt (its id "up-2") comes back to the gateway quoting *our* message id.
        rx = connect(smpp_port)
        rx.bind_receiver(system_id="gw1", password="pw1")
        tx = connect(smpp_port)
        tx.bind_transmitter(system_id="gw1", password="pw1")
        tx.send_message(source_addr_ton=1, source_addr=digits(B), dest_addr_ton=1,
                        destination_addr=digits(X), short_message=b"On my way down",
                        registered_delivery=1)
        resp = tx.read_pdu()
        assert int(resp.status) == 0
        sub = json.loads(out.expect("SUBMIT "))
        assert (sub["src"], sub["dst"], sub["text"]) == (digits(X), digits(A), "On my way down")
        (receipt,) = receive(rx, 1)
        assert receipt.source_addr == digits(X).encode()
        assert receipt.destination_addr == digits(B).encode()
        assert f"id:{resp.message_id.decode()} ".encode() in receipt.short_message
        assert b"stat:DELIVRD" in receipt.short_message

        # A long message, a receipt asked on part 1 only (as Kannel does): the SMSC
        # receipts each of the 3 parts the relay submitted; once all are in, the gateway
        # gets one receipt, quoting the id of its part 1 (issue 17).
        import smpplib.gsm

        parts, coding, esm = smpplib.gsm.make_parts("Second floor, door on the left. " * 12)
        assert len(parts) == 3
        seqs = [tx.send_message(source_addr_ton=1, source_addr=digits(B), dest_addr_ton=1,
                                destination_addr=digits(X), short_message=part,
                                data_coding=coding, esm_class=esm,
                                registered_delivery=1 if i == 0 else 0).sequence
                for i, part in enumerate(parts)]
        part_ids = {}
        for _ in parts:
            r = tx.read_pdu()
            assert int(r.status) == 0
            part_ids[r.sequence] = r.message_id.decode()
        sub = json.loads(out.expect("SUBMIT "))
        assert sub["parts"] == 3 and sub["rd"] == 1
        (receipt,) = receive(rx, 1)
        close(tx)
        close(rx)
        assert f"id:{part_ids[seqs[0]]} ".encode() in receipt.short_message
        assert receipt.receipted_message_id.decode() == part_ids[seqs[0]]
        assert (int(receipt.source_addr_ton), int(receipt.dest_addr_ton)) == (1, 1)
    finally:
        smsc.terminate()
        smsc.wait(10)


SECRET = "s3cret"


async def test_http_in_webhook_out_signed_and_retried(relay_factory: Any, tmp_path: Path) -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(seen) == 1 else 204)  # first try fails

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        cfg = tmp_path / "relay.toml"
        cfg.write_text(f'[sms]\nroute = "webhook"\nwebhook_url = '
                       f'"http://127.0.0.1:{hook_port}/hook"\nwebhook_secret = "{SECRET}"\n'
                       "webhook_backoff = 0.1\nretain_text = true\n")
        relay = await asyncio.to_thread(
            relay_factory, f"sqlite:///{tmp_path}/relay.db", ["--config", str(cfg)], "web",
            {"RELAY_API_TOKENS": "adm:admin,ops:ops"})
        binding = await asyncio.to_thread(make_binding, relay.base, token="adm")
        status, body = await asyncio.to_thread(
            http, "POST", f"{relay.base}/v1/sms", {"from": B, "to": X, "text": "到了吗"},
            "adm")
        assert status == 202, body
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 2
        for headers, raw in seen:
            assert headers["Idempotency-Key"] == body["id"]
            expected = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            assert headers["X-Relay-Signature"] == f"sha256={expected}"
        payload = json.loads(seen[1][1])
        assert payload["from"] == X and payload["to"] == A and payload["text"] == "到了吗"
        assert B not in seen[1][1].decode()

        # Refusals over HTTP: frozen X answers 410 with the reason, and is recorded.
        assert (await asyncio.to_thread(
            http, "POST", f"{relay.base}/v1/bindings/{binding}/freeze", None, "adm"))[0] == 200
        status, refusal = await asyncio.to_thread(
            http, "POST", f"{relay.base}/v1/sms", {"from": B, "to": X, "text": "hello?"}, "adm")
        assert status == 410 and refusal["error"] == "frozen"

        recs = await asyncio.to_thread(wait_messages, relay.base, {"x": X}, 2, 10.0, "ops")
        assert [r["status"] for r in recs] == ["refused", "forwarded"]
        assert recs[1]["sender"] == "+86139****0002"  # masked for ops
        assert recs[1]["text"] == "到了吗"  # retain_text = true
        admin = await asyncio.to_thread(
            http, "GET", f"{relay.base}/v1/messages/{body['id']}", None, "adm")
        assert admin[1]["sender"] == B and admin[1]["recipient"] == A
    finally:
        await runner.cleanup()
