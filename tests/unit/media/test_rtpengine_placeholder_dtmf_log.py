"""The rtpengine backend's voice pieces without rtpengine: DTMF log, placeholder, WAVs."""

from __future__ import annotations

import asyncio
import socket
import wave
from pathlib import Path

import pytest
from conftest import free_port

from relay.media.backend import DigitReceived, MediaEvent
from relay.media.bencode import decode_ng, encode_ng
from relay.media.rtpengine import RtpengineBackend
from relay.media.rtpengine_daemon import RtpengineDaemon
from relay.media.rtpengine_voice import (
    DtmfLogEntry,
    DtmfLogError,
    dtmf_digit,
    parse_dtmf_log,
    placeholder_answer,
    wav_seconds,
)
from relay.rtp.session import Side
from relay.sdp import NoCommonCodec, SessionDescription, remote_media

# Captured from rtpengine 10.5.3.5 (--dtmf-log-dest), one digit "5" from the caller.
CAPTURED = (b'{"callid":"c1","source_tag":"caller","tags":["callee","caller"],"type":"DTMF",'
            b'"timestamp":1796661956,"source_ip":"127.0.0.1","event":5,"duration":100,'
            b'"volume":10}')


def test_parse_captured_dtmf_log() -> None:
    assert parse_dtmf_log(CAPTURED) == DtmfLogEntry("c1", "caller", 5, 100)
    assert [dtmf_digit(e) for e in (0, 9, 10, 11, 12, 15, 16)] == [
        "0", "9", "*", "#", "A", "D", None]


@pytest.mark.parametrize(("data", "error"), [
    (b"", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (CAPTURED[:-1], "not JSON"),  # truncated
    (b"[1, 2]", "not a DTMF event"),
    (CAPTURED.replace(b'"DTMF"', b'"other"'), "not a DTMF event"),
    (CAPTURED.replace(b'"callid":"c1",', b""), "callid or source_tag missing"),
    (CAPTURED.replace(b'"source_tag":"caller"', b'"source_tag":7'), "callid or source_tag"),
    (CAPTURED.replace(b'"event":5', b'"event":"5"'), "bad event"),
    (CAPTURED.replace(b'"event":5', b'"event":true'), "bad event"),
    (CAPTURED.replace(b'"event":5', b'"event":256'), "bad event"),
    (CAPTURED.replace(b'"duration":100', b'"duration":-1'), "bad duration"),
])
def test_parse_rejects_what_is_not_a_dtmf_event(data: bytes, error: str) -> None:
    with pytest.raises(DtmfLogError, match=error):
        parse_dtmf_log(data)


def _offer(m_lines: list[str]) -> SessionDescription:
    lines = ["v=0", "o=phone 1 1 IN IP4 192.0.2.1", "s=phone", "c=IN IP4 192.0.2.1", "t=0 0",
             *m_lines]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def test_placeholder_takes_pcmu_and_the_8k_event_and_rejects_other_streams() -> None:
    offer = _offer(["m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
                    "m=audio 4000 RTP/AVP 8 0 97 101", "a=rtpmap:97 telephone-event/48000",
                    "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"])
    body, codec = placeholder_answer(offer, "203.0.113.5", 42)
    answer = SessionDescription.parse(body)
    assert codec == "PCMU"
    assert [m.m_value for m in answer.media] == ["video 0 RTP/AVP 96", "audio 9 RTP/AVP 0 101"]
    assert answer.media[1].fmtp == {"101": "0-16"} and answer.media[1].direction == "sendrecv"
    assert str(answer.origin) == "- 42 1 IN IP4 203.0.113.5"
    media = remote_media(answer)
    assert (media.address, media.rtp_port, media.payload_types) == ("203.0.113.5", 9, (0, 101))


def test_placeholder_falls_back_to_pcma_without_events_and_speaks_ipv6() -> None:
    body, codec = placeholder_answer(_offer(["m=audio 4000 RTP/AVP 9 8"]), "2001:db8::5", 1)
    answer = SessionDescription.parse(body)
    assert codec == "PCMA" and answer.media[0].formats == ["8"]
    assert answer.connection is not None and answer.connection.addrtype == "IP6"
    with pytest.raises(NoCommonCodec):
        placeholder_answer(_offer(["m=audio 4000 RTP/AVP 9"]), "203.0.113.5", 1)


def test_wav_seconds(tmp_path: Path) -> None:
    path = tmp_path / "p.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 12000)
    assert wav_seconds(path) == 1.5
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        wav_seconds(tmp_path / "bad.wav")
    with pytest.raises(OSError):
        wav_seconds(tmp_path / "missing.wav")


class OkEngine(asyncio.DatagramProtocol):
    """Answers every ng request `result: ok` and keeps the commands."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, body = decode_ng(data)
        self.commands.append(body[b"command"])  # type: ignore[arg-type]
        assert self.transport is not None
        self.transport.sendto(encode_ng(cookie, {"result": "ok"}), addr)


def _send(data: bytes, to: tuple[str, int], source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(data, to)


async def test_dtmf_log_reports_detected_sides_of_live_calls_from_rtpengine_only() -> None:
    loop = asyncio.get_running_loop()
    transport, engine = await loop.create_datagram_endpoint(OkEngine,
                                                            local_addr=("127.0.0.1", 0))
    dtmf = ("127.0.0.1", free_port(socket.SOCK_DGRAM))
    backend = RtpengineBackend(transport.get_extra_info("sockname"), dtmf_addr=dtmf)
    events: list[MediaEvent] = []
    backend.set_listener(events.append)
    call = await backend.allocate("c1", record=False)
    call.state.offered_by = Side.CALLER  # type: ignore[attr-defined]  # as after an offer
    await backend.detect_digits(call, Side.CALLER, True)
    assert engine.commands == [b"block DTMF"]

    _send(CAPTURED, dtmf)  # "5" from the caller: reported
    _send(CAPTURED.replace(b'"caller","tags"', b'"callee","tags"'), dtmf)  # B: not detected
    _send(CAPTURED.replace(b'"c1"', b'"c2"'), dtmf)  # no such call
    _send(b"garbage", dtmf)
    _send(CAPTURED, dtmf, source="127.0.0.2")  # not rtpengine's address
    await asyncio.sleep(0.2)
    assert [(e.call_id, e.side, e.digit) for e in events if isinstance(e, DigitReceived)] == [
        ("c1", Side.CALLER, "5")]
    assert len(events) == 1 and backend.bad_dtmf_logs == 2

    await backend.detect_digits(call, Side.CALLER, False)
    _send(CAPTURED, dtmf)
    await asyncio.sleep(0.2)
    assert len(events) == 1 and engine.commands[-1] == b"unblock DTMF"
    await backend.close()
    transport.close()



def test_daemon_reads_no_host_config() -> None:
    """The host's rtpengine.conf (Debian's opens TCP 2224 and 2225) is not read."""
    daemon = RtpengineDaemon(2223, (30000, 30010), binary="/bin/true")
    assert daemon.args[1] == "--config-file=none"
