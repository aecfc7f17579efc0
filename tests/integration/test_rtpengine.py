"""The rtpengine backend against a real rtpengine (userspace, loopback), if installed."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from test_rtp_relay import LOCAL, goertzel, peer, sdp, wav_samples

from recordings.g711 import PT_PCMU, encode, tone
from relay.media.backend import MediaBackend
from relay.media.rtpengine import NgClient, NgTimeout, RtpengineBackend
from relay.media.rtpengine_daemon import RtpengineDaemon
from relay.rtp.packet import RtpPacket
from relay.rtp.session import Side
from relay.sdp import NoCommonCodec, SessionDescription

needs_rtpengine = pytest.mark.skipif(not RtpengineDaemon.available(),
                                reason="rtpengine not installed (apt-get install rtpengine-daemon)")


def _port_base() -> int:
    base = free_port(socket.SOCK_DGRAM)
    return min(base, 64000) & ~1


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[RtpengineDaemon]:
    rec = tmp_path / "rtpengine"
    rec.mkdir()
    base = _port_base()
    daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 100),
                             recording_dir=rec, log_path=tmp_path / "rtpengine.log")
    await daemon.start()
    yield daemon
    daemon.stop()


@needs_rtpengine
async def test_offer_answer_relay_record_delete(engine: RtpengineDaemon, tmp_path: Path) -> None:
    backend = RtpengineBackend(engine.ng_addr, recordings_dir=tmp_path / "rec")
    typed: MediaBackend = backend
    assert await backend.ping()
    caller, callee = await peer(), await peer()
    call = await typed.allocate("rtpe-call-1", record=True)
    offer = await typed.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU, session_id=77))
    answer = await typed.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU, session_id=99))
    o, a = SessionDescription.parse(offer), SessionDescription.parse(answer)
    to_caller, to_callee = a.media[0].port, o.media[0].port
    assert call.local_ports == {Side.CALLER: to_caller, Side.CALLEE: to_callee}
    # Only rtpengine's address and ports cross; the peers' o= and s= do not.
    for body, hidden in ((offer, caller.port), (answer, callee.port)):
        assert str(hidden) not in body.decode()
        assert b"=phone" not in body and b"candidate" not in body
    assert o.origin.username == "-"

    n = 25
    for i in range(n):
        up = RtpPacket(PT_PCMU, i, 160 * i, 0xAAAA,
                       payload=encode(tone(440, 160, start=160 * i), PT_PCMU))
        down = RtpPacket(PT_PCMU, i, 160 * i, 0xBBBB,
                         payload=encode(tone(1000, 160, start=160 * i), PT_PCMU))
        caller.send(bytes(up), to_caller)
        data, src = await callee.recv()
        assert data == bytes(up) and src == (LOCAL, to_callee)
        callee.send(bytes(down), to_callee)
        data, src = await caller.recv()
        assert data == bytes(down) and src == (LOCAL, to_caller)
        await asyncio.sleep(0.02)

    await backend.query(call)
    st = typed.stats(call)
    assert st.caller.packets == n and st.callee.packets == n
    assert typed.idle_calls(60.0) == []

    result = await typed.release(call)
    assert result is not None and await typed.release(call) is None
    assert set(result.files) == {"caller", "callee", "mix"}
    assert result.directory.parent.parent.parent.parent == tmp_path / "rec"
    meta = json.loads((result.directory / "meta.json").read_text())
    assert meta["legs"]["caller"]["codec"] == "PCMU"
    assert meta["files"]["mix"]["sha256"] == result.files["mix"].sha256
    caller_pcm = wav_samples(result.directory / "caller.wav")
    callee_pcm = wav_samples(result.directory / "callee.wav")
    assert len(caller_pcm) >= 160 * n - 160
    assert goertzel(caller_pcm[:1600], 440) > 10 * goertzel(caller_pcm[:1600], 1000)
    assert goertzel(callee_pcm[-1600:], 1000) > 10 * goertzel(callee_pcm[-1600:], 440)
    assert not list((tmp_path / "rtpengine" / "pcaps").glob("*.pcap"))  # converted, removed
    assert await backend.finish_pending() == []  # nothing left half-finished
    await backend.close()


class _Killed(BaseException):
    """The process dying at that point (not an error anything catches)."""


async def _recorded_call(backend: RtpengineBackend, call_id: str, packets: int = 10) -> Any:
    """A recorded call through rtpengine with `packets` of tone each way, not released."""
    caller, callee = await peer(), await peer()
    call = await backend.allocate(call_id, record=True)
    offer = await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
    answer = await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU))
    to_caller = SessionDescription.parse(answer).media[0].port
    to_callee = SessionDescription.parse(offer).media[0].port
    for i in range(packets):
        pkt = RtpPacket(PT_PCMU, i, 160 * i, 0xAAAA,
                        payload=encode(tone(440, 160, start=160 * i), PT_PCMU))
        caller.send(bytes(pkt), to_caller)
        await callee.recv()
        callee.send(bytes(pkt), to_callee)
        await caller.recv()
    return call


@needs_rtpengine
async def test_recordings_are_sealed_as_converted_and_a_crash_between_is_sealed_on_restart(
        engine: RtpengineDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a manifest key the pcap's conversion seals the call folder before its spools
    go (no separate sealer): killed after the WAVs but before the seal, the folder keeps
    its spools, and the next start's `finish_pending` finishes and seals it. The day's
    chain then verifies with both calls in it."""
    from datetime import UTC, datetime

    import recordings.finish as finish_mod
    from recordings.manifest import MANIFEST, verify_day

    key = b"rtpengine-manifest-key"
    root = tmp_path / "rec"
    backend = RtpengineBackend(engine.ng_addr, recordings_dir=root, manifest_key=key)
    first = await backend.release(await _recorded_call(backend, "rtpe-sealed-1"))
    assert first is not None and first.sealed and first.seal_error is None
    assert (first.directory / MANIFEST).exists()

    def killed(*_a: object, **_k: object) -> None:
        raise _Killed

    call = await _recorded_call(backend, "rtpe-sealed-2")
    monkeypatch.setattr(finish_mod, "seal_many", killed)
    with pytest.raises(_Killed):
        await backend.release(call)
    monkeypatch.undo()
    crashed = next(d for d in root.glob("*/*/*/rtpe-sealed-2"))
    assert (crashed / "mix.wav").exists() and not (crashed / MANIFEST).exists()
    assert list(crashed.glob("*.spool"))  # kept: the restart will redo it

    restarted = RtpengineBackend(engine.ng_addr, recordings_dir=root, manifest_key=key)
    again = await restarted.finish_pending()
    assert [(r.call_id, r.sealed) for r in again] == [("rtpe-sealed-2", True)]
    assert not list(crashed.glob("*.spool"))
    day = datetime.fromtimestamp(call.started_at, UTC).strftime("%Y-%m-%d")
    report = verify_day(root, day, (key,))
    assert report.ok and report.checked == 2 and report.unsealed == []
    await backend.close()
    await restarted.close()


