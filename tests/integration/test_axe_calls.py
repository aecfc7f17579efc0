"""End to end, AXE (issue 9): X is shared, an extension selects B (DESIGN.md "SIP
behaviour"). A caller who dials X without an extension is answered by the relay, hears a
prompt, keys the extension (RFC 4733 or SIP INFO) ended by # or a pause, hears ringback
while B is called, and is bridged when B answers. Three wrong extensions and the relay
hangs up (`unconnected_cause: no_extension`). `X;ext=E` or `X,E` in the Request-URI goes
straight to B.

The peers
are SIPp (tests/flows/sipp/uac_axe_*.xml, uas_tone.xml through axe_peers), the digits and
tones pcaps from dtmf_pcap, and the checks on the wire come from the loopback sniffer.
Timing knobs (the prompt's length, ringing, talk) are the constants below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from audio_check import goertzel
from axe_peers import (
    dtmf_caller,
    event_pts,
    fetch_wav,
    info_caller,
    is_sip,
    rtp_to,
    tone_callee,
)
from dtmf_pcap import (
    dominant_frequency,
    is_audible,
    iter_events_by_digit,
    parse_rtp,
    pcap_seconds,
    pcm_of,
    telephone_events,
    write_dtmf_pcap,
    write_tone_pcap,
)
from sipp_harness import (
    A,
    B,
    Sipp,
    X,
    assert_private,
    bind,
    callee,
    caller,
    calls,
    ms,
    relay_args,
    udp_port,
)
from sniff import Capture, sniff

pytestmark = pytest.mark.integration

EXT = "1234"
OTHER_EXT, OTHER_B = "5678", "+8613900007777"
PROMPT_WAIT_MS = 2000  # the caller starts keying this long after the relay's 200
WRONG_PROMPT_MS = 4000  # between tries: "wrong extension", then the prompt again
END_PAUSE_MS = 6000  # longer than the relay's inter-digit timeout (input ended by a pause)
RING_MS = 1500  # the callee rings this long before it answers
TALK_MS = 3000  # the bridged part of the call
A_HZ, B_HZ = 440.0, 1000.0  # the caller's voice around its digits, the callee's
TONES = (A_HZ, 697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, B_HZ, 2000.0)


def _relay(relay_factory: Any, tmp_path: Path, out: int) -> Any:
    return relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path))


def _axe_bindings(base: str) -> dict[str, Any]:
    """Two AXE bindings on X: EXT -> B (returned) and OTHER_EXT -> OTHER_B, so the
    digits really choose."""
    no_a: Any = None  # AXE has no A: anyone may call X
    mine = bind(base, x=X, a=no_a, b=B, mode="AXE", ext=EXT, out_id="order-axe")
    bind(base, x=X, a=no_a, b=OTHER_B, mode="AXE", ext=OTHER_EXT)
    assert mine["mode"] == "AXE" and mine["x"] == X and mine["ext"] == EXT
    return mine


def _bridged_checks(relay: Any, wire: Capture, uac: Sipp, uas: Sipp, out: int,
                    binding: dict[str, Any], tmp_path: Path, *, voiced: bool
                    ) -> dict[str, Any]:
    """What every call that keys EXT and reaches B must show; returns its record.
    `voiced`: the caller kept talking (A_HZ) after its digits, until the call ended."""
    assert wire.drops == 0  # else "never reached" below would prove nothing
    to_callee = uas.received()
    invite = next(m for m in to_callee if m.startswith("INVITE"))
    assert invite.startswith(f"INVITE sip:{B}@")  # B, no extension
    assert f"From: <sip:{X}@" in invite
    assert_private(uac.received(), to_callee, uac, uas, A, B)

    # The relay answered the caller and spoke (the prompt) before it called B.
    answered = wire.first(lambda d: d.dst[1] == uac.port
                          and is_sip(d, "SIP/2.0 200", "INVITE"))
    invite_b = wire.first(lambda d: d.dst[1] == out and is_sip(d, "INVITE "))
    b_answer = wire.first(lambda d: d.src[1] == out and is_sip(d, "SIP/2.0 200", "INVITE"))
    assert answered and invite_b and b_answer
    assert answered.at < invite_b.at < b_answer.at
    prompt = [d for d in rtp_to(wire, uac.media_port, before=invite_b.at)
              if is_audible(d.payload)]
    assert prompt, "the caller heard nothing before the relay called B"
    # Ringback while B rings (RING_MS), then B's tone once bridged.
    ringback = [d for d in rtp_to(wire, uac.media_port, invite_b.at, b_answer.at)
                if is_audible(d.payload)]
    assert len(ringback) >= 10, "no ringback while B was called"  # 200 ms of any cadence
    talk = pcm_of(d.payload for d in rtp_to(wire, uac.media_port, b_answer.at + 0.3))
    assert len(talk) > 8000, "the caller heard nothing of B once bridged"
    assert dominant_frequency(talk, TONES) == B_HZ

    # The caller's digits stayed with the relay: no event reached B's media port, though
    # the caller's voice did once bridged.
    to_b = [d.payload for d in wire.to_port(uas.media_port)]
    assert telephone_events(to_b, pt=event_pts(invite)) == []
    if voiced:
        heard = pcm_of(d.payload for d in rtp_to(wire, uas.media_port, b_answer.at + 0.3))
        assert len(heard) > 8000, "B heard nothing of the caller"
        assert dominant_frequency(heard, TONES) == A_HZ

    rec = calls(relay.base, f"?binding={binding['id']}")[0]
    assert rec["x"] == X and rec["callee"] == B and rec["ext"] == EXT
    assert rec["out_id"] == "order-axe"
    assert rec["sip_code"] == 200 and rec["unconnected_cause"] == "none"
    legs = rec["legs"]
    ivr_start, ivr_end = ms(rec["ivr_start_at"]), ms(rec["ivr_end_at"])  # ISO 8601 ms
    assert ms(legs["caller"]["answer_at"]) <= ivr_start < ivr_end
    assert ivr_end <= ms(legs["callee"]["invite_at"]) <= ms(legs["callee"]["answer_at"])
    assert ivr_end - ivr_start >= PROMPT_WAIT_MS - 200
    assert abs(ms(legs["callee"]["invite_at"]) - invite_b.at * 1000) < 500  # record = wire

    # B's voice is in B's recording, and it is B's tone (not the prompt or ringback).
    xs = fetch_wav(relay.base, rec["id"], "callee", tmp_path / "callee.wav")
    assert dominant_frequency(xs, TONES) == B_HZ
    assert goertzel(xs, B_HZ) > 100 * max(goertzel(xs, f) for f in TONES if f != B_HZ)
    if voiced:
        xs = fetch_wav(relay.base, rec["id"], "caller", tmp_path / "caller.wav")
        assert dominant_frequency(xs, TONES) == A_HZ
    return rec


@pytest.mark.parametrize("end", ["#", ""], ids=["hash", "pause"])
def test_caller_keys_the_extension_in_band(relay_factory: Any, tmp_path: Path,
                                           end: str) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    binding = _axe_bindings(relay.base)
    # The caller talks (A_HZ) before its digits and on to the end of the call.
    after_ms = (0 if end else END_PAUSE_MS) + RING_MS + TALK_MS
    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", f"{EXT}{end}", audio_hz=A_HZ,
                           tail_ms=after_ms + 2000)
    play_ms = int(pcap_seconds(pcap) * 1000) - 2000
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", B_HZ, 60.0),
                      ring_ms=RING_MS).start()
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=PROMPT_WAIT_MS,
                      hold_ms=play_ms)
    with sniff([uac.port, uac.media_port, out, uas.media_port]) as wire:
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
    # The digits did leave the caller (so a failure below is the relay's).
    keyed = telephone_events(d.payload for d in wire.from_port(uac.media_port))
    assert "".join(g[0].digit for g in iter_events_by_digit(keyed)) == f"{EXT}{end}"
    _bridged_checks(relay, wire, uac, uas, out, binding, tmp_path, voiced=True)


def test_three_wrong_extensions_and_the_relay_hangs_up(relay_factory: Any,
                                                       tmp_path: Path) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    binding = _axe_bindings(relay.base)
    wrong = "9999#"
    pcap = write_dtmf_pcap(tmp_path / "wrong.pcap", ",".join([wrong] * 3),
                           pause_ms=WRONG_PROMPT_MS)
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=PROMPT_WAIT_MS, wait_bye=True)
    with sniff([uac.port, uac.media_port, out]) as wire:
        uac.start()
        assert uac.wait(90) == 0, uac.tail()  # it got the relay's BYE and answered it
    assert wire.drops == 0 and not wire.to_port(out), "the relay called someone"
    assert any(m.startswith("BYE") for m in uac.received())
    # Each try ended with its # on the wire; the relay hung up only after the third, and
    # spoke ("wrong extension", the prompt again) after each of the first two.
    keyed = telephone_events(d.payload for d in wire.from_port(uac.media_port))
    hashes = [g[0] for g in iter_events_by_digit(keyed) if g[0].digit == "#"]
    assert len(hashes) == 3
    hash_at = [next(d.at for d in wire.from_port(uac.media_port)
                    if (r := parse_rtp(d.payload)) and r.ts == h.ts) for h in hashes]
    bye = wire.first(lambda d: d.dst[1] == uac.port and is_sip(d, "BYE "))
    assert bye is not None and bye.at > hash_at[2]
    for start, end in ((hash_at[0], hash_at[1]), (hash_at[1], hash_at[2])):
        assert any(is_audible(d.payload) for d in rtp_to(wire, uac.media_port, start, end))

    rec = calls(relay.base)[0]  # no extension, so perhaps no binding on the record
    assert rec.get("binding") in (None, binding["id"])
    assert rec["x"] == X and rec["unconnected_cause"] == "no_extension"
    assert rec["released_by"] == "relay" and rec.get("ext") in (None, "")
    assert rec["legs"]["caller"]["answer_at"] is not None
    assert "callee" not in rec["legs"] or rec["legs"]["callee"]["invite_at"] is None
    assert rec["ivr_start_at"] < rec["ivr_end_at"]


@pytest.mark.parametrize("info_type", ["dtmf-relay", "dtmf"])
def test_caller_keys_the_extension_by_sip_info(relay_factory: Any, tmp_path: Path,
                                               info_type: str) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    binding = _axe_bindings(relay.base)
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", B_HZ, 60.0),
                      ring_ms=RING_MS).start()
    uac = info_caller(tmp_path, relay.sip_port, f"{EXT}#", info_type=info_type,
                      wait_ms=PROMPT_WAIT_MS, gap_ms=250, hold_ms=RING_MS + TALK_MS + 1000)
    with sniff([uac.port, uac.media_port, out, uas.media_port]) as wire:
        uac.start()
        assert uac.wait(60) == 0, uac.tail()  # every INFO got its 200
        assert uas.wait(60) == 0, uas.tail()
    assert sum(m.startswith("INFO") for m in uac.sent()) == len(EXT) + 1
    assert not any(m.startswith("INFO") for m in uas.received()), "a digit reached B"
    _bridged_checks(relay, wire, uac, uas, out, binding, tmp_path, voiced=False)


@pytest.mark.parametrize("dialled", [f"{X};ext={EXT}", f"{X},{EXT}"])
def test_extension_in_the_request_uri_goes_straight_to_b(relay_factory: Any, tmp_path: Path,
                                                         dialled: str) -> None:
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    binding = _axe_bindings(relay.base)
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", B_HZ, 30.0),
                      ring_ms=500).start()
    uac = caller(tmp_path, relay.sip_port, "uac.xml", x=dialled, extra=["-m", "1", "-d", "1500"])
    with sniff([uac.port, uac.media_port, out]) as wire:
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert invite.startswith(f"INVITE sip:{B}@") and EXT not in invite.split("\n", 1)[0]
    assert_private(uac.received(), uas.received(), uac, uas, A, B)
    # No prompt: the relay called B at once and answered the caller only with B's answer.
    invite_b = wire.first(lambda d: d.dst[1] == out and is_sip(d, "INVITE "))
    b_answer = wire.first(lambda d: d.src[1] == out and is_sip(d, "SIP/2.0 200", "INVITE"))
    answered = wire.first(lambda d: d.dst[1] == uac.port
                          and is_sip(d, "SIP/2.0 200", "INVITE"))
    assert invite_b and b_answer and answered
    assert invite_b.at < b_answer.at < answered.at
    assert not [d for d in rtp_to(wire, uac.media_port, before=invite_b.at)
                if is_audible(d.payload)]
    rec = calls(relay.base, f"?binding={binding['id']}")[0]
    assert rec["ext"] == EXT and rec["callee"] == B and rec["sip_code"] == 200
    assert rec.get("ivr_start_at") is None and rec.get("ivr_end_at") is None


def test_the_other_extension_reaches_the_other_b(relay_factory: Any, tmp_path: Path) -> None:
    """The same X with OTHER_EXT keyed in band reaches OTHER_B, not B."""
    out = udp_port()
    relay = _relay(relay_factory, tmp_path, out)
    _axe_bindings(relay.base)
    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", f"{OTHER_EXT}#")
    uas = callee(tmp_path, out, "uas.xml", number=OTHER_B, extra=["-m", "1"]).start()
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=PROMPT_WAIT_MS,
                      hold_ms=int(pcap_seconds(pcap) * 1000) + 2000).start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    assert invite.startswith(f"INVITE sip:{OTHER_B}@")
    rec = calls(relay.base)[0]
    assert rec["ext"] == OTHER_EXT and rec["callee"] == OTHER_B
