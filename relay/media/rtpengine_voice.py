"""Sans-IO pieces of the rtpengine backend's own voice: placeholder SDP, DTMF log, WAVs.

rtpengine anchors media only between two tagged parties that both gave SDP, so
before a callee exists the relay answers for it with a *placeholder* SDP
(`placeholder_answer`): the codec the relay settles on with the caller, at
rtpengine's own address and the discard port 9 (RFC 863), where nothing listens;
the backend also blocks the caller's media so nothing is sent there.

rtpengine reports DTMF (`--dtmf-log-dest=IP:PORT`, daemon/dtmf.c `dtmf_json_print`)
as one UDP datagram of JSON per event, sent at the event's end, e.g. (10.5):

    {"callid":"c1","source_tag":"caller","tags":["callee","caller"],"type":"DTMF",
     "timestamp":1796661956,"source_ip":"127.0.0.1","event":5,"duration":100,
     "volume":10}

`event` is the RFC 4733 §3.2 event code, `duration` milliseconds, `timestamp` whole
seconds. rtpengine does not escape the strings it puts in it.
"""

from __future__ import annotations

import ipaddress
import json
import wave
from dataclasses import dataclass
from pathlib import Path

from relay.sdp import RELAYED_PROTOS, NoCommonCodec, SessionDescription

__all__ = ["DtmfLogEntry", "DtmfLogError", "dtmf_digit", "parse_dtmf_log",
           "placeholder_answer", "wav_seconds"]

#: RFC 4733 §3.2, table 3: events 0-15 are the DTMF digits in this order.
_DIGITS = "0123456789*#ABCD"
#: RFC 863 discard: the placeholder callee's port (nothing is sent there anyway).
DISCARD_PORT = 9


class DtmfLogError(ValueError):
    """A datagram on the DTMF log socket that is not one of rtpengine's DTMF events."""


@dataclass(frozen=True, slots=True)
class DtmfLogEntry:
    """One DTMF event as rtpengine logged it."""

    call_id: str
    source_tag: str  # the ng tag of the party that sent the digit
    event: int  # RFC 4733 event code
    duration_ms: int


def dtmf_digit(event: int) -> str | None:
    """The digit of an RFC 4733 event code ("0"-"9", "*", "#", "A"-"D"), None past 15."""
    return _DIGITS[event] if 0 <= event < len(_DIGITS) else None


def parse_dtmf_log(data: bytes) -> DtmfLogEntry:
    """Decode one DTMF log datagram; `DtmfLogError` when it is anything else."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DtmfLogError(f"not JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("type") != "DTMF":
        raise DtmfLogError("not a DTMF event")
    call_id, tag = obj.get("callid"), obj.get("source_tag")
    event, duration = obj.get("event"), obj.get("duration", 0)
    if not isinstance(call_id, str) or not isinstance(tag, str):
        raise DtmfLogError("callid or source_tag missing")
    # bool is an int in Python: reject it explicitly, it is not an event code.
    if not isinstance(event, int) or isinstance(event, bool) or not 0 <= event <= 255:
        raise DtmfLogError(f"bad event {event!r}")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        raise DtmfLogError(f"bad duration {duration!r}")
    return DtmfLogEntry(call_id, tag, event, duration)


def _addrtype(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"


def placeholder_answer(offer: SessionDescription, address: str, sess_id: int) -> tuple[bytes, str]:
    """An SDP answer to `offer` standing in for a party that does not exist yet.

    One audio codec from the relayed stream (PCMU if offered, else PCMA) and the
    offer's 8 kHz telephone-event if any; `address` with port 9 (discard). Other m=
    lines are rejected with port 0 (RFC 3264 §6: as many m= lines as the offer).
    Returns the body and the codec name; `NoCommonCodec` if no stream has G.711.
    """
    kind = _addrtype(address)
    lines = ["v=0", f"o=- {sess_id} 1 IN {kind} {address}", "s=-", f"c=IN {kind} {address}",
             "t=0 0"]
    codec: str | None = None
    for md in offer.media:
        usable = (codec is None and md.media == "audio" and md.port != 0
                  and md.proto in RELAYED_PROTOS)
        pt = next((p for p in ("0", "8") if usable and p in md.formats
                   and md.encoding(p) in ("pcmu", "pcma")), None)
        if pt is None:
            lines.append(f"m={md.media} 0 {md.proto} {md.formats[0]}")
            continue
        codec = "PCMU" if pt == "0" else "PCMA"
        rtpmap, fmtp = md.rtpmap, md.fmtp
        # RFC 4733 §2.1: events share the audio clock, so only the 8 kHz one fits G.711.
        event = next((p for p in md.formats if rtpmap.get(p, "").lower()
                      in ("telephone-event/8000", "telephone-event/8000/1")), None)
        lines.append(f"m=audio {DISCARD_PORT} {md.proto} {pt}" + (f" {event}" if event else ""))
        lines.append(f"a=rtpmap:{pt} {codec}/8000")
        if event is not None:
            lines.append(f"a=rtpmap:{event} telephone-event/8000")
            lines.append(f"a=fmtp:{event} {fmtp.get(event, '0-15')}")
        lines.append("a=sendrecv")
    if codec is None:
        raise NoCommonCodec("no audio stream with PCMU or PCMA")
    return ("\r\n".join(lines) + "\r\n").encode(), codec


def wav_seconds(path: Path) -> float:
    """The playing time of a WAV file from its header (blocking: run it off the loop).

    Raises `OSError` if it cannot be read, `ValueError` if it is not a PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as w:
            rate, frames = w.getframerate(), w.getnframes()
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a PCM WAV file: {e}") from None
    if rate <= 0:
        raise ValueError(f"{path}: sample rate {rate}")
    return frames / rate
