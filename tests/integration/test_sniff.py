"""The loopback sniffer (sniff.py) against plain sockets, and on a SIPp call: it sees what
reaches a port nobody in the test owns (a SIPp's media port), in the kernel's order."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sniff as sniff_module
from axe_peers import dtmf_caller
from dtmf_pcap import digits, pcap_seconds, telephone_events, write_dtmf_pcap
from sipp_harness import callee, udp_port
from sniff import Datagram, SniffUnavailable, bpf_udp_ports, sniff


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Three UDP sockets on 127.0.0.1."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    yield socks
    for s in socks:
        s.close()


def _port(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def test_captures_to_and_from_the_watched_ports_in_order(sockets: list[socket.socket]
                                                         ) -> None:
    a, b, c = sockets
    pa, pb, pc = map(_port, sockets)
    before = time.time()
    with sniff([pb]) as wire:
        a.sendto(b"one", ("127.0.0.1", pb))
        b.sendto(b"two", ("127.0.0.1", pa))
        a.sendto(b"elsewhere", ("127.0.0.1", pc))  # neither end watched
        c.sendto(b"three", ("127.0.0.1", pb))
        wire.wait_for(lambda d: d.payload == b"three")
    after = time.time()
    seen = wire.datagrams
    assert [d.payload for d in seen] == [b"one", b"two", b"three"]
    assert seen[0].src == ("127.0.0.1", pa) and seen[0].dst == ("127.0.0.1", pb)
    assert seen[1].src == ("127.0.0.1", pb) and seen[1].dst == ("127.0.0.1", pa)
    assert [d.payload for d in wire.to_port(pb)] == [b"one", b"three"]
    assert [d.payload for d in wire.from_port(pb)] == [b"two"]
    assert before <= seen[0].at <= seen[1].at <= seen[2].at <= after
    assert wire.first(lambda d: d.src[1] == pc) == seen[2]
    assert wire.first(lambda d: d.payload == b"never") is None
    assert all(isinstance(d, Datagram) for d in seen)
    # The recipients still got theirs: the sniffer only looks.
    assert b.recv(100) == b"one" and a.recv(100) == b"two"
    assert wire.drops == 0


def test_sees_datagrams_to_a_port_nobody_listens_on(sockets: list[socket.socket]) -> None:
    closed = udp_port()
    big = bytes(range(256)) * 20  # 5 kB, whole (lo's MTU is 64 kB)
    with sniff([closed]) as wire:
        sockets[0].sendto(b"ping", ("127.0.0.1", closed))
        sockets[0].sendto(big, ("127.0.0.1", closed))
        wire.wait_for(lambda d: d.payload == big)
    assert [d.payload for d in wire.datagrams] == [b"ping", big]


def test_wait_for_gives_up(sockets: list[socket.socket]) -> None:
    with sniff([_port(sockets[0])]) as wire, pytest.raises(AssertionError, match="no matching"):
        wire.wait_for(lambda d: True, timeout=0.2)


def test_skips_or_raises_without_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(sniff_module.socket, "socket", refuse)
    with pytest.raises(pytest.skip.Exception, match="cannot sniff lo"), sniff([5060]):
        pass
    with pytest.raises(SniffUnavailable), sniff([5060], skip=False):
        pass


def test_filter_program_limits() -> None:
    assert len(bpf_udp_ports([])) == 8
    assert len(bpf_udp_ports([1, 2, 2])) == 5 + 2 * 3 + 2
    with pytest.raises(ValueError, match="too many ports"):
        bpf_udp_ports(range(1000, 1200))


@pytest.mark.integration
def test_sees_a_sipp_play_and_the_bye_on_the_wire(tmp_path: Path) -> None:
    """uac_axe_dtmf_wait_bye.xml against uas_bye.xml: the digits reach the callee SIPp's
    media port (which only the sniffer can watch), the callee hangs up after them, and
    the caller answers that BYE."""
    workdir = tmp_path
    keyed = "42#"
    pcap = write_dtmf_pcap(workdir / "ext.pcap", keyed)
    port = udp_port()
    play_ms = int(pcap_seconds(pcap) * 1000)
    uas = callee(workdir, port, "uas_bye.xml", extra=["-m", "1", "-d", str(300 + play_ms + 700)])
    with sniff([uas.media_port, port]) as wire:
        uas.start()
        uac = dtmf_caller(workdir, port, pcap, wait_ms=300, wait_bye=True).start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
    media = wire.to_port(uas.media_port)
    assert {d.src[1] for d in media} == {uac.media_port}
    assert digits(telephone_events(d.payload for d in media)) == keyed
    bye = wire.first(lambda d: d.src[1] == port and d.payload.startswith(b"BYE "))
    assert bye is not None and bye.at > media[-1].at
    assert any(m.startswith("BYE") for m in uac.received())
    assert any(m.startswith("SIP/2.0 200") and "BYE" in m for m in uac.sent())
