"""SMS through `relay serve --smpp` end to end, with smpplib gateways on real sockets.

The courier's gateway binds as a transmitter, the same gateway's receiver bind gets the
forwarded deliver_sm (route "gateway", the default): it must show X as the sender and
carry nothing of the sender's real number.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import smpplib.consts
import smpplib.gsm
import smpplib.smpp
from conftest import free_port
from sms_helpers import (
    STRANGER,
    A,
    B,
    X,
    close,
    connect,
    digits,
    http,
    join_parts,
    make_binding,
    receive,
    tap,
    wait_messages,
)

from relay.sms import constants as c
from relay.sms.pdu import BindTransceiver, EnquireLink, GenericNack, PduFramer, SubmitSm

pytestmark = pytest.mark.integration

CHINESE = "您的外卖已送达，请到北门取餐。"  # noqa: RUF001 (real Chinese punctuation)
LONG = ("Courier here: I am at the north gate with your order 1234, please come down. " * 6)[:420]


@pytest.fixture
def relay(relay_factory: Any, tmp_path: Path) -> Any:
    port = free_port()
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "gw1:pw1"], "sms")
    node.smpp_port = port
    return node


def send(tx: Any, src: str, text_or_parts: Any, **kw: Any) -> None:
    """Send without reading the response: the relay answers the last part only after
    the receiver bind (read later by the test) has taken the forwarded message."""
    if isinstance(text_or_parts, str):
        parts, coding, esm = smpplib.gsm.make_parts(text_or_parts)
    else:
        parts, coding, esm = text_or_parts
    for part in parts:
        tx.send_message(source_addr_ton=1, source_addr_npi=1, source_addr=digits(src),
                        dest_addr_ton=1, dest_addr_npi=1, destination_addr=digits(X),
                        short_message=part, data_coding=coding, esm_class=esm, **kw)
    return None


def read_resps(tx: Any, n: int) -> list[Any]:
    return [tx.read_pdu() for _ in range(n)]


def test_ucs2_and_concatenated_reach_the_other_party_with_x_as_sender(relay: Any) -> None:
    binding = make_binding(relay.base)
    rx = connect(relay.smpp_port)
    rx.bind_receiver(system_id="gw1", password="pw1")
    wire = tap(rx)
    tx = connect(relay.smpp_port)
    tx.bind_transmitter(system_id="gw1", password="pw1")

    # A (courier) -> X: Chinese, one UCS-2 part.
    send(tx, A, ([CHINESE.encode("utf-16-be")], smpplib.consts.SMPP_ENCODING_ISO10646, 0))
    delivered = receive(rx, 1)
    (resp,) = read_resps(tx, 1)
    assert int(resp.status) == 0 and resp.message_id
    text, dc = join_parts(delivered)
    assert dc == 8 and text.decode("utf-16-be") == CHINESE

    # B (customer) -> X: three GSM parts, reassembled, re-split and delivered in order.
    parts = smpplib.gsm.make_parts(LONG)
    assert len(parts[0]) == 3
    send(tx, B, parts)
    long_delivered = receive(rx, 3)
    resps = read_resps(tx, 3)
    assert [int(r.status) for r in resps] == [0, 0, 0]
    text, dc = join_parts(long_delivered)
    assert dc == 0 and text.decode("ascii") == LONG
    assert [p.short_message[5] for p in long_delivered] == [1, 2, 3]  # in order

    close(tx)
    close(rx)
    first, rest = delivered[0], long_delivered
    assert first.source_addr == digits(X).encode() and first.destination_addr == digits(B).encode()
    assert {p.source_addr for p in rest} == {digits(X).encode()}
    assert {p.destination_addr for p in rest} == {digits(A).encode()}
    # Nothing of either sender's real number anywhere in the PDUs as they were on the
    # wire (A's number appears only as the destination of B's message, after it).
    cut = bytes(wire).index(digits(A).encode())
    assert digits(A).encode() not in bytes(wire)[:cut - 40]
    assert bytes(wire).count(digits(A).encode()) == 3  # once per part, as destination
    assert digits(B).encode() not in bytes(wire)[cut:]

    recs = wait_messages(relay.base, {"binding": binding}, 2)
    assert {r["status"] for r in recs} == {"delivered"}
    assert sorted(r["parts"] for r in recs) == [1, 3]
    assert all("text" not in r and len(r["text_sha256"]) == 64 for r in recs)
    newest = recs[0]
    assert newest["sender"] == B and newest["recipient"] == A and newest["x"] == X
    assert newest["forwarded_at"] and newest["delivered_at"] and newest["received_at"]


def test_delivery_receipt_carries_the_senders_message_id(relay: Any) -> None:
    make_binding(relay.base)
    rx = connect(relay.smpp_port)
    rx.bind_receiver(system_id="gw1", password="pw1")
    tx = connect(relay.smpp_port)
    tx.bind_transmitter(system_id="gw1", password="pw1")
    send(tx, A, "Outside, blue jacket.", registered_delivery=1)
    got = receive(rx, 2)  # the message for B, then the receipt for A
    (resp,) = read_resps(tx, 1)
    close(tx)
    close(rx)
    msg, receipt = got
    assert msg.destination_addr == digits(B).encode()
    assert int(receipt.esm_class) & 0x3C == c.ESM_CLASS_DELIVERY_RECEIPT
    assert receipt.source_addr == digits(X).encode()
    assert receipt.destination_addr == digits(A).encode()
    assert f"id:{resp.message_id.decode()}".encode() in receipt.short_message
    assert b"stat:DELIVRD" in receipt.short_message


def test_frozen_unknown_and_stranger_are_refused_and_recorded(relay: Any) -> None:
    binding = make_binding(relay.base)
    tx = connect(relay.smpp_port)
    tx.bind_transceiver(system_id="gw1", password="pw1")

    send(tx, STRANGER, "let me in")
    (stranger,) = read_resps(tx, 1)
    tx.send_message(source_addr_ton=1, source_addr=digits(A), dest_addr_ton=1,
                    destination_addr="8617099999999", short_message=b"who?")
    (unknown,) = read_resps(tx, 1)
    assert http("POST", f"{relay.base}/v1/bindings/{binding}/freeze")[0] == 200
    send(tx, A, "are you there?")
    (frozen,) = read_resps(tx, 1)
    close(tx)

    assert int(stranger.status) == c.ESME_RX_P_APPN
    assert int(unknown.status) == c.ESME_RINVDSTADR
    assert int(frozen.status) == c.ESME_RX_R_APPN

    recs = wait_messages(relay.base, {"x": X}, 2)
    by_reason = {r["reason"]: r for r in recs}
    assert by_reason["frozen"]["status"] == "refused"
    assert by_reason["frozen"]["binding"] == binding
    assert by_reason["frozen"]["command_status"] == c.ESME_RX_R_APPN
    assert by_reason["stranger"]["sender"] == STRANGER
    (unknown_rec,) = wait_messages(relay.base, {"x": "+8617099999999"}, 1)
    assert unknown_rec["reason"] == "no_binding" and unknown_rec["binding"] is None
    one = http("GET", f"{relay.base}/v1/messages/{by_reason['frozen']['id']}")
    assert one[0] == 200 and one[1]["reason"] == "frozen"
    assert http("GET", f"{relay.base}/v1/messages/nope")[0] == 404


def test_enquire_link_unbind_rebind_and_generic_nack(relay: Any) -> None:
    cl = connect(relay.smpp_port)
    cl.bind_transceiver(system_id="gw1", password="pw1")
    cl.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=cl))
    assert cl.read_pdu().command == "enquire_link_resp"
    assert cl.unbind().command == "unbind_resp"
    cl.disconnect()
    cl2 = connect(relay.smpp_port)
    assert int(cl2.bind_transceiver(system_id="gw1", password="pw1").status) == 0
    close(cl2)

    with socket.create_connection(("127.0.0.1", relay.smpp_port), timeout=5) as s:
        framer = PduFramer()

        def read(n: int) -> list[Any]:
            out: list[Any] = []
            while len(out) < n:
                data = s.recv(4096)
                assert data, "closed early"
                out += framer.feed(data)
            return out

        s.sendall(bytes(BindTransceiver(system_id="gw1", password="pw1", sequence=1)))
        assert read(1)[0].command_status == 0
        s.sendall(bytes.fromhex("00000010 00000099 00000000 0000002a"))  # unknown command
        s.sendall(bytes.fromhex("00000014 00000015 00000000 0000002b 00000000"))  # bad length
        s.sendall(bytes(EnquireLink(sequence=44)))
        got = read(3)
        assert got[0] == GenericNack(sequence=42, command_status=c.ESME_RINVCMDID)
        assert got[1] == GenericNack(sequence=43, command_status=c.ESME_RINVCMDLEN)
        assert got[2].command_id == c.ENQUIRE_LINK_RESP and got[2].sequence == 44
        # Still usable: a submit is routed (no binding on this X: ESME_RINVDSTADR).
        s.sendall(bytes(SubmitSm(sequence=45, source_addr=digits(A), source_addr_ton=1,
                                 destination_addr=digits(X), dest_addr_ton=1,
                                 short_message=b"hi")))
        (resp,) = read(1)
        assert (resp.command_id, resp.sequence, resp.command_status) == (
            c.SUBMIT_SM_RESP, 45, c.ESME_RINVDSTADR)


def test_sms_throttle_setting_applies_per_bind(relay_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "relay.toml"
    cfg.write_text("[sms]\nthrottle = 1\nthrottle_burst = 2\n")
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         ["--config", str(cfg), "--smpp", f"127.0.0.1:{port}",
                          "--smpp-account", "gw1:pw1"], "throttle")
    tx = connect(port)
    tx.bind_transmitter(system_id="gw1", password="pw1")
    statuses = []
    for i in range(3):
        send(tx, A, f"x{i}")  # different texts: the same one again would be a resend
        statuses.append(int(read_resps(tx, 1)[0].status))
    close(tx)
    # Two within the burst reach routing (no binding: RINVDSTADR); the third is throttled
    # by the session before routing, so it is not recorded.
    assert statuses == [c.ESME_RINVDSTADR, c.ESME_RINVDSTADR, c.ESME_RTHROTTLED]
    assert len(wait_messages(node.base, {"x": X}, 2)) == 2
