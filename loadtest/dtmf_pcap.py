"""RTP pcaps that SIPp 3.6 plays (`<exec play_pcap_audio="[pcap]"/>`): RFC 4733 digits
inside a G.711 stream, and G.711 tones. The AXE benchmark (`python -m loadtest axe`) keys
extensions with them; the tests (tests/integration/dtmf_pcap.py adds the decoders) check
the relay with them.

Why not SIPp's own `dtmf_2833_*.pcap` (in /usr/share/sip-tester)? Each holds one event
cut from one old call: playing "55" sends the same RTP timestamp *and* the same sequence
numbers twice (a receiver rightly takes it as one event), the files' sequence numbers and
timestamps run backwards between some digits ("1" after "0"), each ends with three
copies of one packet (same sequence number, sent back to back), and there is no audio
before the first event to latch a relay's media. SIPp 3.6.1's `play_dtmf` action sends
payload type 96 whatever the SDP says, after 400 ms of "noop" PT 97 filler whose
sequence numbers step by 2, from an SSRC of its own, and its events' timestamps advance
400 a digit though each event lasts 1600 (seen on the wire here).

Here one call is one stream (one SSRC, one clock): optional PCMU before, between and
after the events; each digit a new event (a new RTP timestamp, RFC 4733 §2.5.1.2), the
marker bit on its first packet (§2.5.1.3), its duration growing every 20 ms, and three
end packets (E bit) 20 ms apart with new sequence numbers (§2.5.1.4); sequence numbers
continuous and timestamps following the pcap's clock.

    write_dtmf_pcap(tmp_path / "ext.pcap", "1234#")
    write_tone_pcap(tmp_path / "b.pcap", 1000.0, 5.0)

SIPp only takes the UDP payloads out of the file (prepare_pcap.c): addresses and ports
are rewritten to the call's media (every packet here goes to one port, so all of it goes
to the SDP's RTP port), and it keeps the capture's spacing between packets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from recordings.g711 import PT_PCMA, PT_PCMU, encode, tone

__all__ = [
    "EVENT_CODES",
    "PTIME_MS",
    "SAMPLES",
    "dtmf_packets",
    "rtp_bytes",
    "write_dtmf_pcap",
    "write_rtp_pcap",
    "write_tone_pcap",
]

#: RFC 4733 §3.2, table 7: DTMF named events.
EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11,
               "A": 12, "B": 13, "C": 14, "D": 15}
PTIME_MS = 20
SAMPLES = 160  # per 20 ms at 8 kHz
_CODECS = {"PCMU": PT_PCMU, "PCMA": PT_PCMA}
_SILENCE = {PT_PCMU: b"\xff" * SAMPLES, PT_PCMA: b"\xd5" * SAMPLES}  # G.711 zero
_EPOCH = 1_700_000_000  # capture time of the first packet (any value plays the same)


def rtp_bytes(pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    """One RTP packet (RFC 3550 §5.1: V=2, no padding, extension or CSRC)."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path | str, packets: Iterable[tuple[float, bytes]], *,
                   src_port: int = 5000, dst_port: int = 6000) -> Path:
    """Write (seconds from start, RTP bytes) as a classic libpcap file (format 2.4,
    LINKTYPE_ETHERNET) of IPv4/UDP packets 127.0.0.1:src_port -> 127.0.0.1:dst_port.

    SIPp needs Ethernet (or Linux SLL) framing, UDP and a right UDP length: it sizes each
    packet from that field and sends from each packet's dst_port minus the lowest one.
    """
    path = Path(path)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for ident, (offset, rtp) in enumerate(packets):
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF,
                                   0, 64, 17, 0, b"\x7f\0\0\x01", b"\x7f\0\0\x01"))
        ip[10:12] = struct.pack("!H", _ip_checksum(bytes(ip)))
        frame = b"\x00" * 12 + b"\x08\x00" + bytes(ip) + udp
        micros = round(offset * 1e6)
        out += struct.pack("<IIII", _EPOCH + micros // 1_000_000, micros % 1_000_000,
                           len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


def _slots(ms: int) -> int:
    """Whole 20 ms packet slots in `ms` (at least one when ms > 0)."""
    return max(1, round(ms / PTIME_MS)) if ms > 0 else 0


def dtmf_packets(digits: str, *, pt: int = 101, event_ms: int = 100, gap_ms: int = 200,
                 lead_ms: int = 500, tail_ms: int = 500, pause_ms: int = 2000,
                 ssrc: int = 0x7E1E7E11, seq: int = 4000, ts: int = 160_000,
                 volume: int = 10, with_audio: bool = True, audio_pt: int = PT_PCMU,
                 audio_hz: float | None = None) -> list[tuple[float, bytes]]:
    """The (seconds from start, RTP bytes) of one stream that keys `digits`.

    `digits` holds 0-9, *, #, A-D; a "," adds `pause_ms` of audio (a caller who waits,
    e.g. between two tries). Time advances 20 ms a slot and the RTP clock 160 a slot,
    whether a slot carries audio (when `with_audio`), an event packet, or nothing. The
    audio is G.711 silence, or a sine at `audio_hz` (the caller's voice, to find in what
    the other side hears and in the recording; one frequency is never a DTMF pair).
    """
    out: list[tuple[float, bytes]] = []
    slot = 0
    next_seq = seq

    def send(pt_: int, marker: bool, stamp: int, payload: bytes) -> None:
        nonlocal next_seq
        out.append((slot * PTIME_MS / 1000,
                    rtp_bytes(pt_, marker, next_seq, stamp, ssrc, payload)))
        next_seq += 1

    def audio(ms: int) -> None:
        nonlocal slot
        for _ in range(_slots(ms)):
            if with_audio:
                voice = _SILENCE[audio_pt] if audio_hz is None else encode(
                    tone(audio_hz, SAMPLES, start=slot * SAMPLES), audio_pt)
                send(audio_pt, False, ts + slot * SAMPLES, voice)
            slot += 1

    audio(lead_ms)
    for i, d in enumerate(digits):
        if d == ",":
            audio(pause_ms)
            continue
        code = EVENT_CODES.get(d.upper())
        if code is None:
            raise ValueError(f"{d!r} is not a DTMF digit (0-9 * # A-D) or ','")
        start = ts + slot * SAMPLES  # RFC 4733 §2.5.1.2: the event's start, fixed for it
        packets = _slots(event_ms)
        for k in range(packets):
            duration = (k + 1) * SAMPLES
            send(pt, k == 0, start, struct.pack("!BBH", code, volume & 0x3F, duration))
            slot += 1
        for _ in range(3):  # §2.5.1.4: the final packet three times, at the packet interval
            send(pt, False, start, struct.pack("!BBH", code, 0x80 | (volume & 0x3F),
                                                 packets * SAMPLES))
            slot += 1
        if i < len(digits) - 1:
            audio(gap_ms)
    audio(tail_ms)
    return out


def write_dtmf_pcap(path: Path | str, digits: str, *, pt: int = 101, event_ms: int = 100,
                    gap_ms: int = 200, lead_ms: int = 500, tail_ms: int = 500,
                    pause_ms: int = 2000, ssrc: int = 0x7E1E7E11, with_audio: bool = True,
                    audio_hz: float | None = None) -> Path:
    """A pcap of `digits` as RFC 4733 telephone-events (payload type `pt`) inside a PCMU
    stream (see `dtmf_packets`; "," pauses `pause_ms`; `audio_hz` a tone instead of
    silence). Plays for about `pcap_seconds(path)`."""
    return write_rtp_pcap(path, dtmf_packets(
        digits, pt=pt, event_ms=event_ms, gap_ms=gap_ms, lead_ms=lead_ms, tail_ms=tail_ms,
        pause_ms=pause_ms, ssrc=ssrc, with_audio=with_audio, audio_hz=audio_hz))


def write_tone_pcap(path: Path | str, freq_hz: float, seconds: float, codec: str = "PCMU",
                    *, amplitude: float = 8000.0, ssrc: int = 0x70AE0001) -> Path:
    """`seconds` of a sine at `freq_hz` as 20 ms G.711 packets ("PCMU" or "PCMA")."""
    pt = _CODECS[codec.upper()]
    packets = []
    for i in range(round(seconds * 1000 / PTIME_MS)):
        payload = encode(tone(freq_hz, SAMPLES, start=i * SAMPLES, amplitude=amplitude), pt)
        packets.append((i * PTIME_MS / 1000,
                        rtp_bytes(pt, i == 0, 1000 + i, i * SAMPLES, ssrc, payload)))
    return write_rtp_pcap(path, packets)
