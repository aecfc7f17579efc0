"""The asyncio adapter's datagram handler never raises (relay/io/rtp.py)."""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

import pytest

from relay.io.rtp import CallSockets, RelayPort, RtpPoller, open_side
from relay.rtp.session import RelaySession, Side


class FakeSocket:
    """Stands in for a non-blocking UDP socket: queued datagrams in, sent ones out."""

    def __init__(self) -> None:
        self.inbox: list[tuple[bytes, Any] | OSError] = []
        self.sent: list[tuple[bytes, Any]] = []
        self.refuse: OSError | None = None

    def fileno(self) -> int:
        return -1

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        if not self.inbox:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        item = self.inbox.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append((data, addr))
        return len(data)

    def close(self) -> None:
        pass


def wired(session: RelaySession) -> tuple[RelayPort, FakeSocket, FakeSocket]:
    socks = {(side, rtcp): FakeSocket() for side in Side for rtcp in (False, True)}
    ports = [RelayPort(s, session, side, rtcp)  # type: ignore[arg-type]
             for (side, rtcp), s in socks.items()]
    CallSockets(ports)
    return ports[0], socks[(Side.CALLER, False)], socks[(Side.CALLEE, False)]


@pytest.fixture
def free_pair() -> int:
    """An even port whose pair and the next pair were free a moment ago."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1] & ~1
        held = []
        try:
            for port in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    pytest.skip("no four free ports in a row")


def session() -> RelaySession:
    s = RelaySession(0.0)
    s.set_remote(Side.CALLER, "10.0.0.1", 4000)
    s.set_remote(Side.CALLEE, "10.0.0.2", 6000)
    return s


def test_forwards_out_of_the_other_sides_socket() -> None:
    s = session()
    port, caller_sock, callee_sock = wired(s)
    data = b"\x80\x00" + bytes(30)
    caller_sock.inbox.append((data, ("10.0.0.1", 4000)))
    port.handle(5.0)
    assert caller_sock.sent == [] and callee_sock.sent == [(data, ("10.0.0.2", 6000))]
    assert callee_sock.sent[0][0] is data
    assert s.stats(Side.CALLER).last_rx == 5.0  # the arrival time reached the core
    port.handle(5.0)  # a wake-up with nothing to read is not an error
    assert port.errors == 0


def test_a_failing_tap_a_full_socket_and_socket_errors_are_counted_not_raised() -> None:
    s = session()

    def boom(side: int, data: bytes, now: float) -> None:
        raise RuntimeError("disk on fire")

    s.tap = boom
    port, caller_sock, callee_sock = wired(s)
    caller_sock.inbox.append((b"\x80\x00" + bytes(30), ("10.0.0.1", 4000)))
    port.handle(5.0)
    assert port.errors == 1 and callee_sock.sent == []
    s.tap = None
    callee_sock.refuse = BlockingIOError(11, "send buffer full")
    caller_sock.inbox.append((b"\x80\x00" + bytes(30), ("10.0.0.1", 4000)))
    port.handle(5.0)
    caller_sock.inbox.append(ConnectionRefusedError(111, "refused"))
    port.handle(5.0)
    assert port.errors == 3 and s.stats(Side.CALLER).packets == 2


def test_open_side_binds_rtp_and_rtcp_and_closes_both_on_a_clash(free_pair: int) -> None:
    base = free_pair
    s = session()
    ports = open_side(s, "127.0.0.1", Side.CALLER, base)
    assert [p.sock.getsockname()[1] for p in ports] == [base, base + 1]
    assert all(p.sock.gettimeout() == 0.0 for p in ports)  # non-blocking
    ports[0].close()  # free the RTP port, keep the RTCP one: the next bind clashes
    with pytest.raises(OSError):
        open_side(s, "127.0.0.1", Side.CALLEE, base)
    ports[1].close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", base))  # the clash closed what it had bound


@pytest.mark.parametrize("epoll", [True, False], ids=["epoll", "add_reader"])
async def test_the_poller_reads_a_burst_in_batches_and_lets_go(
        free_pair: int, epoll: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """More datagrams than one batch: the loop calls again while sockets are ready.
    Without epoll (not Linux) each socket has its own reader on the loop instead."""
    if not epoll:
        monkeypatch.delattr(select, "epoll", raising=False)
    elif not hasattr(select, "epoll"):
        pytest.skip("no epoll here")
    loop = asyncio.get_running_loop()
    base = free_pair
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for p in peers:
        p.bind(("127.0.0.1", 0))
        p.settimeout(2.0)
    s = RelaySession(0.0)
    s.set_remote(Side.CALLER, "127.0.0.1", peers[0].getsockname()[1])
    s.set_remote(Side.CALLEE, "127.0.0.1", peers[1].getsockname()[1])
    poller = RtpPoller(loop, batch=4)
    sockets = CallSockets(open_side(s, "127.0.0.1", Side.CALLER, base)
                          + open_side(s, "127.0.0.1", Side.CALLEE, base + 2))
    sockets.start(poller)
    assert len(poller) == 4
    for seq in range(20):
        peers[0].sendto(b"\x80\x00" + seq.to_bytes(2, "big") + bytes(8), ("127.0.0.1", base))
    got = [await loop.run_in_executor(None, peers[1].recvfrom, 64) for _ in range(20)]
    assert [int.from_bytes(d[2:4], "big") for d, _ in got] == list(range(20))
    assert {src for _, src in got} == {("127.0.0.1", base + 2)}  # from the callee-facing port
    assert s.stats(Side.CALLER).packets == 20 and sockets.errors == 0
    sockets.close()
    assert len(poller) == 0
    poller.close()
    for p in peers:
        p.close()
