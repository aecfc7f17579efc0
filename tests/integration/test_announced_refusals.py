"""End to end, refusals announced in early media (DESIGN.md "SIP behaviour", `[sip]
announce_refusals`, on by default): a caller dialling an unknown X gets a 183 with SDP,
hears the not_in_service prompt, then the 404 (`Reason: Q.850;cause=1`); a frozen X
gets 183, number_frozen, then 410. The record is the plain refusal. A trunk listed in
`[sip] no_early_media` gets the bare refusal at once.

The caller is SIPp (uac_refused.xml.in, which takes an optional 183); what the caller
heard is read off the wire by the loopback sniffer, decoded, and matched against the
shipped prompt: its loudness 20 ms by 20 ms (any backend), and frame by frame as the
in-process relay encodes it (PCMU). test_axe_rtpengine.py announces through rtpengine.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import pytest
from axe_peers import is_sip, rtp_to
from dtmf_pcap import parse_rtp, rms
from sipp_harness import (
    X,
    api,
    bind,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
    write_config,
)
from sniff import Capture, Datagram, sniff

from recordings.g711 import PT_PCMU, encode
from relay.media.prompts import SHIPPED

pytestmark = pytest.mark.integration

UNKNOWN_X = "+8617000000099"
ANNOUNCED = ("not_in_service", "number_frozen")
FRAME = 160  # 20 ms at 8 kHz, one PCMU byte per sample


def prompt_frames(name: str) -> list[bytes]:
    """The shipped English prompt `name`, PCMU-encoded, in 20 ms frames in order (the
    last one padded with silence)."""
    with wave.open(str(SHIPPED / "en" / f"{name}.wav"), "rb") as w:
        raw = w.readframes(w.getnframes())
    samples = [int.from_bytes(raw[i:i + 2], "little", signed=True)
               for i in range(0, len(raw), 2)]
    samples += [0] * (-len(samples) % FRAME)
    pcmu = encode(samples, PT_PCMU)
    return [pcmu[i:i + FRAME] for i in range(0, len(pcmu), FRAME)]


def envelope_match(heard: list[float], prompt: list[float], max_lag: int = 10) -> float:
    """The best Pearson correlation of two frame-energy envelopes (RMS per 20 ms) over
    lags of up to `max_lag` frames either way (the heard one may start a little early
    or late): about 1 for the same words, whatever encoded them."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        pairs = [(heard[i], prompt[i - lag]) for i in range(len(heard))
                 if 0 <= i - lag < len(prompt)]
        if len(pairs) < len(prompt) // 2:
            continue
        mx = sum(x for x, _ in pairs) / len(pairs)
        my = sum(y for _, y in pairs) / len(pairs)
        cov = sum((x - mx) * (y - my) for x, y in pairs)
        vx = sum((x - mx) ** 2 for x, _ in pairs)
        vy = sum((y - my) ** 2 for _, y in pairs)
        if vx > 0 and vy > 0:
            best = max(best, cov / (vx * vy) ** 0.5)
    return best


def prompt_seconds(name: str) -> float:
    """How long the shipped English prompt `name` plays."""
    with wave.open(str(SHIPPED / "en" / f"{name}.wav"), "rb") as w:
        return w.getnframes() / w.getframerate()


def refused(relay: Any, tmp_path: Path, x: str, code: int) -> tuple[Any, Capture]:
    """Dial `x` expecting `code`; returns the SIPp caller and what the wire saw."""
    uac = caller(tmp_path, relay.sip_port, x=x, scenario_path=refused_scenario(tmp_path, code),
                 extra=["-m", "1"], name=f"refused{code}")
    with sniff([uac.port, uac.media_port]) as wire:
        uac.start()
        assert uac.wait(30) == 0, uac.tail()
    assert wire.drops == 0
    return uac, wire


