"""SIPp peers for AXE calls (issue 9): callers that key an extension after the relay
answers (RFC 4733 in a pcap, or SIP INFO) and a callee that speaks a known tone; and
the small checks such calls need on what the sniffer saw and what the relay recorded.

    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", "1234#")
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", 1000.0, 20.0))
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=1500, hold_ms=8000)
    uas.start(); uac.start(); assert uac.wait(60) == 0, uac.tail()

Each scenario needs every -key it names (SIPp 3.6 stops at load time on a missing one);
these helpers always pass them. Times are milliseconds, as SIPp counts them.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from audio_check import read_wav
from dtmf_pcap import parse_rtp
from sipp_harness import A, B, Sipp, X, callee, caller
from sniff import Capture, Datagram

__all__ = ["dtmf_caller", "event_pts", "fetch_wav", "info_caller", "is_sip", "rtp_to",
           "tone_callee"]


def dtmf_caller(workdir: Path, relay_port: int, pcap: Path, *, x: str = X, number: str = A,
                wait_ms: int = 1000, hold_ms: int = 5000, wait_bye: bool = False,
                name: str = "caller", extra: list[str] | None = None) -> Sipp:
    """A caller dialling `x` that plays `pcap` (RFC 4733 digits) `wait_ms` after the
    answer, then hangs up `hold_ms` after the play began or, with `wait_bye`, waits for
    the relay's BYE (uac_axe_dtmf_wait_bye.xml) and answers it."""
    scenario = "uac_axe_dtmf_wait_bye.xml" if wait_bye else "uac_axe_dtmf.xml"
    return caller(workdir, relay_port, scenario, number=number, x=x, name=name,
                  extra=["-m", "1", "-d", str(hold_ms), "-key", "pcap", str(pcap),
                         "-key", "wait_ms", str(wait_ms), *(extra or [])])


def info_caller(workdir: Path, relay_port: int, digits: str, *, info_type: str = "dtmf-relay",
                x: str = X, number: str = A, wait_ms: int = 1000, gap_ms: int = 250,
                hold_ms: int = 5000, name: str = "caller",
                extra: list[str] | None = None) -> Sipp:
    """A caller dialling `x` that sends `digits` as SIP INFO, one per digit `gap_ms`
    apart, `wait_ms` after the answer; `info_type` "dtmf-relay" or "dtmf" (the body's
    Content-Type application/...). Hangs up `hold_ms` after the last INFO's 200."""
    if info_type not in ("dtmf-relay", "dtmf"):
        raise ValueError(f"info_type {info_type!r}: dtmf-relay or dtmf")
    if not digits or any(c not in "0123456789*#ABCD" for c in digits):
        raise ValueError(f"digits {digits!r}: one or more of 0-9 * # A-D")
    return caller(workdir, relay_port, "uac_axe_info.xml", number=number, x=x, name=name,
                  extra=["-m", "1", "-d", str(hold_ms), "-key", "digits", digits,
                         "-key", "info_type", info_type, "-key", "wait_ms", str(wait_ms),
                         "-key", "gap_ms", str(gap_ms), *(extra or [])])


def tone_callee(workdir: Path, port: int, pcap: Path, *, ring_ms: int = 500,
                number: str = B, name: str = "callee",
                extra: list[str] | None = None) -> Sipp:
    """The outbound trunk on `port`: rings `ring_ms`, answers (PCMU, PT 101), plays
    `pcap` (a tone) until the BYE."""
    return callee(workdir, port, "uas_tone.xml", number=number, name=name,
                  extra=["-m", "1", "-d", str(ring_ms), "-key", "pcap", str(pcap),
                         *(extra or [])])


def is_sip(d: Datagram, start: str, method: str | None = None) -> bool:
    """`d` is a SIP message starting with `start` ("INVITE ", "SIP/2.0 200"), and, when
    `method` is given, its CSeq names that method (which request a response answers)."""
    if not d.payload.startswith(start.encode()):
        return False
    return method is None or re.search(rb"CSeq:\s*\d+\s+" + method.encode() + rb"\b",
                                       d.payload) is not None


def rtp_to(wire: Capture, port: int, after: float = 0.0,
           before: float = float("inf")) -> list[Datagram]:
    """The RTP datagrams sent to `port` from `after` until `before` (epoch seconds)."""
    return [d for d in wire.to_port(port)
            if after <= d.at < before and parse_rtp(d.payload) is not None]


def event_pts(sdp_message: str) -> list[int]:
    """The payload types an SDP (or a message carrying one) maps to telephone-event,
    and 101 in any case."""
    return sorted({101, *map(int, re.findall(r"a=rtpmap:(\d+) telephone-event/",
                                             sdp_message))})


def fetch_wav(base: str, call_id: str, leg: str, dest: Path) -> list[int]:
    """One leg's recording ("caller", "callee") from the API, as 8 kHz mono samples."""
    with urllib.request.urlopen(f"{base}/v1/recordings/{call_id}/{leg}.wav", timeout=10) as r:
        dest.write_bytes(r.read())
    xs, channels = read_wav(dest)
    if channels != 1:
        raise AssertionError(f"{leg}.wav has {channels} channels")
    return list(xs)
