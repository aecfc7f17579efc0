"""A recorded call through `relay serve` between two SIPp peers that speak known tones:
each leg's WAV holds that side's voice, the mix has them on the right channels, and the
recording is as long as the call."""

from __future__ import annotations

import urllib.request
import wave
from pathlib import Path
from typing import Any

from audio_check import goertzel, samples
from sipp_harness import A, B, X, api, bind, callee, caller, calls, ms, relay_args, udp_port

from loadtest.tones import write_tone_pcap

CALLER_HZ, CALLEE_HZ = 440.0, 1000.0


def test_each_leg_records_its_own_voice(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          relay_args(out, tmp_path, "--log-level", "DEBUG"))
    bind(relay.base)
    talk_a = write_tone_pcap(tmp_path / "a.pcap", CALLER_HZ, 6.0)
    talk_b = write_tone_pcap(tmp_path / "b.pcap", CALLEE_HZ, 6.0)
    uas = callee(tmp_path, out, "uas_audio.xml", number=B,
                 extra=["-m", "1", "-key", "pcap", str(talk_b)])
    uac = caller(tmp_path, relay.sip_port, "uac_audio.xml", number=A, x=X,
                 extra=["-m", "1", "-d", "2500", "-key", "pcap", str(talk_a)])
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()

    call = calls(relay.base, want=1)[0]
    assert call["sip_code"] == 200 and set(call["recording"]) == {"caller", "callee", "mix"}
    legs = call["legs"]["caller"]
    talk_ms = ms(legs["end_at"]) - ms(legs["answer_at"])

    def fetch(leg: str) -> wave.Wave_read:
        path = tmp_path / f"{leg}.wav"
        with urllib.request.urlopen(f"{relay.base}/v1/recordings/{call['id']}/{leg}.wav",
                                    timeout=10) as r:
            path.write_bytes(r.read())
        return wave.open(str(path), "rb")

    for leg, mine, theirs in (("caller", CALLER_HZ, CALLEE_HZ),
                              ("callee", CALLEE_HZ, CALLER_HZ)):
        w = fetch(leg)
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        xs = samples(w.readframes(w.getnframes()))
        assert goertzel(xs, mine) > 1000 * goertzel(xs, theirs), leg
        duration_ms = 1000 * w.getnframes() / 8000
        assert abs(duration_ms - talk_ms) < 100, (leg, duration_ms, talk_ms)
        assert call["recording"][leg]["duration_ms"] == round(duration_ms) or abs(
            call["recording"][leg]["duration_ms"] - duration_ms) <= 1

    mix = fetch("mix")
    assert mix.getnchannels() == 2
    both = samples(mix.readframes(mix.getnframes()))
    left, right = both[0::2], both[1::2]
    assert goertzel(left, CALLER_HZ) > 1000 * goertzel(left, CALLEE_HZ)
    assert goertzel(right, CALLEE_HZ) > 1000 * goertzel(right, CALLER_HZ)
    assert api(relay.base, "GET", f"/v1/calls/{call['id']}")["recording"]["mix"]["sha256"]

    # RTP loss per leg, from the sequence numbers the relay saw: about 2.5 s of 20 ms
    # packets each way, on loopback (a few may be lost on a loaded machine), and the
    # same counted in /metrics.
    for leg in ("caller", "callee"):
        rec = call["recording"][leg]
        assert 100 <= rec["packets"] <= 350 and 0 <= rec["lost"] <= rec["packets"] // 10, rec
    assert "packets" not in call["recording"]["mix"]
    with urllib.request.urlopen(f"{relay.base}/metrics", timeout=10) as r:
        text = r.read().decode()
    for leg in ("caller", "callee"):
        line = next(ln for ln in text.splitlines()
                    if ln.startswith(f'relay_rtp_packets_expected_total{{leg="{leg}"}}'))
        assert float(line.split()[-1]) == call["recording"][leg]["packets"]
    assert 'relay_rtp_packets_lost_total{leg="caller"}' in text

    # Even at DEBUG, the relay's log shows real numbers only masked.
    log = relay.log.read_text()
    assert "INFO" in log or "DEBUG" in log
    for real in (A, B):
        assert real[1:] not in log, f"{real} in the log"
