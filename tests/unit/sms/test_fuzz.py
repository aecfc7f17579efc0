"""Property tests: garbage in gives SmppError values or events, never another exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sms import constants as c
from relay.sms.events import Event
from relay.sms.pdu import (
    BindTransceiver,
    Pdu,
    PduFramer,
    SmppError,
    parse_pdu,
)
from relay.sms.session import Role, SessionConfig, SmppSession, accounts_authenticator

KNOWN_IDS = [
    c.GENERIC_NACK, c.BIND_RECEIVER, c.BIND_RECEIVER_RESP, c.BIND_TRANSMITTER,
    c.BIND_TRANSMITTER_RESP, c.QUERY_SM, c.QUERY_SM_RESP, c.SUBMIT_SM, c.SUBMIT_SM_RESP,
    c.DELIVER_SM, c.DELIVER_SM_RESP, c.UNBIND, c.UNBIND_RESP, c.CANCEL_SM, c.CANCEL_SM_RESP,
    c.BIND_TRANSCEIVER, c.BIND_TRANSCEIVER_RESP, c.OUTBIND, c.ENQUIRE_LINK,
    c.ENQUIRE_LINK_RESP, c.DATA_SM, c.DATA_SM_RESP,
]


def framed(command_id: int, status: int, seq: int, body: bytes) -> bytes:
    return ((16 + len(body)).to_bytes(4, "big") + command_id.to_bytes(4, "big")
            + status.to_bytes(4, "big") + seq.to_bytes(4, "big") + body)


pdu_like = st.builds(
    framed, st.sampled_from(KNOWN_IDS), st.sampled_from([0, 0, 0x58]),
    st.integers(0, 0xFFFFFFFF), st.binary(max_size=120),
)
stream = st.lists(st.one_of(pdu_like, st.binary(max_size=40)), max_size=8).map(b"".join)


@settings(max_examples=400)
@given(pdu_like)
def test_parse_pdu_only_raises_smpp_error(data: bytes) -> None:
    try:
        pdu = parse_pdu(data)
    except SmppError:
        return
    # Whatever parses re-encodes to something that parses to the same PDU.
    assert parse_pdu(bytes(pdu)) == pdu


@settings(max_examples=300)
@given(stream, st.integers(1, 17))
def test_framer_only_yields_pdus_and_errors(data: bytes, chunk: int) -> None:
    framer = PduFramer()
    for i in range(0, len(data), chunk):
        for item in framer.feed(data[i : i + chunk]):
            assert isinstance(item, Pdu | SmppError)


@settings(max_examples=300)
@given(stream, st.sampled_from([Role.SERVER, Role.CLIENT]), st.booleans())
def test_session_only_yields_events(data: bytes, role: Role, bind_first: bool) -> None:
    s = SmppSession(role, 0.0, SessionConfig(throttle_rate=5.0),
                    accounts_authenticator({"gw": "pw"}))
    if bind_first and role is Role.SERVER:
        data = bytes(BindTransceiver(system_id="gw", password="pw", sequence=1)) + data
    now = 0.0
    for i in range(0, len(data), 7):
        now += 0.5
        for ev in s.receive_data(data[i : i + 7], now):
            assert isinstance(ev, Event)
        s.handle_timer(now)
        s.data_to_send()
    # Every byte we would send back parses as valid SMPP.
    for item in PduFramer().feed(s.data_to_send()):
        assert isinstance(item, Pdu)


def test_error_response_with_a_body_round_trips() -> None:
    # Some SMSCs send a message_id with an error status: keep it, re-encode it.
    wire = framed(c.SUBMIT_SM_RESP, 0x58, 3, b"a\x00")
    assert bytes(parse_pdu(wire)) == wire
