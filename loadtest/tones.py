"""G.711 tone pcaps that SIPp can play (`play_pcap_audio`): known audio for recording
tests, the README tour and media load.

    python -m loadtest.tones OUT.pcap --freq 440 --seconds 10 [--pcmu]
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

from recordings.g711 import PT_PCMA, PT_PCMU, encode, tone

__all__ = ["write_tone_pcap"]

_PTIME = 160  # samples per 20 ms packet at 8 kHz


def write_tone_pcap(path: Path | str, freq: float, seconds: float, pt: int = PT_PCMA,
                    *, ssrc: int = 0x1234ABCD, dst_port: int = 6000) -> Path:
    """Write `seconds` of a sine at `freq` as 20 ms RTP packets in a classic pcap file
    (Ethernet/IPv4/UDP, libpcap format 2.4); SIPp only takes the RTP out of it."""
    path = Path(path)
    packets = int(seconds * 50)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i in range(packets):
        payload = encode(tone(freq, _PTIME, start=i * _PTIME), pt)
        # RFC 3550 §5.1: V=2, no padding/extension/CSRC, marker on the first packet.
        rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | pt, i & 0xFFFF,
                          i * _PTIME, ssrc) + payload
        udp = struct.pack("!HHHH", 5000, dst_port, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        ts = i * 0.02
        out += struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="loadtest.tones", description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--freq", type=float, default=440.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pcmu", action="store_true", help="PCMU (PT 0) instead of PCMA")
    a = ap.parse_args(argv)
    write_tone_pcap(a.out, a.freq, a.seconds, PT_PCMU if a.pcmu else PT_PCMA)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