def announced(wire: Capture, uac: Any, code: int, prompt: str, *,
              exact: bool = True) -> None:
    """183 with SDP, then the prompt's audio to the caller's media port, then `code`.
    `exact`: the audio is the prompt's own PCMU frames (the in-process relay encodes
    the WAV as it is; rtpengine's player encodes it its own way, so only the words'
    envelope can match)."""
    early = wire.first(lambda d: d.dst[1] == uac.port and is_sip(d, "SIP/2.0 183", "INVITE"))
    final = wire.first(lambda d: d.dst[1] == uac.port
                       and is_sip(d, f"SIP/2.0 {code}", "INVITE"))
    assert early is not None, uac.received()
    assert final is not None and early.at < final.at
    assert b"Content-Type: application/sdp" in early.payload and b"m=audio " in early.payload
    frames = _payloads(rtp_to(wire, uac.media_port, early.at, final.at))
    assert any(rms(f) >= 100.0 for f in frames), "the caller heard nothing before the refusal"
    # It was this prompt, not another one (nor ringback), and most of it.
    expected = prompt_frames(prompt)
    other = prompt_frames(next(p for p in ANNOUNCED if p != prompt))
    match = envelope_match([rms(f) for f in frames], [rms(f) for f in expected])
    assert match > 0.95, match
    assert match > envelope_match([rms(f) for f in frames], [rms(f) for f in other]) + 0.1
    if exact:
        audible = [f for f in frames if rms(f) >= 100.0]  # is_audible's threshold
        assert all(f in expected for f in audible), "audio that is not the prompt"
        assert len(set(audible)) >= 0.8 * sum(rms(f) >= 100.0 for f in expected)
    # The refusal waited for the prompt (less a frame or two), and not much longer.
    took = final.at - early.at
    assert prompt_seconds(prompt) - 0.2 <= took <= prompt_seconds(prompt) + 1.5, took
    assert not rtp_to(wire, uac.media_port, final.at + 0.1), "audio after the refusal"


def _payloads(datagrams: list[Datagram]) -> list[bytes]:
    out = []
    for d in datagrams:
        rtp = parse_rtp(d.payload)
        assert rtp is not None and rtp.pt == PT_PCMU
        out.append(rtp.payload)
    return out


def reason(uac: Any, code: int) -> str:
    final = next(m for m in uac.received() if m.startswith(f"SIP/2.0 {code}"))
    return next(line for line in final.splitlines() if line.lower().startswith("reason:"))


def plain_refusal(rec: dict[str, Any], code: int, cause: str) -> None:
    assert rec["sip_code"] == code and rec["unconnected_cause"] == cause, rec
    assert rec["released_by"] == "relay"
    assert not rec.get("recording"), rec
    assert rec.get("ivr_start_at") is None and set(rec["legs"]) == {"caller"}, rec


def test_unknown_x_hears_not_in_service_then_404(relay_factory: Any, tmp_path: Path) -> None:
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(udp_port(), tmp_path))
    uac, wire = refused(relay, tmp_path, UNKNOWN_X, 404)
    announced(wire, uac, 404, "not_in_service")
    assert "Q.850;cause=1" in reason(uac, 404).replace(" ", "")
    rec = calls(relay.base)[0]
    assert rec["x"] == UNKNOWN_X
    plain_refusal(rec, 404, "no_binding")


def test_frozen_x_hears_number_frozen_then_410(relay_factory: Any, tmp_path: Path) -> None:
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(udp_port(), tmp_path))
    binding = bind(relay.base)
    assert api(relay.base, "POST", f"/v1/bindings/{binding['id']}/freeze")["state"] == "frozen"
    uac, wire = refused(relay, tmp_path, X, 410)
    announced(wire, uac, 410, "number_frozen")
    assert "Q.850;cause=22" in reason(uac, 410).replace(" ", "")
    rec = calls(relay.base, f"?binding={binding['id']}")[0]
    plain_refusal(rec, 410, "frozen")


def test_a_trunk_without_early_media_gets_the_bare_404(relay_factory: Any,
                                                       tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", {"no_early_media": ["127.0.0.0/8"]})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(udp_port(), tmp_path, "--config", str(cfg)))
    uac, wire = refused(relay, tmp_path, UNKNOWN_X, 404)
    assert not any(m.startswith("SIP/2.0 183") for m in uac.received())
    invite = wire.first(lambda d: d.src[1] == uac.port and is_sip(d, "INVITE "))
    final = wire.first(lambda d: d.dst[1] == uac.port and is_sip(d, "SIP/2.0 404", "INVITE"))
    assert invite is not None and final is not None
    assert final.at - invite.at < 0.5, "the bare refusal waited"
    assert not [d for d in wire.to_port(uac.media_port) if parse_rtp(d.payload)]
    assert "Q.850;cause=1" in reason(uac, 404).replace(" ", "")
    plain_refusal(calls(relay.base)[0], 404, "no_binding")
