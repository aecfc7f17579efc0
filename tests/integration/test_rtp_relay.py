"""The in-process media backend on real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import array
import asyncio
import math
import socket
import sys
import wave
from pathlib import Path
from typing import cast

import pytest
from conftest import free_port

from recordings.g711 import PT_PCMA, PT_PCMU, encode, tone
from relay.media.backend import MediaBackend
from relay.media.inprocess import InProcessBackend
from relay.rtp.packet import RtpPacket
from relay.rtp.ports import PortsExhausted
from relay.rtp.session import Side
from relay.sdp import NoCommonCodec, SessionDescription

LOCAL = "127.0.0.1"


class Peer(asyncio.DatagramProtocol):
    """A plain UDP socket standing in for a phone: sends, and queues what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Selector loops hand a transport that is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (LOCAL, port))

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.received.get(), timeout)


async def peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Peer, local_addr=(LOCAL, 0))
    return proto


def sdp(port: int, pt: int, rtcp: int | None = None, session_id: int = 1) -> bytes:
    enc = "PCMU" if pt == PT_PCMU else "PCMA"
    lines = ["v=0", f"o=phone {session_id} 1 IN IP4 {LOCAL}", "s=phone", f"c=IN IP4 {LOCAL}",
             "t=0 0", f"m=audio {port} RTP/AVP {pt} 101", f"a=rtpmap:{pt} {enc}/8000",
             "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv"]
    if rtcp is not None:
        lines.append(f"a=rtcp:{rtcp}")
    return ("\r\n".join(lines) + "\r\n").encode()


def port_range() -> tuple[int, int]:
    base = free_port(socket.SOCK_DGRAM)
    base = min(base, 65000) & ~1
    return base, base + 40


def goertzel(xs: array.array[int], freq: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in xs:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def wav_samples(path: Path) -> array.array[int]:
    with wave.open(str(path), "rb") as w:
        data = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        data.byteswap()
    return data


async def test_relay_both_ways_hides_peers_drops_strangers_and_records(tmp_path: Path) -> None:
    backend = InProcessBackend(bind_host=LOCAL, port_range=port_range(), recordings_dir=tmp_path)
    typed: MediaBackend = backend  # the B2BUA sees only the protocol
    caller, callee, callee_rtcp, caller_rtcp, stranger = [await peer() for _ in range(5)]
    call = await typed.allocate("it-call-1", record=True)
    to_caller, to_callee = call.local_ports[Side.CALLER], call.local_ports[Side.CALLEE]

    offer = await typed.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU, caller_rtcp.port))
    answer = await typed.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU, callee_rtcp.port, 9))
    o, a = SessionDescription.parse(offer), SessionDescription.parse(answer)
    assert o.media[0].port == to_callee and a.media[0].port == to_caller
    assert str(caller.port) not in offer.decode() and str(callee.port) not in answer.decode()
    assert b"=phone" not in offer and b"=phone" not in answer

    relay_for_caller, relay_for_callee = (LOCAL, to_caller), (LOCAL, to_callee)
    n = 25
    for i in range(n):
        up = RtpPacket(PT_PCMU, 65530 + i, 160 * i, 0xAAAA,
                       payload=encode(tone(440, 160, start=160 * i), PT_PCMU))
        down = RtpPacket(PT_PCMU, i, 4000 + 160 * i, 0xBBBB,
                         payload=encode(tone(1000, 160, start=160 * i), PT_PCMU))
        caller.send(bytes(up), to_caller)
        data, src = await callee.recv()
        assert data == bytes(up) and src == relay_for_callee
        callee.send(bytes(down), to_callee)
        data, src = await caller.recv()
        assert data == bytes(down) and src == relay_for_caller
        await asyncio.sleep(0.002)

    # RFC 4733 telephone-event passes through byte for byte.
    dtmf = bytes(RtpPacket(101, 100, 9999, 0xAAAA, True, payload=b"\x05\x0a\x00\xa0"))
    caller.send(dtmf, to_caller)
    assert await callee.recv() == (dtmf, relay_for_callee)

    # RTCP on +1, to the a=rtcp port each side announced.
    rr = bytes.fromhex("80c90001000000aa")
    caller_rtcp.send(rr, to_caller + 1)
    assert await callee_rtcp.recv() == (rr, (LOCAL, to_callee + 1))

    # A stranger (same IP, other port: the latch is on the caller's exact source).
    stranger.send(b"\x80\x00" + bytes(170), to_caller)
    stranger.send(b"\x80\x00" + bytes(170), to_callee)
    await asyncio.sleep(0.1)
    assert callee.received.empty() and caller.received.empty()
    st = typed.stats(call)
    assert (st.caller.packets, st.caller.dropped) == (n + 1, 1)
    assert (st.callee.packets, st.callee.dropped) == (n, 1)
    assert st.caller.rtcp_packets == 1

    assert typed.idle_calls(3600) == [] and typed.idle_calls(0) == [call]

    result = await typed.release(call)
    assert result is not None and set(result.files) == {"caller", "callee", "mix"}
    assert result.files["caller"].duration_ms >= 480
    rec = wav_samples(result.files["caller"].path)
    assert goertzel(rec, 440) > 100 * goertzel(rec, 1000)
    rec = wav_samples(result.files["callee"].path)
    assert goertzel(rec, 1000) > 100 * goertzel(rec, 440)

    # The ports are free again: nothing answers, and we can bind them ourselves.
    assert backend.pool.in_use == 0 and backend.calls == {}
    for port in (to_caller, to_caller + 1, to_callee, to_callee + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCAL, port))
    assert await typed.release(call) is None  # idempotent, ports released once
    for p in (caller, callee, callee_rtcp, caller_rtcp, stranger):
        assert p.transport is not None
        p.transport.close()


async def test_exhaustion_and_bad_sdp_leave_no_leak(tmp_path: Path) -> None:
    lo, _ = port_range()
    backend = InProcessBackend(bind_host=LOCAL, port_range=(lo, lo + 3))  # two pairs
    call = await backend.allocate("it-call-2", record=False)
    with pytest.raises(PortsExhausted):
        await backend.allocate("it-call-3", record=False)
    assert backend.pool.in_use == 2
    opus = sdp(5000, PT_PCMA).replace(b"RTP/AVP 8 101", b"RTP/AVP 96").replace(
        b"PCMA/8000", b"opus/48000/2")
    with pytest.raises(NoCommonCodec):
        await backend.offer(call, Side.CALLER, opus)
    assert backend.stats(call).caller.packets == 0
    assert await backend.release(call) is None
    assert backend.pool.in_use == 0
    await backend.close()


async def test_finish_in_a_process_pool_and_offer_after_release_is_refused(
        tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        backend = InProcessBackend(bind_host=LOCAL, port_range=port_range(),
                                   recordings_dir=tmp_path, executor=pool)
        caller, callee = await peer(), await peer()
        call = await backend.allocate("it-call-4", record=True)
        await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMA))
        await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMA))
        for i in range(10):
            pkt = RtpPacket(PT_PCMA, i, 160 * i, 7, payload=encode(tone(440, 160), PT_PCMA))
            caller.send(bytes(pkt), call.local_ports[Side.CALLER])
            await callee.recv()
        result = await backend.release(call)
        assert result is not None and result.files["caller"].duration_ms == 200
        assert result.files["callee"].duration_ms == 0
        meta = (result.directory / "meta.json").read_text()
        assert '"codec": "PCMA"' in meta
        with pytest.raises(RuntimeError):
            await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMA))
        for p in (caller, callee):
            assert p.transport is not None
            p.transport.close()
