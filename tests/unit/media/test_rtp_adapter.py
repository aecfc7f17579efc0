"""The asyncio adapter's datagram handler never raises (relay/io/rtp.py)."""

from __future__ import annotations

from typing import Any

from relay.io.rtp import CallSockets, RtpPortProtocol
from relay.rtp.session import RelaySession, Side


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def get_extra_info(self, name: str) -> None:
        return None

    def close(self) -> None:
        pass


def wired(session: RelaySession) -> tuple[RtpPortProtocol, FakeTransport, FakeTransport]:
    eps = {(side, rtcp): RtpPortProtocol(session, side, rtcp, lambda: 5.0)
           for side in Side for rtcp in (False, True)}
    CallSockets(eps)
    caller_t, callee_t = FakeTransport(), FakeTransport()
    eps[(Side.CALLER, False)].connection_made(caller_t)  # type: ignore[arg-type]
    eps[(Side.CALLEE, False)].connection_made(callee_t)  # type: ignore[arg-type]
    return eps[(Side.CALLER, False)], caller_t, callee_t


def test_forwards_out_of_the_other_sides_socket() -> None:
    s = RelaySession(0.0)
    s.set_remote(Side.CALLER, "10.0.0.1", 4000)
    s.set_remote(Side.CALLEE, "10.0.0.2", 6000)
    ep, caller_t, callee_t = wired(s)
    data = b"\x80\x00" + bytes(30)
    ep.datagram_received(data, ("10.0.0.1", 4000))
    assert caller_t.sent == [] and callee_t.sent == [(data, ("10.0.0.2", 6000))]
    assert callee_t.sent[0][0] is data
    assert s.stats(Side.CALLER).last_rx == 5.0  # the adapter's clock reached the core


def test_a_failing_tap_is_counted_not_raised() -> None:
    s = RelaySession(0.0)
    s.set_remote(Side.CALLER, "10.0.0.1", 4000)
    s.set_remote(Side.CALLEE, "10.0.0.2", 6000)

    def boom(side: int, data: bytes, now: float) -> None:
        raise RuntimeError("disk on fire")

    s.tap = boom
    ep, _, callee_t = wired(s)
    ep.datagram_received(b"\x80\x00" + bytes(30), ("10.0.0.1", 4000))
    ep.error_received(ConnectionRefusedError())
    assert ep.errors == 2 and callee_t.sent == []
    ep.connection_lost(None)
    assert ep.transport is None
