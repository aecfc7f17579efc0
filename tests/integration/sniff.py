"""Checks on the wire: capture the UDP datagrams on the loopback interface to or from
given ports, with the kernel's receive time, while a test runs peers around the relay.

    with sniff([caller.media_port, callee.port, callee.media_port]) as wire:
        ...run the call...
    invite = wire.first(lambda d: d.dst[1] == callee.port and d.payload.startswith(b"INVITE"))
    heard = wire.first(lambda d: d.dst[1] == caller.media_port and is_audible(d.payload))
    assert heard is not None and invite is not None and heard.at < invite.at

A raw AF_PACKET socket (Linux, root or CAP_NET_RAW) bound to `lo` for IPv4 sees every
datagram on loopback once, as it is received (a protocol tap, unlike ETH_P_ALL, does not
also get the transmit copy), whichever socket sent it: a relay, SIPp's raw-socket pcap
player, a test. A classic BPF filter keeps other engineers' loopback traffic out of the
queue; the Python check after it is the one that counts. Without permission, `sniff`
skips the test (or raises `SniffUnavailable` with skip=False).
"""

from __future__ import annotations

import contextlib
import ctypes
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import pytest

__all__ = ["Capture", "Datagram", "SniffUnavailable", "bpf_udp_ports", "sniff"]

_ETH_P_IP = 0x0800
_SO_ATTACH_FILTER = 26  # asm-generic/socket.h
_SO_TIMESTAMPNS = 35
_PACKET_HOST = 0
_SOL_PACKET, _PACKET_STATISTICS = 263, 6  # linux/if_packet.h
_SO_RCVBUFFORCE = 33
_ETH_HEADER = 14


class Datagram(NamedTuple):
    """One UDP datagram seen on the interface."""

    at: float  # kernel receive time, epoch seconds
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class SniffUnavailable(OSError):
    """No raw packet socket here (not Linux, or neither root nor CAP_NET_RAW)."""


# --- classic BPF (linux/filter.h; the program format of tcpdump -d) -------------------------

_LDB_ABS, _LDH_ABS, _LDH_IND, _LDXB_MSH = 0x30, 0x28, 0x48, 0xB1
_JEQ, _JSET, _RET = 0x15, 0x45, 0x06


def bpf_udp_ports(ports: Iterable[int], snaplen: int = 0x40000
                  ) -> list[tuple[int, int, int, int]]:
    """A socket filter for Ethernet frames: IPv4 UDP, not a later fragment, and (when
    `ports` is not empty) a source or destination port among `ports`."""
    ports = sorted(set(ports))
    n = len(ports)
    # Layout: 0 ldb proto; 1 jeq 17; 2 ldh frag; 3 jset; 4 ldx ihl; then the port tests;
    # then DROP, ACCEPT. Jump offsets count from the next instruction.
    drop = 5 + (2 * n + 2 if n else 1)
    accept = drop + 1
    prog = [(_LDB_ABS, 0, 0, _ETH_HEADER + 9),
            (_JEQ, 0, drop - 2, 17),
            (_LDH_ABS, 0, 0, _ETH_HEADER + 6),  # flags and fragment offset (RFC 791)
            (_JSET, drop - 4, 0, 0x1FFF),
            (_LDXB_MSH, 0, 0, _ETH_HEADER)]  # X = 4 * IHL
    if n:
        for field in (0, 2):  # UDP source port, then destination port (RFC 768)
            prog.append((_LDH_IND, 0, 0, _ETH_HEADER + field))
            for port in ports:
                here = len(prog)
                prog.append((_JEQ, accept - here - 1, 0, port))
    else:
        prog.append((0x05, 0, 0, accept - len(prog) - 1))  # ja ACCEPT (BPF_JMP|BPF_JA)
    assert len(prog) == drop, (len(prog), drop)
    prog += [(_RET, 0, 0, 0), (_RET, 0, 0, snaplen)]
    if max(p[1] for p in prog) > 255 or max(p[2] for p in prog) > 255:
        raise ValueError("too many ports for one BPF program (at most about 120)")
    return prog


