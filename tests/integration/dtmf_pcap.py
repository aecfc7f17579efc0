"""RTP pcaps that SIPp 3.6 plays (`<exec play_pcap_audio="[pcap]"/>`), and the decoders a
test needs for what comes back: RFC 4733 digits, G.711 tones, audible or silent audio.

The writers live in `loadtest.dtmf_pcap` (the AXE benchmark keys extensions with them;
why they exist and how SIPp plays them is written there) and are re-exported here:

    write_dtmf_pcap(tmp_path / "ext.pcap", "1234#")
    write_tone_pcap(tmp_path / "b.pcap", 1000.0, 5.0)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from audio_check import goertzel

from loadtest.dtmf_pcap import (
    EVENT_CODES,
    PTIME_MS,
    SAMPLES,
    dtmf_packets,
    write_dtmf_pcap,
    write_rtp_pcap,
    write_tone_pcap,
)
from recordings.g711 import PT_PCMA, PT_PCMU, decode
from recordings.pcap import udp_datagrams

__all__ = [
    "EVENT_CODES",
    "PTIME_MS",
    "SAMPLES",
    "DtmfEvent",
    "Rtp",
    "digits",
    "dominant_frequency",
    "dtmf_packets",
    "is_audible",
    "iter_events_by_digit",
    "parse_rtp",
    "pcap_rtp",
    "pcap_seconds",
    "pcm_of",
    "rms",
    "telephone_events",
    "write_dtmf_pcap",
    "write_rtp_pcap",
    "write_tone_pcap",
]

_DIGIT_OF = {code: d for d, code in EVENT_CODES.items()}


class Rtp(NamedTuple):
    """The parts of an RTP packet (RFC 3550 §5.1) the tests look at."""

    pt: int
    marker: bool
    seq: int
    ts: int
    ssrc: int
    payload: bytes


class DtmfEvent(NamedTuple):
    """One RFC 4733 §2.3 telephone-event payload, with its packet's timestamp."""

    digit: str
    ts: int
    end: bool
    volume: int
    duration: int
    seq: int


# --- reading -------------------------------------------------------------------------------

def pcap_rtp(path: Path | str) -> list[tuple[float, bytes]]:
    """(capture time, UDP payload) of each packet of a libpcap file (ours or SIPp's)."""
    return [(t, p) for t, _port, p in udp_datagrams(Path(path).read_bytes())]


def pcap_seconds(path: Path | str) -> float:
    """How long SIPp takes to play a pcap: from its first packet to its last."""
    times = [t for t, _ in pcap_rtp(path)]
    return times[-1] - times[0] if times else 0.0


def parse_rtp(data: bytes) -> Rtp | None:
    """An RTP packet (RFC 3550 §5.1) or None for anything else (RTCP, STUN, garbage)."""
    if len(data) < 12 or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 76:
        return None  # not version 2, or RTCP's PT 200-204 seen through the M bit (RFC 5761)
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension (§5.3.1): 16-bit profile, 16-bit length in words
        if len(data) < start + 4:
            return None
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data) - (data[-1] if b0 & 0x20 else 0)  # padding (§5.1 P bit)
    if start > end:
        return None
    return Rtp(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, data[start:end])


def telephone_events(payloads: Iterable[bytes], pt: int | Sequence[int] = 101
                     ) -> list[DtmfEvent]:
    """Every RFC 4733 event packet among `payloads` (UDP payloads), in order."""
    pts = {pt} if isinstance(pt, int) else set(pt)
    out = []
    for data in payloads:
        rtp = parse_rtp(data)
        if rtp is None or rtp.pt not in pts or len(rtp.payload) < 4:
            continue
        code, flags, duration = struct.unpack_from("!BBH", rtp.payload)
        out.append(DtmfEvent(_DIGIT_OF.get(code, f"<{code}>"), rtp.ts, bool(flags & 0x80),
                             flags & 0x3F, duration, rtp.seq))
    return out


def digits(events: Iterable[DtmfEvent]) -> str:
    """The digits the events key, as a receiver that goes by timestamp hears them: one
    digit per event timestamp (retransmissions and end packets are the same event)."""
    seen: set[int] = set()
    out = []
    for e in events:
        if e.ts not in seen:
            seen.add(e.ts)
            out.append(e.digit)
    return "".join(out)


def rms(payload: bytes, pt: int = PT_PCMU) -> float:
    """Root mean square of a G.711 payload's 16-bit samples (0 for digital silence)."""
    pcm = decode(payload, pt)
    xs = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else 0.0


def is_audible(data: bytes, *, pts: Sequence[int] = (PT_PCMU, PT_PCMA),
               min_rms: float = 100.0) -> bool:
    """True when `data` is an RTP packet of G.711 audio louder than `min_rms` (a prompt
    or ringback, not the silence or comfort noise a relay may send to keep NATs open)."""
    rtp = parse_rtp(data)
    return rtp is not None and rtp.pt in pts and bool(rtp.payload) and \
        rms(rtp.payload, rtp.pt) >= min_rms


def dominant_frequency(samples: Sequence[int], candidates: Iterable[float]) -> float:
    """The candidate frequency with the most energy in 8 kHz samples (Goertzel)."""
    return max(candidates, key=lambda f: goertzel(samples, f))


def pcm_of(packets: Iterable[bytes], pt: int = PT_PCMU) -> list[int]:
    """The 16-bit samples of the G.711 packets of payload type `pt`, in arrival order."""
    out: list[int] = []
    for data in packets:
        rtp = parse_rtp(data)
        if rtp is not None and rtp.pt == pt:
            pcm = decode(rtp.payload, pt)
            out.extend(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    return out


def iter_events_by_digit(events: Sequence[DtmfEvent]) -> Iterator[list[DtmfEvent]]:
    """The packets of each event (same timestamp) in order of first appearance."""
    order: list[int] = []
    groups: dict[int, list[DtmfEvent]] = {}
    for e in events:
        if e.ts not in groups:
            order.append(e.ts)
            groups[e.ts] = []
        groups[e.ts].append(e)
    for ts in order:
        yield groups[ts]
