"""SMS gateways in the wild (issue 17), against `relay serve --smpp` on loopback: part ids
and a receipt per part, error responses with an empty message_id, unknown TLVs, number
forms gateways send, resends of refused messages, query_sm / cancel_sm, and a graceful
stop (in-flight messages answered, unbind to every gateway).

smpplib drives what it can (query_sm, the number forms, multipart receipts); cancel_sm
(which smpplib lacks) and byte-exact checks use a raw socket framed by relay.sms.pdu.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import smpplib.command
import smpplib.consts
import smpplib.gsm
import smpplib.smpp
from conftest import free_port
from sms_helpers import A, B, X, close, connect, digits, http, make_binding, receive

from relay.sms import constants as c
from relay.sms.pdu import (
    HEADER_SIZE,
    BindTransceiver,
    CancelSm,
    DeliverSm,
    DeliverSmResp,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
    parse_pdu,
)

pytestmark = pytest.mark.integration

ID = re.compile(r"m[0-9a-f]{16}")
LONG = ("Courier here: I am at the north gate with your order 1234, please come down. "
        * 5)[:380]


@pytest.fixture
def relay(relay_factory: Any, tmp_path: Path) -> Any:
    port = free_port()
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "gw1:pw1",
                          "--smpp-account", "gw2:pw2"], "gw")
    node.smpp_port = port
    return node


class RawEsme:
    """A gateway on a raw socket: PDUs out, PDUs (and their exact bytes) in."""

    def __init__(self, port: int, system_id: str, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.seq = 0
        self.send(BindTransceiver(system_id=system_id, password=password))
        resp = self.read()
        assert resp.command_status == c.ESME_ROK

    def send(self, pdu: Pdu) -> int:
        self.seq += 1
        self.sock.sendall(bytes(pdu.with_sequence(self.seq)))
        return self.seq

    def read_raw(self, timeout: float = 15.0) -> bytes:
        self.sock.settimeout(timeout)
        head = self._exact(HEADER_SIZE)
        return head + self._exact(int.from_bytes(head[:4], "big") - HEADER_SIZE)

    def read(self, timeout: float = 15.0) -> Pdu:
        return parse_pdu(self.read_raw(timeout))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def submit(src: str, text: bytes | str, **kw: Any) -> SubmitSm:
    body = text.encode() if isinstance(text, str) else text
    fields: dict[str, Any] = {"source_addr_ton": 1, "source_addr_npi": 1,
                              "source_addr": digits(src), "dest_addr_ton": 1,
                              "dest_addr_npi": 1, "destination_addr": digits(X),
                              "short_message": body}
    fields.update(kw)
    return SubmitSm(**fields)


def message(base: str, msg_id: str) -> tuple[int, Any]:
    """GET /v1/messages/{id}, polled past the batch writer."""
    deadline = time.monotonic() + 10
    while True:
        status, body = http("GET", f"{base}/v1/messages/{msg_id}")
        if status == 200 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.05)


def test_every_part_has_an_id_leading_to_the_record_and_its_own_receipt(relay: Any) -> None:
    make_binding(relay.base)
    trx = connect(relay.smpp_port)
    trx.bind_transceiver(system_id="gw1", password="pw1")
    parts, coding, esm = smpplib.gsm.make_parts(LONG)
    assert len(parts) == 3
    # Kannel asks for a receipt on the first part only; another gateway on every part.
    seqs = []
    for rds in ((1, 0, 0), (1, 1, 1)):
        for part, rd in zip(parts, rds, strict=True):
            seqs.append(trx.send_message(
                source_addr_ton=1, source_addr_npi=1, source_addr=digits(A),
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=digits(X),
                short_message=part, data_coding=coding, esm_class=esm,
                registered_delivery=rd).sequence)
    got: list[Any] = []
    trx.set_message_received_handler(lambda pdu, **_: got.append(pdu))
    by_seq: dict[int, str] = {}
    trx.set_message_sent_handler(
        lambda pdu, **_: by_seq.__setitem__(pdu.sequence, pdu.message_id.decode()))
    deadline = time.monotonic() + 20
    while (len(by_seq) < 6 or sum(1 for p in got if int(p.esm_class) & 0x04) < 4) \
            and time.monotonic() < deadline:
        trx.read_once()
    close(trx)
    ids = [by_seq[s] for s in seqs]  # in the order the parts were sent
    assert len(ids) == 6 and len(set(ids)) == 6 and all(ID.fullmatch(i) for i in ids)
    receipts = [p for p in got if int(p.esm_class) & 0x3C == c.ESM_CLASS_DELIVERY_RECEIPT]
    quoted = [re.search(rb"id:(\S+)", p.short_message)[1].decode() for p in receipts]  # type: ignore[index]
    assert sorted(quoted) == sorted([ids[0], *ids[3:]])  # one per part that asked
    for p in receipts:
        assert (int(p.source_addr_ton), int(p.source_addr_npi), int(p.dest_addr_ton),
                int(p.dest_addr_npi)) == (1, 1, 1, 1)
        assert p.source_addr == digits(X).encode() and p.destination_addr == digits(A).encode()
        assert p.receipted_message_id.decode() in quoted
        assert int(p.message_state) == c.MESSAGE_STATE_DELIVERED
        assert b"stat:DELIVRD" in p.short_message
    # Every part's id leads to its message's record.
    first = {message(relay.base, i)[1]["id"] for i in ids[:3]}
    second = {message(relay.base, i)[1]["id"] for i in ids[3:]}
    assert first == {ids[0]} and second == {ids[3]}
    rec = message(relay.base, ids[4])[1]
    assert rec["parts"] == 3 and rec["status"] == "delivered" and rec["part_ids"] == ids[3:]
    # From the store too, after a restart (nothing in memory).
    relay.stop()
    relay.start()
    assert message(relay.base, ids[5])[1]["id"] == ids[3]
    assert message(relay.base, ids[1])[1]["id"] == ids[0]


def test_error_responses_carry_an_empty_message_id_and_unknown_tlvs_are_ignored(
        relay: Any) -> None:
    make_binding(relay.base)
    gw = RawEsme(relay.smpp_port, "gw1", "pw1")
    try:
        gw.send(submit(A, "hi", destination_addr="8617099999999"))  # no binding
        wire = gw.read_raw()
        assert wire[8:12] == c.ESME_RINVDSTADR.to_bytes(4, "big")
        assert wire[16:] == b"\x00" and len(wire) == 17  # SMPP 3.4 §4.4.2: one NUL
        # §3.2.4: an optional parameter the relay does not know is ignored, not refused.
        gw.send(submit(A, "vendor TLV", tlvs=(Tlv(0x1401, b"\x01\x02"),)))
        deliver = gw.read()  # the message for B comes back on this TRX bind
        assert isinstance(deliver, DeliverSm) and deliver.destination_addr == digits(B)
        assert deliver.tlvs == ()  # nothing of the sender's PDU crosses over
        gw.sock.sendall(bytes(DeliverSmResp(sequence=deliver.sequence)))
        resp = gw.read()
        assert isinstance(resp, SubmitSmResp) and resp.command_status == c.ESME_ROK
    finally:
        gw.close()


@pytest.mark.parametrize(("cc", "src", "ton", "dst", "dton"), [
    ("", digits(A), 2, digits(X), 2),  # Kannel's defaults: digits, TON 2 / NPI 1
    ("", digits(A), 0, digits(X), 0),  # TON 0 (Jasmin, many aggregators)
    ("86", "13800000001", 2, digits(X), 2),  # national, with the country code on X
    ("86", "013800000001", 0, "17000000001", 0),  # trunk 0; national X
    ("86", "+" + digits(A), 1, digits(X), 1),  # a "+" under TON 1
])
def test_number_forms_gateways_send(relay_factory: Any, tmp_path: Path, cc: str, src: str,
                                    ton: int, dst: str, dton: int) -> None:
    port = free_port()
    extra = ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "gw1:pw1"]
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         extra + (["--default-cc", cc] if cc else []), "numbers")
    make_binding(node.base)
    trx = connect(port)
    trx.bind_transceiver(system_id="gw1", password="pw1")
    trx.send_message(source_addr_ton=ton, source_addr_npi=1, source_addr=src,
                     dest_addr_ton=dton, dest_addr_npi=1, destination_addr=dst,
                     short_message=b"number forms")
    (pdu,) = receive(trx, 1)
    close(trx)
    assert pdu.destination_addr == digits(B).encode() and pdu.source_addr == digits(X).encode()
    sms_log = [line for line in Path(node.log).read_text().splitlines() if "relay.sms" in line]
    assert sms_log and not [line for line in sms_log if digits(A)[5:] in line]  # masked


def test_a_gateway_resending_a_refused_message_is_recorded_once(relay: Any) -> None:
    binding = make_binding(relay.base)
    assert http("POST", f"{relay.base}/v1/bindings/{binding}/freeze", {})[0] in (200, 204)
    gw = RawEsme(relay.smpp_port, "gw1", "pw1")
    try:
        for _ in range(3):  # a gateway that retries whatever it is told
            gw.send(submit(A, "are you there?"))
            assert gw.read().command_status == c.ESME_RX_R_APPN
        gw.send(submit(A, "another text"))
        assert gw.read().command_status == c.ESME_RX_R_APPN
    finally:
        gw.close()
    deadline = time.monotonic() + 10
    recs: list[Any] = []
    while time.monotonic() < deadline:
        recs = http("GET", f"{relay.base}/v1/messages?x=%2B{digits(X)}")[1]["messages"]
        if len(recs) >= 2 and any(r.get("retries") == 2 for r in recs):
            break
        time.sleep(0.1)
    assert len(recs) == 2, recs
    assert sorted(r.get("retries", 0) for r in recs) == [0, 2]
    assert all(r["reason"] == "frozen" for r in recs)


def test_query_sm_answers_from_the_record_for_its_submitter_only(relay: Any) -> None:
    make_binding(relay.base)
    trx = connect(relay.smpp_port)
    trx.bind_transceiver(system_id="gw1", password="pw1")
    trx.send_message(source_addr_ton=1, source_addr_npi=1, source_addr=digits(A),
                     dest_addr_ton=1, dest_addr_npi=1, destination_addr=digits(X),
                     short_message=b"query me")
    receive(trx, 1)  # the forwarded message; then our submit_sm_resp
    sent: list[Any] = []
    trx.set_message_sent_handler(lambda pdu, **_: sent.append(pdu))
    while not sent:
        trx.read_once()
    msg_id = sent[0].message_id.decode()

    answers: list[Any] = []

    def query(cl: Any, mid: str) -> Any:
        answers.clear()
        cl.query_resp_handler = lambda pdu, **_: answers.append(pdu)
        cl.set_error_pdu_handler(lambda pdu: answers.append(pdu))
        cl.send_pdu(smpplib.smpp.make_pdu("query_sm", client=cl, message_id=mid,
                                          source_addr_ton=1, source_addr_npi=1,
                                          source_addr=digits(A)))
        while not answers:
            cl.read_once()
        return answers[0]

    resp = query(trx, msg_id)
    assert int(resp.status) == c.ESME_ROK
    assert resp.message_id.decode() == msg_id
    assert int(resp.message_state) == c.MESSAGE_STATE_DELIVERED
    assert re.fullmatch(rb"\d{12}000\+", resp.final_date)
    assert int(query(trx, "m0000000000000000").status) == c.ESME_RQUERYFAIL
    other = connect(relay.smpp_port)
    other.bind_transceiver(system_id="gw2", password="pw2")
    assert int(query(other, msg_id).status) == c.ESME_RQUERYFAIL  # not gw2's message
    close(other)
    close(trx)


def test_cancel_sm_cancels_a_message_not_yet_forwarded(relay: Any) -> None:
    make_binding(relay.base)
    parts, coding, esm = smpplib.gsm.make_parts(LONG)
    gw = RawEsme(relay.smpp_port, "gw1", "pw1")
    try:
        gw.send(submit(A, parts[0], data_coding=coding, esm_class=esm))
        part1 = gw.read()
        assert isinstance(part1, SubmitSmResp) and ID.fullmatch(part1.message_id)
        gw.send(CancelSm(message_id=part1.message_id, source_addr_ton=1, source_addr_npi=1,
                         source_addr=digits(A)))
        assert gw.read().command_status == c.ESME_ROK
        # The rest of the set now starts a new, incomplete one: nothing reaches B.
        gw.send(submit(A, parts[1], data_coding=coding, esm_class=esm))
        gw.send(submit(A, parts[2], data_coding=coding, esm_class=esm))
        assert [gw.read().command_status for _ in range(2)] == [c.ESME_ROK, c.ESME_ROK]
        # A message already forwarded cannot be cancelled.
        gw.send(submit(A, "done already"))
        deliver = gw.read()
        assert isinstance(deliver, DeliverSm)
        gw.sock.sendall(bytes(DeliverSmResp(sequence=deliver.sequence)))
        done = gw.read()
        assert isinstance(done, SubmitSmResp) and done.command_status == c.ESME_ROK
        gw.send(CancelSm(message_id=done.message_id))
        assert gw.read().command_status == c.ESME_RCANCELFAIL
    finally:
        gw.close()


def test_graceful_stop_answers_messages_in_flight_and_unbinds(relay: Any) -> None:
    make_binding(relay.base)
    tx = RawEsme(relay.smpp_port, "gw1", "pw1")
    rx = RawEsme(relay.smpp_port, "gw2", "pw2")
    try:
        # Route "gateway" without sms.gateway: B's copy goes back to the sender's gateway,
        # gw1 (a TRX bind); gw1 holds its deliver_sm_resp while the relay stops.
        tx.send(submit(A, "in flight"))
        deliver = tx.read()
        assert isinstance(deliver, DeliverSm)
        assert relay.proc is not None
        relay.proc.terminate()  # SIGTERM: drain, then unbind
        time.sleep(0.5)
        tx.send(submit(A, "sent while stopping"))  # left unanswered: resent later
        tx.sock.sendall(bytes(DeliverSmResp(sequence=deliver.sequence)))
        seen = [tx.read(), tx.read()]
        assert isinstance(seen[0], SubmitSmResp) and seen[0].command_status == c.ESME_ROK
        assert isinstance(seen[1], Unbind)  # no answer for the message sent while stopping
        tx.sock.sendall(bytes(UnbindResp(sequence=seen[1].sequence)))
        assert isinstance(rx.read(), Unbind)  # every bound gateway is unbound
        relay.proc.wait(timeout=30)
        # gw1 answered its unbind, gw2 (which never answers) was given up on in time.
        assert "smpp unbound 1 of 2 gateway link(s)" in Path(relay.log).read_text()
    finally:
        tx.close()
        rx.close()


def test_a_resend_after_a_lost_answer_is_not_forwarded_twice(relay_factory: Any,
                                                             tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "relay.toml"
    cfg.write_text('[sms]\ngateway = "gw2"\n')  # B's copies go to gw2
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         ["--config", str(cfg), "--smpp", f"127.0.0.1:{port}",
                          "--smpp-account", "gw1:pw1", "--smpp-account", "gw2:pw2"], "lost")
    binding = make_binding(node.base)
    far = RawEsme(port, "gw2", "pw2")
    first = RawEsme(port, "gw1", "pw1")
    try:
        first.send(submit(A, "see you at 8"))
        deliver = far.read()
        assert isinstance(deliver, DeliverSm)
        first.close()  # gw1's link drops before the relay can answer it
        time.sleep(0.5)
        far.sock.sendall(bytes(DeliverSmResp(sequence=deliver.sequence)))
        time.sleep(0.5)
        # gw1 reconnects and resends (new link, new sequence number).
        again = RawEsme(port, "gw1", "pw1")
        again.send(submit(A, "see you at 8"))
        resp = again.read()
        assert isinstance(resp, SubmitSmResp) and resp.command_status == c.ESME_ROK
        with pytest.raises(TimeoutError):
            far.read(timeout=2.0)  # B does not get it twice
        again.close()
    finally:
        far.close()
    recs = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recs = http("GET", f"{node.base}/v1/messages?binding={binding}")[1]["messages"]
        if recs and recs[0].get("retries") == 1:
            break
        time.sleep(0.1)
    assert len(recs) == 1 and recs[0]["id"] == resp.message_id
    assert recs[0]["status"] == "delivered" and recs[0]["retries"] == 1
