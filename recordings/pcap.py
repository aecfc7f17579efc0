"""rtpengine's pcap recordings -> our spools -> caller/callee/mix WAVs (blocking file work).

rtpengine's `--recording-method=pcap` writes one pcap per call (libpcap's classic
file format: a 24-byte global header, then per packet a 16-byte record header and
the bytes). With `--recording-format=raw` the link type is LINKTYPE_RAW (101): each
record is an IP packet; with `eth` it is LINKTYPE_ETHERNET (1). rtpengine writes the
packets it *received*, with the sender as the source and its own port as the
destination, so the destination port says which side spoke: the port rtpengine
opened toward the caller carries what the caller said.

The conversion writes those datagrams into the same spool files the in-process
relay writes (`recordings.spool`), with the pcap's capture time as the arrival wall
time, and then runs the one finisher (`recordings.finish.finish_call`): an rtpengine
call's record looks exactly like an in-process one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from recordings.fileio import replace_file
from recordings.finish import RecordingResult, finish_call
from recordings.spool import CallMeta, SpoolError, SpoolWriter

__all__ = ["PcapError", "finish_from_pcap", "read_pcap", "udp_datagrams"]

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD_LE = struct.Struct("<IIII")
_RECORD_BE = struct.Struct(">IIII")
_MAGIC_US = 0xA1B2C3D4  # microsecond timestamps
_MAGIC_NS = 0xA1B23C4D  # nanosecond timestamps
#: Link types (tcpdump.org "LINK-LAYER HEADER TYPES"): raw IP, DLT_RAW's BSD value, Ethernet.
_LINK_RAW = frozenset({101, 12, 14})
_LINK_ETH = 1
_MAX_PACKET = 262144


class PcapError(SpoolError):
    """The file is not a classic pcap file we can read (a remote error: bad input)."""


def read_pcap(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    """Yield (capture time in epoch seconds, link type, packet bytes) per record.

    A record cut short at the end (rtpengine still writing, or killed) ends the
    iteration quietly, like a truncated spool.
    """
    if len(data) < _GLOBAL.size:
        if not data:
            return
        raise PcapError("pcap shorter than its global header")
    magic_le = struct.unpack_from("<I", data)[0]
    if magic_le in (_MAGIC_US, _MAGIC_NS):
        endian, record = "<", _RECORD_LE
        magic = magic_le
    else:
        magic = struct.unpack_from(">I", data)[0]
        if magic not in (_MAGIC_US, _MAGIC_NS):
            raise PcapError("not a pcap file (bad magic)")
        endian, record = ">", _RECORD_BE
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    divisor = 1e9 if magic == _MAGIC_NS else 1e6
    offset = _GLOBAL.size
    n = len(data)
    while offset + record.size <= n:
        sec, frac, incl, _orig = record.unpack_from(data, offset)
        if incl > _MAX_PACKET:
            raise PcapError(f"record at {offset} claims {incl} bytes")
        start = offset + record.size
        if start + incl > n:
            return
        yield sec + frac / divisor, linktype, data[start:start + incl]
        offset = start + incl


def _ip_payload(linktype: int, packet: bytes) -> tuple[int, bytes] | None:
    """(destination UDP port, UDP payload) of an IPv4/IPv6 UDP packet, else None."""
    if linktype == _LINK_ETH:
        if len(packet) < 14:
            return None
        ethertype = int.from_bytes(packet[12:14], "big")
        if ethertype not in (0x0800, 0x86DD):
            return None
        packet = packet[14:]
    elif linktype not in _LINK_RAW:
        return None
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = 4 * (packet[0] & 0x0F)
        if ihl < 20 or len(packet) < ihl + 8 or packet[9] != 17:  # RFC 791; 17 = UDP
            return None
        udp = packet[ihl:]
    elif version == 6:
        # RFC 8200 §3: next header 17 directly after the fixed header; rtpengine
        # writes no extension headers, so anything else is skipped rather than parsed.
        if len(packet) < 48 or packet[6] != 17:
            return None
        udp = packet[40:]
    else:
        return None
    dst = int.from_bytes(udp[2:4], "big")
    length = int.from_bytes(udp[4:6], "big")  # RFC 768: header + data
    if length < 8 or length > len(udp):
        return None
    return dst, udp[8:length]


def udp_datagrams(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    """Yield (capture time, destination port, UDP payload) for each UDP packet."""
    for wall, linktype, packet in read_pcap(data):
        parsed = _ip_payload(linktype, packet)
        if parsed is not None:
            yield wall, parsed[0], parsed[1]


def finish_from_pcap(pcap: Path, directory: Path, meta: CallMeta,
                     leg_ports: Mapping[int, str], *, remove_pcap: bool = True,
                     seal: tuple[bytes, float] | None = None) -> RecordingResult:
    """Turn rtpengine's pcap of one call into our call folder and finish it.

    `leg_ports` maps the rtpengine port that faced a side to the leg name
    ("caller"/"callee"): datagrams sent to it are what that side said. RTCP (the
    +1 ports) and anything else are not in the map and are skipped. Idempotent: a
    crash before the WAVs exist leaves the pcap in place for a retry. With `seal` (a
    key, the time now) the folder is sealed before the spools go (`finish_call`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    data = Path(pcap).read_bytes()
    files: dict[str, Any] = {}
    writers: dict[str, SpoolWriter] = {}
    try:
        for leg in ("caller", "callee"):
            files[leg] = open(directory / f"{leg}.spool", "wb")  # noqa: SIM115
            # The whole file is converted at once: no periodic flushes needed.
            writers[leg] = SpoolWriter(files[leg], flush_packets=1 << 30,
                                       flush_interval=float("inf"))
        for wall, port, payload in udp_datagrams(data):
            name = leg_ports.get(port)
            if name is not None:
                writers[name].append(payload, wall)
    finally:
        for writer in writers.values():
            writer.close()
        for f in files.values():
            f.close()
    replace_file(directory / "meta.json", (meta.to_json().encode(),))
    result = finish_call(directory, seal=seal)
    if remove_pcap:
        Path(pcap).unlink(missing_ok=True)
    return result
