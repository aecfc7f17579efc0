"""The sans-IO session: an in-memory client/server pair with a fake clock."""

from __future__ import annotations

import pytest

from relay.sms import constants as c
from relay.sms._state import State, Transition, transition
from relay.sms.events import (
    BindRefused,
    Bound,
    ConnectionClosed,
    MessageReceived,
    MessageRejected,
    ProtocolError,
    ResponseReceived,
    ResponseTimeout,
    Unbound,
)
from relay.sms.pdu import (
    BindTransceiverResp,
    BindTransmitter,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    LocalSmppError,
    Pdu,
    PduFramer,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    UnbindResp,
)
from relay.sms.session import (
    Role,
    SessionConfig,
    SmppSession,
    accounts_authenticator,
    next_sequence,
)

ACCOUNTS = {"gw": "secret"}


def server(**cfg: object) -> SmppSession:
    return SmppSession(Role.SERVER, 0.0, SessionConfig(**cfg),  # type: ignore[arg-type]
                       accounts_authenticator(ACCOUNTS))


def wire(s: SmppSession) -> list[Pdu]:
    out = PduFramer().feed(s.data_to_send())
    assert all(isinstance(p, Pdu) for p in out)
    return out  # type: ignore[return-value]


def bound_pair(**cfg: object) -> tuple[SmppSession, SmppSession]:
    srv = server(**cfg)
    cli = SmppSession(Role.CLIENT, 0.0, SessionConfig(**cfg))  # type: ignore[arg-type]
    cli.bind(0.0, "gw", "secret", "trx")
    assert srv.receive_data(cli.data_to_send(), 0.0) == [Bound("gw", State.BOUND_TRX)]
    assert cli.receive_data(srv.data_to_send(), 0.0) == [Bound("gw", State.BOUND_TRX)]
    return srv, cli


def test_bind_ok_both_roles() -> None:
    srv, cli = bound_pair()
    assert srv.state is cli.state is State.BOUND_TRX
    assert srv.peer_system_id == "gw"


@pytest.mark.parametrize(("sid", "pw", "status"), [
    ("gw", "wrong", c.ESME_RINVPASWD), ("nobody", "secret", c.ESME_RINVSYSID),
])
def test_bind_refused(sid: str, pw: str, status: int) -> None:
    srv = server()
    cli = SmppSession(Role.CLIENT, 0.0)
    cli.bind(0.0, sid, pw, "trx")
    assert srv.receive_data(cli.data_to_send(), 0.0) == [BindRefused(sid, status)]
    resp = srv.data_to_send()
    assert BindTransceiverResp.parse(resp).command_status == status
    assert srv.state is State.OPEN
    assert cli.receive_data(resp, 0.0) == [BindRefused(sid, status)]
    assert cli.state is State.OPEN


def test_second_bind_gets_already_bound() -> None:
    srv, _ = bound_pair()
    ev = srv.receive_data(bytes(BindTransmitter(system_id="gw", password="secret", sequence=9)), 1)
    assert [type(e) for e in ev] == [MessageRejected]
    (resp,) = wire(srv)
    assert resp.command_id == c.BIND_TRANSMITTER_RESP
    assert (resp.command_status, resp.sequence) == (c.ESME_RALYBND, 9)


def test_submit_before_bind() -> None:
    srv = server()
    srv.receive_data(bytes(SubmitSm(sequence=4, source_addr="1", destination_addr="2")), 0.0)
    assert wire(srv) == [SubmitSmResp(sequence=4, command_status=c.ESME_RINVBNDSTS)]


def test_submit_on_receiver_bind_is_refused() -> None:
    srv = server()
    cli = SmppSession(Role.CLIENT, 0.0)
    cli.bind(0.0, "gw", "secret", "rx")
    srv.receive_data(cli.data_to_send(), 0.0)
    assert srv.state is State.BOUND_RX
    srv.data_to_send()
    srv.receive_data(bytes(SubmitSm(sequence=5)), 1.0)
    assert wire(srv) == [SubmitSmResp(sequence=5, command_status=c.ESME_RINVBNDSTS)]


def test_message_answered_later() -> None:
    srv, cli = bound_pair()
    sent = cli.submit(1.0, source_addr="8613800000001", destination_addr="8617000000001",
                      short_message=b"hi", registered_delivery=1)
    (ev,) = srv.receive_data(cli.data_to_send(), 1.0)
    assert isinstance(ev, MessageReceived)
    assert (ev.source_addr, ev.destination_addr, ev.short_message, ev.registered_delivery) == (
        "8613800000001", "8617000000001", b"hi", 1)
    assert srv.data_to_send() == b""  # nothing until the app decides
    assert srv.unanswered == 1
    srv.respond(ev, c.ESME_ROK, "m-1")
    with pytest.raises(LocalSmppError):
        srv.respond(ev, c.ESME_ROK, "m-1")  # one answer per message
    (got,) = cli.receive_data(srv.data_to_send(), 2.0)
    assert got == ResponseReceived(sent, SubmitSmResp(sequence=sent.sequence, message_id="m-1"))


