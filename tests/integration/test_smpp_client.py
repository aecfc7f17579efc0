"""SmppClient against an SmppServer over a real loopback socket: bind, submit, deliver,
and reconnect after the server goes away and comes back on the same port."""

from __future__ import annotations

import asyncio

import pytest

from relay.io.smpp_client import SmppClient
from relay.io.smpp_server import OnMessage, SessionRef, SmppServer
from relay.sms import constants as c
from relay.sms.message import SmsMessage
from relay.sms.pdu import SubmitSmResp
from relay.sms.session import SessionConfig

pytestmark = pytest.mark.integration


async def test_submit_deliver_and_reconnect() -> None:
    upstream_got: list[SmsMessage] = []
    client_got: list[SmsMessage] = []

    async def smsc_hook(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        assert ref.system_id == "relay"
        upstream_got.append(msg)
        return c.ESME_ROK, f"up-{len(upstream_got)}"

    async def client_hook(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        client_got.append(msg)
        return c.ESME_ROK, ""

    def make_server(port: int) -> SmppServer:
        return SmppServer("127.0.0.1", port, {"relay": "pw"}, on_message=smsc_hook)

    smsc = make_server(0)
    await smsc.start()
    port = smsc.port
    client = SmppClient("127.0.0.1", port, "relay", "pw", on_message=client_hook,
                        config=SessionConfig(response_timeout=5), backoff_initial=0.05,
                        backoff_max=0.2)
    await client.start()
    try:
        await client.wait_bound(5)
        (resp,) = await client.submit_text("8617000000001", "8613900000002", "Hello €5 [ok]")
        assert resp == SubmitSmResp(sequence=resp.sequence, message_id="up-1")
        assert upstream_got[0].text == "Hello €5 [ok]"
        assert upstream_got[0].destination_addr == "8613900000002"

        long_reply = "好的，马上下楼取件，谢谢！" * 12  # noqa: RUF001 (UCS-2, 3 parts)
        resps = await smsc.deliver_text("relay", "8613900000002", "8617000000001", long_reply)
        assert len(resps) == 3 and all(r.command_status == 0 for r in resps)
        for _ in range(100):
            if client_got:
                break
            await asyncio.sleep(0.02)
        assert [m.text for m in client_got] == [long_reply]
        assert client_got[0].source_addr == "8613900000002"

        await smsc.stop()
        for _ in range(100):
            if not client.bound:
                break
            await asyncio.sleep(0.02)
        assert not client.bound

        smsc = make_server(port)
        await smsc.start()
        await client.wait_bound(5)
        assert client.connects == 2
        (resp,) = await client.submit_text("8617000000001", "8613900000002", "again")
        assert resp.command_status == 0 and upstream_got[-1].text == "again"
    finally:
        await client.stop()
        await smsc.stop()


async def test_bad_password_is_retried_not_bound() -> None:
    smsc = SmppServer("127.0.0.1", 0, {"relay": "pw"})
    await smsc.start()
    client = SmppClient("127.0.0.1", smsc.port, "relay", "nope", backoff_initial=0.05,
                        backoff_max=0.1)
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.wait_bound(0.5)
        assert client.last_bind_error == c.ESME_RINVPASWD
        assert client.connects == 0
    finally:
        await client.stop()
        await smsc.stop()


async def test_window_limits_outstanding_submits() -> None:
    release = asyncio.Event()
    in_flight = 0
    peak = 0

    async def slow(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return c.ESME_ROK, ""

    smsc = SmppServer("127.0.0.1", 0, {"relay": "pw"}, on_message=slow)
    await smsc.start()
    client = SmppClient("127.0.0.1", smsc.port, "relay", "pw",
                        config=SessionConfig(window=3, response_timeout=5))
    await client.start()
    try:
        await client.wait_bound(5)
        tasks = [asyncio.create_task(client.submit_text("1", "2", f"m{i}")) for i in range(8)]
        await asyncio.sleep(0.3)
        assert peak == 3  # the window held the other five back
        release.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert all(r[0].command_status == 0 for r in results)
    finally:
        await client.stop()
        await smsc.stop()


async def test_deliveries_round_robin_over_binds_and_receipts_surface() -> None:
    from datetime import datetime

    from relay.sms.receipt import Receipt, receipt_deliver_sm

    smsc = SmppServer("127.0.0.1", 0, {"relay": "pw"})
    await smsc.start()
    got: dict[int, list[SmsMessage]] = {1: [], 2: []}

    def hook_for(n: int) -> OnMessage:
        async def hook(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
            got[n].append(msg)
            return c.ESME_ROK, ""
        return hook

    clients = [SmppClient("127.0.0.1", smsc.port, "relay", "pw", on_message=hook_for(n))
               for n in (1, 2)]
    for cl in clients:
        await cl.start()
    try:
        for cl in clients:
            await cl.wait_bound(5)
        assert len(smsc.bound_receivers("relay")) == 2
        for i in range(4):
            await smsc.deliver_text("relay", "X", "B", f"msg {i}")
        receipt = Receipt(message_id="up-7", stat="DELIVRD",
                          submit_date=datetime(2026, 11, 22, 13, 0),
                          done_date=datetime(2026, 11, 22, 13, 1))
        resp = await smsc.deliver("relay", receipt_deliver_sm("B", "X", receipt))
        assert resp.command_status == 0
        await asyncio.sleep(0.1)
        assert len(got[1]) + len(got[2]) == 5
        assert abs(len(got[1]) - len(got[2])) == 1  # round-robin over the two binds
        receipts = [m.receipt for m in got[1] + got[2] if m.receipt is not None]
        assert receipts == [receipt]
    finally:
        for cl in clients:
            await cl.stop()
        await smsc.stop()
