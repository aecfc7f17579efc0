"""The rtpengine backend's pieces without rtpengine: ng retries, errors, stats, pcap."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from recordings.g711 import PT_PCMU
from recordings.pcap import PcapError, finish_from_pcap, read_pcap, udp_datagrams
from recordings.spool import CallMeta
from relay.media.bencode import decode_ng, encode_ng
from relay.media.rtpengine import NgClient, NgError, _leg_stats, _map_error
from relay.rtp.packet import RtpPacket
from relay.rtp.ports import PortsExhausted
from relay.sdp import SdpError


class FakeEngine(asyncio.DatagramProtocol):
    """Answers ng requests; drops the first `drop` datagrams to force retries."""

    def __init__(self, reply: dict[str, object], drop: int = 0) -> None:
        self.reply, self.drop, self.cookies = reply, drop, []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, _ = decode_ng(data)
        self.cookies.append(cookie)
        if len(self.cookies) <= self.drop:
            return
        assert self.transport is not None
        self.transport.sendto(b"garbage", addr)  # counted, ignored
        self.transport.sendto(encode_ng(cookie, self.reply), addr)


async def _engine(reply: dict[str, object], drop: int = 0) -> tuple[FakeEngine, NgClient]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: FakeEngine(reply, drop), local_addr=("127.0.0.1", 0))
    client = NgClient(transport.get_extra_info("sockname"), timeout=0.05, retries=3)
    await client.connect()
    return proto, client


async def test_retry_resends_the_same_cookie() -> None:
    engine, client = await _engine({"result": "pong"}, drop=2)
    reply = await client.request({"command": "ping"})
    assert reply[b"result"] == b"pong"
    assert len(engine.cookies) == 3 and len(set(engine.cookies)) == 1
    assert client.bad_replies == 1
    client.close()


async def test_error_result_raises_with_reason() -> None:
    _, client = await _engine({"result": "error", "error-reason": "Unknown call-id"})
    with pytest.raises(NgError, match="Unknown call-id") as e:
        await client.request({"command": "delete", "call-id": "x"})
    assert e.value.reason == "Unknown call-id"
    client.close()


def test_error_mapping() -> None:
    assert isinstance(_map_error(NgError("offer", "Ran out of ports")), PortsExhausted)
    assert isinstance(_map_error(NgError("offer", "Failed to parse SDP")), SdpError)
    other = NgError("offer", "Incomplete message")
    assert _map_error(other) is other


def test_leg_stats_from_query() -> None:
    stream = {b"local port": 40000, b"flags": [b"RTP", b"filled"], b"last packet": 1700,
              b"endpoint": {b"address": b"127.0.0.1", b"port": 30000},
              b"stats": {b"packets": 7, b"bytes": 1204, b"errors": 1}}
    rtcp = {b"flags": [b"RTCP"], b"stats": {b"packets": 2, b"bytes": 80, b"errors": 0}}
    query = {b"tags": {b"caller": {b"medias": [{b"streams": [stream, rtcp]}]}}}
    st = _leg_stats(query, "caller")
    assert (st.packets, st.bytes, st.dropped, st.rtcp_packets) == (7, 1204, 1, 2)
    assert st.last_rx == 1700.0 and st.latched == ("127.0.0.1", 30000)
    assert _leg_stats(query, "callee").packets == 0
    assert _leg_stats({b"tags": b"junk"}, "caller").packets == 0


# --- pcap ---


def _ipv4_udp(dst: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 5000, dst, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                       bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp


def _ipv6_udp(dst: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 5000, dst, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, b"\0" * 15 + b"\1",
                       b"\0" * 15 + b"\1") + udp


def _pcap(packets: list[tuple[float, bytes]], linktype: int = 101) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for wall, pkt in packets:
        sec = int(wall)
        out += struct.pack("<IIII", sec, round((wall - sec) * 1e6), len(pkt), len(pkt)) + pkt
    return out


def test_pcap_reads_ipv4_ipv6_and_ethernet_and_stops_at_truncation() -> None:
    data = _pcap([(1.5, _ipv4_udp(40000, b"a")), (2.0, _ipv6_udp(40002, b"bb"))])
    assert list(udp_datagrams(data)) == [(1.5, 40000, b"a"), (2.0, 40002, b"bb")]
    eth = b"\0" * 12 + b"\x08\x00" + _ipv4_udp(40000, b"c")
    assert list(udp_datagrams(_pcap([(3.0, eth)], linktype=1))) == [(3.0, 40000, b"c")]
    assert len(list(read_pcap(data[:-1]))) == 1  # a record cut short ends quietly
    assert list(read_pcap(b"")) == []
    with pytest.raises(PcapError, match="magic"):
        list(read_pcap(b"\0" * 24))
    # Not UDP (TCP, protocol 6) is skipped.
    tcp = bytearray(_ipv4_udp(40000, b"x"))
    tcp[9] = 6
    assert list(udp_datagrams(_pcap([(1.0, bytes(tcp))]))) == []


def test_finish_from_pcap_splits_legs_by_destination_port(tmp_path: Path) -> None:
    packets = []
    for i in range(10):
        up = RtpPacket(PT_PCMU, i, 160 * i, 1, payload=b"\x11" * 160)
        down = RtpPacket(PT_PCMU, i, 160 * i, 2, payload=b"\x22" * 160)
        packets.append((1000.0 + 0.02 * i, _ipv4_udp(40000, bytes(up))))
        packets.append((1000.0 + 0.02 * i, _ipv4_udp(40002, bytes(down))))
        packets.append((1000.0 + 0.02 * i, _ipv4_udp(40001, b"\x81\xc8rtcp")))  # RTCP
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(_pcap(packets))
    meta = CallMeta("c1", 1000.0, {"caller": {"codec": "PCMU"}, "callee": {"codec": "PCMU"}})
    result = finish_from_pcap(pcap, tmp_path / "c1", meta, {40000: "caller", 40002: "callee"})
    assert result.files["caller"].duration_ms == 200
    assert result.files["mix"].duration_ms == 200
    assert result.files["caller"].record_start_at == 1_000_000
    assert not pcap.exists() and not list((tmp_path / "c1").glob("*.spool"))