@needs_rtpengine
async def test_unrecorded_call_and_errors(engine: RtpengineDaemon, tmp_path: Path) -> None:
    backend = RtpengineBackend(engine.ng_addr)
    caller, callee = await peer(), await peer()
    call = await backend.allocate("rtpe-call-2", record=False)
    with pytest.raises(ValueError, match="already"):
        await backend.allocate("rtpe-call-2", record=False)
    with pytest.raises(NoCommonCodec):
        await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU).replace(
            b"RTP/AVP 0 101", b"RTP/AVP 9 101").replace(b"PCMU", b"G722"))
    await backend.offer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
    await backend.answer(call, Side.CALLEE, sdp(callee.port, PT_PCMU))
    # A re-offer from the callee (re-INVITE from B) swaps the ng tags and still works.
    reoffer = await backend.offer(call, Side.CALLEE, sdp(callee.port, PT_PCMU, session_id=5))
    assert SessionDescription.parse(reoffer).media[0].port == call.local_ports[Side.CALLER]
    await backend.answer(call, Side.CALLER, sdp(caller.port, PT_PCMU))
    assert await backend.release(call) is None
    await backend.close()


async def test_timeout_when_nobody_listens() -> None:
    client = NgClient((LOCAL, free_port(socket.SOCK_DGRAM)), timeout=0.05, retries=2)
    await client.connect()
    with pytest.raises(NgTimeout) as e:
        await client.request({"command": "ping"})
    assert e.value.status == 503
    client.close()


@needs_rtpengine
async def test_relay_serve_hands_media_to_rtpengine(engine: RtpengineDaemon,
                                                    relay_factory: Any,
                                                    tmp_path: Path) -> None:
    """`[media] backend = "rtpengine"`: a SIPp call through `relay serve` gets rtpengine's
    ports in both SDPs and still leaves a normal call record."""
    from sipp_harness import bind, callee, caller, calls, relay_args, udp_port, write_config

    out = udp_port()
    host, port = engine.ng_addr
    cfg = write_config(tmp_path / "cfg", {},
                       media={"backend": "rtpengine", "rtpengine": f"{host}:{port}"})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--config", str(cfg)))
    bind(relay.base)
    uas = callee(tmp_path, out, extra=["-m", "1"]).start()
    await asyncio.sleep(0.3)
    uac = caller(tmp_path, relay.sip_port, extra=["-m", "1", "-d", "300"]).start()
    assert await asyncio.to_thread(uac.wait, 30) == 0, uac.tail()
    assert await asyncio.to_thread(uas.wait, 30) == 0, uas.tail()
    low, high = engine.port_range
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    ok = next(m for m in uac.received() if m.startswith("SIP/2.0 200") and "INVITE" in m)
    for sdp_text in (invite, ok):
        media_port = int(sdp_text.split("m=audio ", 1)[1].split()[0])
        assert low <= media_port <= high, sdp_text
    (rec,) = await asyncio.to_thread(calls, relay.base)
    assert rec["sip_code"] == 200 and rec["released_by"] == "caller"
    # Without [media] rtpengine_dtmf, AXE callers' in-band digits go unheard: said at start.
    assert "rtpengine_dtmf is not set" in relay.log.read_text()


@needs_rtpengine
async def test_two_daemons_run_side_by_side(tmp_path: Path) -> None:
    """Two daemons on one host: with Debian's /etc/rtpengine/rtpengine.conf read (its
    CLI on TCP 2224, HTTP on 2225) the second exited at once with status 255."""
    daemons = []
    try:
        for i in range(2):
            base = _port_base()
            daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 10),
                                     log_path=tmp_path / f"rtpengine{i}.log")
            await daemon.start()
            daemons.append(daemon)
        for daemon in daemons:
            assert await RtpengineBackend(daemon.ng_addr).ping()
    finally:
        for daemon in daemons:
            daemon.stop()
