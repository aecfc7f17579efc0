"""SmppServer on a real loopback socket against smpplib (a real, independent SMPP client)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.gsm
import smpplib.smpp
from sms_helpers import close, connect, join_parts, receive

from relay.io.smpp_server import NoRouteError, SessionRef, SmppServer
from relay.sms import constants as c
from relay.sms.message import SmsMessage
from relay.sms.pdu import BindTransceiver, EnquireLink, GenericNack, PduFramer, SubmitSm
from relay.sms.session import SessionConfig

pytestmark = pytest.mark.integration

X = "8617000000001"  # the virtual number
A = "8613800000001"
B = "8613900000002"


def submit(cl: smpplib.client.Client, **kw: Any) -> Any:
    cl.send_message(**kw)
    return cl.read_pdu()


@pytest.fixture
async def server() -> AsyncIterator[SmppServer]:
    srv = SmppServer("127.0.0.1", 0, {"gw": "secret", "other": "pw2"},
                     config=SessionConfig(enquire_link_interval=60))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_bind_good_and_bad_credentials(server: SmppServer) -> None:
    def run() -> tuple[int, int, int]:
        ok = connect(server.port)
        status = int(ok.bind_transceiver(system_id="gw", password="secret").status)
        close(ok)
        codes = []
        for sid, pw in (("gw", "wrong"), ("nobody", "secret")):
            bad = connect(server.port)
            with pytest.raises(smpplib.exceptions.PDUError) as e:
                bad.bind_transceiver(system_id=sid, password=pw)
            codes.append(e.value.args[1])
            bad.disconnect()
        return status, codes[0], codes[1]

    assert await asyncio.to_thread(run) == (0, c.ESME_RINVPASWD, c.ESME_RINVSYSID)


async def test_default_hook_refuses_with_rx_r_appn(
    server: SmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.sms.smpp")

    def run() -> Any:
        cl = connect(server.port)
        cl.bind_transmitter(system_id="gw", password="secret")
        resp = submit(cl, source_addr=A, destination_addr=X, short_message=b"hi")
        close(cl)
        return resp

    resp = await asyncio.to_thread(run)
    assert resp.command == "submit_sm_resp" and int(resp.status) == c.ESME_RX_R_APPN
    # Debug logging names the message, with numbers masked.
    assert "86138****0001" in caplog.text
    assert A not in caplog.text and X not in caplog.text


async def test_ucs2_and_concatenated_forwarded_to_receiver(server: SmppServer) -> None:
    seen: list[SmsMessage] = []

    async def hook(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        assert ref.system_id == "gw"
        seen.append(msg)
        assert msg.text is not None
        # The router's job in production: forward to B with X as the sender.
        await server.deliver_text(ref.system_id, X, B, msg.text)
        return c.ESME_ROK, f"relay-{len(seen)}"

    server.on_message = hook
    chinese = "您的订单已送达，请取件。"  # noqa: RUF001 (real Chinese punctuation)
    long_text = ("Your courier is at the north gate with order 1234, please come down. " * 6)[:400]
    # smpplib cuts UCS-2 every 134 octets without looking: this emoji's surrogate pair
    # straddles parts 1 and 2, and must still come out whole.
    long_ucs2 = "订" * 66 + "😀" + "单" * 80

    rx = await asyncio.to_thread(connect, server.port)
    await asyncio.to_thread(rx.bind_receiver, system_id="gw", password="secret")
    receiving = asyncio.create_task(asyncio.to_thread(receive, rx, 1 + 3 + 3))

    def send() -> list[Any]:
        tx = connect(server.port)
        # Kannel-style: a TX bind sends, the RX bind of the same gateway receives
        # (a TRX bind of "gw" would share the round-robin of deliveries).
        tx.bind_transmitter(system_id="gw", password="secret")
        resps = [submit(tx, source_addr=A, destination_addr=X, short_message=chinese.encode(
            "utf-16-be"), data_coding=smpplib.consts.SMPP_ENCODING_ISO10646)]
        parts, coding, esm = smpplib.gsm.make_parts(long_text)
        assert len(parts) == 3
        for part in parts:
            resps.append(submit(tx, source_addr=A, destination_addr=X, short_message=part,
                                data_coding=coding, esm_class=esm))
        parts, coding, esm = smpplib.gsm.make_parts(long_ucs2)
        assert len(parts) == 3 and coding == smpplib.consts.SMPP_ENCODING_ISO10646
        assert parts[0][-2:] == "😀".encode("utf-16-be")[:2]  # the pair really is cut
        for part in parts:
            resps.append(submit(tx, source_addr=A, destination_addr=X, short_message=part,
                                data_coding=coding, esm_class=esm))
        close(tx)
        return resps

    resps = await asyncio.to_thread(send)
    assert [int(r.status) for r in resps] == [0] * 7
    assert resps[0].message_id == b"relay-1"  # a single part: the hook's id
    # Every part of a long message is answered with its own id, in one format, and the
    # message lists them in part order (issue 17: each must lead to the record).
    assert len({r.message_id for r in resps[1:]}) == 6
    assert all(re.fullmatch(rb"m[0-9a-f]{16}", r.message_id) for r in resps[1:])

    delivered = await asyncio.wait_for(receiving, 10)
    await asyncio.to_thread(close, rx)

    assert [m.text for m in seen] == [chinese, long_text, long_ucs2]
    assert [len(m.parts) for m in seen] == [1, 3, 3]
    assert [list(m.part_ids) for m in seen[1:]] == [
        [r.message_id.decode() for r in resps[1:4]], [r.message_id.decode() for r in resps[4:7]]]
    first, dc1 = join_parts(delivered[:1])
    assert dc1 == 8 and first.decode("utf-16-be") == chinese
    second, dc2 = join_parts(delivered[1:4])
    assert dc2 == 0 and second.decode("ascii") == long_text
    third, dc3 = join_parts(delivered[4:])
    assert dc3 == 8 and third.decode("utf-16-be") == long_ucs2
    # Our own split keeps the pair in one part: every part decodes on its own.
    for d in delivered[4:]:
        d.short_message[6:].decode("utf-16-be")
    assert {d.source_addr for d in delivered} == {X.encode()}
    assert {d.destination_addr for d in delivered} == {B.encode()}


async def test_deliver_without_receiver(server: SmppServer) -> None:
    with pytest.raises(NoRouteError):
        await server.deliver_text("gw", X, B, "hello")


async def test_enquire_link_unbind_rebind(server: SmppServer) -> None:
    def run() -> tuple[str, str, int]:
        cl = connect(server.port)
        cl.bind_transceiver(system_id="gw", password="secret")
        cl.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=cl))
        probe = cl.read_pdu().command
        unbind = cl.unbind().command
        cl.disconnect()
        cl2 = connect(server.port)
        status = int(cl2.bind_transceiver(system_id="gw", password="secret").status)
        close(cl2)
        return probe, unbind, status

    assert await asyncio.to_thread(run) == ("enquire_link_resp", "unbind_resp", 0)


async def _read_pdus(reader: asyncio.StreamReader, framer: PduFramer, n: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "connection closed early"
        out += framer.feed(data)
    return out


async def test_malformed_pdu_gets_generic_nack_and_link_survives(server: SmppServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    framer = PduFramer()
    writer.write(bytes(BindTransceiver(system_id="gw", password="secret", sequence=1)))
    (bind_resp,) = await _read_pdus(reader, framer, 1)
    assert bind_resp.command_status == 0

    writer.write(bytes.fromhex("00000010 00000099 00000000 0000002a"))  # unknown command_id
    writer.write(bytes.fromhex("00000014 00000015 00000000 0000002b 00000000"))  # bad length
    writer.write(bytes(EnquireLink(sequence=44)))
    got = await _read_pdus(reader, framer, 3)
    assert got[0] == GenericNack(sequence=42, command_status=c.ESME_RINVCMDID)
    assert got[1] == GenericNack(sequence=43, command_status=c.ESME_RINVCMDLEN)
    assert got[2].command_id == c.ENQUIRE_LINK_RESP and got[2].sequence == 44

    # A field error gets the request's own response with the specific status.
    bad = bytes(SubmitSm(sequence=45, source_addr="1", destination_addr="2"))
    bad = bad[:18] + b"9" * 30 + bad[19:]
    bad = len(bad).to_bytes(4, "big") + bad[4:]
    writer.write(bad)
    (resp,) = await _read_pdus(reader, framer, 1)
    assert (resp.command_id, resp.command_status, resp.sequence) == (
        c.SUBMIT_SM_RESP, c.ESME_RINVSRCADR, 45)

    # A command_length below 16 loses the framing: generic_nack, then the link closes.
    writer.write(bytes.fromhex("00000008 00000015"))
    (nack,) = await _read_pdus(reader, framer, 1)
    assert nack.command_status == c.ESME_RINVCMDLEN
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_throttled_submit_gets_0x58() -> None:
    async def ok(ref: SessionRef, msg: SmsMessage) -> tuple[int, str]:
        return c.ESME_ROK, ""

    srv = SmppServer("127.0.0.1", 0, {"gw": "secret"}, on_message=ok,
                     config=SessionConfig(throttle_rate=1.0, throttle_burst=2))
    await srv.start()
    try:
        def run() -> list[int]:
            cl = connect(srv.port)
            cl.bind_transmitter(system_id="gw", password="secret")
            out = [int(submit(cl, source_addr=A, destination_addr=X, short_message=b"x").status)
                   for _ in range(3)]
            close(cl)
            return out

        assert await asyncio.to_thread(run) == [0, 0, c.ESME_RTHROTTLED]
    finally:
        await srv.stop()