def _attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HL", len(prog), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _udp(frame: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | None:
    """(src, dst, payload) of an Ethernet/IPv4/UDP frame, else None."""
    if len(frame) < _ETH_HEADER + 28 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[_ETH_HEADER:]
    ihl = 4 * (ip[0] & 0x0F)
    if ip[0] >> 4 != 4 or ip[9] != 17 or ihl < 20 or len(ip) < ihl + 8:
        return None
    if struct.unpack_from("!H", ip, 6)[0] & 0x1FFF:
        return None  # a later fragment carries no UDP header
    total = struct.unpack_from("!H", ip, 2)[0]
    sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
    end = min(ihl + length, total, len(ip))
    src = socket.inet_ntoa(ip[12:16])
    dst = socket.inet_ntoa(ip[16:20])
    return (src, sport), (dst, dport), bytes(ip[ihl + 8:end])


class Capture:
    """The datagrams a running sniff has seen so far (appended by its reader thread)."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = frozenset(ports)
        self._lock = threading.Lock()
        self._seen: list[Datagram] = []
        #: Frames the kernel dropped because the queue was full (known once the sniff
        #: ended); a test asserting that something never arrived should want 0.
        self.drops = 0

    def add(self, d: Datagram) -> None:
        """Keep `d` when it is to or from one of our ports (or we watch every port)."""
        if not self.ports or d.src[1] in self.ports or d.dst[1] in self.ports:
            with self._lock:
                self._seen.append(d)

    @property
    def datagrams(self) -> list[Datagram]:
        """Everything seen, in the order the kernel received it."""
        with self._lock:
            return list(self._seen)

    def to_port(self, port: int) -> list[Datagram]:
        """Datagrams sent to `port`."""
        return [d for d in self.datagrams if d.dst[1] == port]

    def from_port(self, port: int) -> list[Datagram]:
        """Datagrams sent from `port`."""
        return [d for d in self.datagrams if d.src[1] == port]

    def first(self, match: Callable[[Datagram], bool]) -> Datagram | None:
        """The earliest datagram that `match`es, or None."""
        return next((d for d in self.datagrams if match(d)), None)

    def wait_for(self, match: Callable[[Datagram], bool], timeout: float = 10.0) -> Datagram:
        """The earliest datagram that `match`es, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first(match)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"no matching datagram within {timeout}s "
                                     f"({len(self.datagrams)} seen)")
            time.sleep(0.02)


def _open(iface: str, ports: Iterable[int]) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_IP))
    except (AttributeError, PermissionError) as exc:  # no AF_PACKET; no CAP_NET_RAW
        raise SniffUnavailable(f"raw packet socket: {exc}") from exc
    try:
        _attach(sock, bpf_udp_ports(ports))
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        try:  # past net.core.rmem_max: root may (this machine's loopback is busy)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((iface, _ETH_P_IP))  # CPython applies htons to the address's protocol
    except OSError:
        sock.close()
        raise
    return sock


def _read(sock: socket.socket, capture: Capture, stop: threading.Event) -> None:
    space = socket.CMSG_SPACE(16)
    draining = False
    while True:
        ready, _, _ = select.select([sock], [], [], 0 if draining else 0.05)
        if not ready:
            if draining:
                return
            draining = stop.is_set()  # one last pass for what is already queued
            continue
        frame, ancdata, _flags, addr = sock.recvmsg(65535, space)
        if addr[2] != _PACKET_HOST:
            continue
        at = time.time()
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                at = sec + nsec / 1e9
        parsed = _udp(frame)
        if parsed is not None:
            capture.add(Datagram(at, *parsed))


@contextlib.contextmanager
def sniff(ports: Iterable[int] = (), *, iface: str = "lo", skip: bool = True
          ) -> Iterator[Capture]:
    """Capture UDP datagrams to or from `ports` (all UDP when empty) on `iface` for the
    `with` block; the Capture fills as they arrive and is complete after the block.
    Skips the test when raw sockets are not permitted, unless `skip` is False."""
    ports = list(ports)
    try:
        sock = _open(iface, ports)
    except SniffUnavailable as exc:
        if skip:
            pytest.skip(f"cannot sniff {iface}: {exc}")
        raise
    capture = Capture(ports)
    stop = threading.Event()
    reader = threading.Thread(target=_read, args=(sock, capture, stop),
                              name=f"sniff-{iface}", daemon=True)
    reader.start()
    try:
        yield capture
    finally:
        stop.set()
        reader.join(timeout=10)
        # struct tpacket_stats { unsigned int tp_packets, tp_drops; } (read once: it resets)
        _packets, capture.drops = struct.unpack(
            "II", sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
        sock.close()