def test_error_answer_has_no_message_id() -> None:
    srv, cli = bound_pair()
    cli.submit(1.0, source_addr="1", destination_addr="2")
    (ev,) = srv.receive_data(cli.data_to_send(), 1.0)
    assert isinstance(ev, MessageReceived)
    srv.respond(ev, c.ESME_RX_R_APPN, "ignored")
    assert srv.data_to_send() == bytes(SubmitSmResp(sequence=ev.sequence, command_status=0x66))


def test_deliver_to_client_and_its_answer() -> None:
    srv, cli = bound_pair()
    sent = srv.deliver(1.0, source_addr="X", destination_addr="B", short_message=b"yo")
    (ev,) = cli.receive_data(srv.data_to_send(), 1.0)
    assert isinstance(ev, MessageReceived) and ev.command_id == c.DELIVER_SM
    cli.respond(ev, c.ESME_ROK)
    assert srv.receive_data(cli.data_to_send(), 1.5) == [
        ResponseReceived(sent, DeliverSmResp(sequence=sent.sequence))]


def test_message_payload_surfaces_as_short_message() -> None:
    from relay.sms.pdu import Tlv
    srv, cli = bound_pair()
    cli.submit(1.0, tlvs=(Tlv(c.TAG_MESSAGE_PAYLOAD, b"x" * 300),))
    (ev,) = srv.receive_data(cli.data_to_send(), 1.0)
    assert isinstance(ev, MessageReceived) and ev.short_message == b"x" * 300


def test_window_full_then_free() -> None:
    _, cli = bound_pair(window=2)
    a = cli.submit(1.0)
    cli.submit(1.0)
    assert cli.window_free == 0
    with pytest.raises(LocalSmppError, match="window full"):
        cli.submit(1.0)
    cli.send_request(EnquireLink(), 1.0)  # control PDUs bypass the window
    cli.receive_data(bytes(SubmitSmResp(sequence=a.sequence, message_id="1")), 2.0)
    assert cli.window_free == 1
    cli.submit(2.0)


def test_response_timeout() -> None:
    _, cli = bound_pair(response_timeout=5.0, enquire_link_interval=100.0)
    sent = cli.submit(1.0)
    assert cli.get_timer() == 6.0
    assert cli.handle_timer(5.9) == []
    assert cli.handle_timer(6.0) == [ResponseTimeout(sent)]
    assert cli.window_free == 10
    # A late answer is ignored rather than matched to something else.
    assert cli.receive_data(bytes(SubmitSmResp(sequence=sent.sequence)), 7.0) == []


def test_sequence_allocation_wraps_and_skips_outstanding() -> None:
    assert next_sequence(1) == 2
    assert next_sequence(0x7FFFFFFF) == 1
    _, cli = bound_pair()
    cli._seq = 0x7FFFFFFE  # white-box: start near the top
    assert cli.submit(0.0).sequence == 0x7FFFFFFF
    assert cli.submit(0.0).sequence == 1  # 1 was the bind, long answered


def test_throttling_token_bucket() -> None:
    srv, cli = bound_pair(throttle_rate=2.0, throttle_burst=2)
    statuses = []
    for t in (0.0, 0.0, 0.0, 0.5, 0.5):
        cli.submit(t)
        for ev in srv.receive_data(cli.data_to_send(), t):
            if isinstance(ev, MessageReceived):
                srv.respond(ev, c.ESME_ROK, "m")
        for ev in cli.receive_data(srv.data_to_send(), t):
            assert isinstance(ev, ResponseReceived)
            statuses.append(ev.response.command_status)
    # burst of 2, the third refused, one token back after 0.5 s at 2/s.
    assert statuses == [0, 0, c.ESME_RTHROTTLED, 0, c.ESME_RTHROTTLED]


def test_unanswered_limit_gives_queue_full() -> None:
    srv, cli = bound_pair(max_unanswered=1)
    cli.submit(0.0)
    cli.submit(0.0)
    evs = srv.receive_data(cli.data_to_send(), 0.0)
    assert [type(e) for e in evs] == [MessageReceived, MessageRejected]
    (resp,) = wire(srv)
    assert resp.command_status == c.ESME_RMSGQFUL


def test_enquire_link_after_idle_and_timeout_closes() -> None:
    _, cli = bound_pair(enquire_link_interval=30.0, response_timeout=10.0)
    assert cli.get_timer() == 30.0
    assert cli.handle_timer(30.0) == []
    (probe,) = wire(cli)
    assert isinstance(probe, EnquireLink)
    assert cli.get_timer() == 40.0
    events = cli.handle_timer(40.0)
    assert len(events) == 1 and isinstance(events[0], ConnectionClosed)
    assert cli.state is State.CLOSED and cli.get_timer() is None


def test_enquire_link_answered_keeps_link() -> None:
    srv, cli = bound_pair(enquire_link_interval=30.0)
    cli.handle_timer(30.0)
    srv.receive_data(cli.data_to_send(), 30.0)
    (resp,) = PduFramer().feed(srv.data_to_send())
    assert isinstance(resp, EnquireLinkResp)
    assert cli.receive_data(bytes(resp), 31.0) == []
    assert cli.state is State.BOUND_TRX
    assert cli.get_timer() == 61.0  # idle measured from the last PDU received


def test_enquire_link_answered_before_bind() -> None:
    srv = server()
    srv.receive_data(bytes(EnquireLink(sequence=3)), 0.0)
    assert wire(srv) == [EnquireLinkResp(sequence=3)]


def test_no_bind_within_session_init_timer() -> None:
    srv = server(bind_timeout=5.0)
    assert srv.get_timer() == 5.0
    (ev,) = srv.handle_timer(5.0)
    assert isinstance(ev, ConnectionClosed) and srv.closed


def test_unknown_command_id_gets_generic_nack_and_session_continues() -> None:
    srv, _ = bound_pair()
    junk = bytes.fromhex("00000010 00000099 00000000 0000002a")
    (ev,) = srv.receive_data(junk + bytes(EnquireLink(sequence=43)), 1.0)
    assert isinstance(ev, ProtocolError)
    assert wire(srv) == [GenericNack(sequence=42, command_status=c.ESME_RINVCMDID),
                         EnquireLinkResp(sequence=43)]
    assert srv.state is State.BOUND_TRX


def test_bad_field_gets_its_own_response_status() -> None:
    srv, _ = bound_pair()
    body = b"\x00\x01\x01" + b"1" * 25 + b"\x00"
    bad = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("00000004 00000000 00000007") + body
    (ev,) = srv.receive_data(bad, 1.0)
    assert isinstance(ev, ProtocolError)
    assert wire(srv) == [SubmitSmResp(sequence=7, command_status=c.ESME_RINVSRCADR)]


def test_bad_length_is_fatal() -> None:
    srv, _ = bound_pair()
    evs = srv.receive_data(bytes.fromhex("00000008 00000015 00000000 00000001"), 1.0)
    assert [type(e) for e in evs] == [ProtocolError, ConnectionClosed]
    assert wire(srv) == [GenericNack(sequence=1, command_status=c.ESME_RINVCMDLEN)]
    assert srv.state is State.CLOSED
    assert srv.receive_data(bytes(EnquireLink(sequence=2)), 2.0) == []


def test_query_sm_is_answered_query_fail() -> None:
    srv, _ = bound_pair()
    srv.receive_data(bytes(QuerySm(sequence=5, message_id="m1")), 1.0)
    assert wire(srv) == [QuerySmResp(sequence=5, command_status=c.ESME_RQUERYFAIL)]


def test_peer_unbind() -> None:
    srv, cli = bound_pair()
    cli.unbind(1.0)
    assert srv.receive_data(cli.data_to_send(), 1.0) == [Unbound(by_peer=True)]
    assert srv.state is State.UNBOUND and srv.closed
    resp = srv.data_to_send()
    assert UnbindResp.parse(resp).sequence == 2
    assert cli.receive_data(resp, 1.0) == [Unbound(by_peer=False)]
    assert cli.state is State.UNBOUND


def test_local_misuse() -> None:
    cli = SmppSession(Role.CLIENT, 0.0)
    with pytest.raises(LocalSmppError, match="OPEN"):
        cli.submit(0.0)  # not bound yet
    srv = server()
    with pytest.raises(LocalSmppError):
        srv.submit(0.0)  # an SMSC does not submit_sm


def test_illegal_transition_names_state_and_event() -> None:
    with pytest.raises(LocalSmppError, match=r"UNBIND.*OPEN"):
        transition(State.OPEN, Transition.UNBIND)
    with pytest.raises(LocalSmppError, match=r"BOUND_TX.*BOUND_RX"):
        transition(State.BOUND_RX, Transition.BOUND_TX)
    assert transition(State.BOUND_TX, Transition.CLOSE) is State.CLOSED


def test_connection_lost_reports_pending() -> None:
    _, cli = bound_pair()
    sent = cli.submit(1.0)
    assert cli.connection_lost() == [ConnectionClosed("connection lost", (sent,))]
    assert cli.connection_lost() == []


def test_repeated_bad_binds_close_the_connection() -> None:
    srv = server(max_bind_failures=2)
    for seq in (1, 2):
        evs = srv.receive_data(
            bytes(BindTransmitter(system_id="gw", password="guess", sequence=seq)), 0.0)
    assert [type(e) for e in evs] == [BindRefused, ConnectionClosed]
    assert srv.state is State.CLOSED
    assert [p.command_status for p in wire(srv)] == [c.ESME_RINVPASWD] * 2


def test_reused_sequence_while_unanswered_is_refused() -> None:
    srv, _ = bound_pair()
    first = srv.receive_data(bytes(SubmitSm(sequence=50)), 1.0)
    again = srv.receive_data(bytes(SubmitSm(sequence=50)), 2.0)
    assert [type(e) for e in first + again] == [MessageReceived, MessageRejected]
    assert wire(srv) == [SubmitSmResp(sequence=50, command_status=c.ESME_RSYSERR)]
    assert isinstance(first[0], MessageReceived)
    srv.respond(first[0], c.ESME_ROK, "m")
    assert wire(srv) == [SubmitSmResp(sequence=50, message_id="m")]
