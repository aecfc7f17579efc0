"""End to end, AXE through `relay serve` with `[media] backend = "rtpengine"` (issue 9):
the same calls as test_axe_calls.py's in-band case (input ended by # or by a pause), but
every packet goes through a real userspace rtpengine, and the digits reach the relay as
rtpengine's `--dtmf-log-dest` JSON (`[media] rtpengine_dtmf`), not from the relay's own
RTP relay.

The caller (SIPp) keys EXT as RFC 4733 events from a pcap after the relay's 200, hears
the prompt before the relay calls B, B (SIPp) answers with a tone, and rtpengine's pcap
recording, converted by the relay, holds B's tone in callee.wav. Skipped without
rtpengine (Debian: rtpengine-daemon) or without a raw socket for the sniffer.

Also through rtpengine: an unknown X announced in 183 early media (rtpengine's `play
media`), as test_announced_refusals.py checks it for the in-process relay.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_peers import dtmf_caller, tone_callee
from conftest import free_port
from dtmf_pcap import (
    iter_events_by_digit,
    pcap_seconds,
    telephone_events,
    write_dtmf_pcap,
    write_tone_pcap,
)
from sipp_harness import calls, relay_args, udp_port, write_config
from sniff import sniff
from test_announced_refusals import UNKNOWN_X, announced, plain_refusal, reason, refused
from test_axe_calls import (
    A_HZ,
    B_HZ,
    END_PAUSE_MS,
    EXT,
    PROMPT_WAIT_MS,
    RING_MS,
    TALK_MS,
    _axe_bindings,
    _bridged_checks,
)

from relay.media.rtpengine_daemon import RtpengineDaemon

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not RtpengineDaemon.available(),
                       reason="rtpengine not installed (apt-get install rtpengine-daemon)"),
]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[RtpengineDaemon, tuple[str, int]]]:
    """A userspace rtpengine recording pcaps and logging digits to a free UDP port;
    yields it and that port's address (the relay's `[media] rtpengine_dtmf`)."""
    rec = tmp_path / "rtpengine"
    rec.mkdir()
    base = min(free_port(socket.SOCK_DGRAM), 64000) & ~1
    dtmf = ("127.0.0.1", free_port(socket.SOCK_DGRAM))
    daemon = RtpengineDaemon(free_port(socket.SOCK_DGRAM), (base, base + 100),
                             recording_dir=rec, log_path=tmp_path / "rtpengine.log",
                             dtmf_log_dest=dtmf)
    asyncio.run(daemon.start())
    try:
        yield daemon, dtmf
    finally:
        daemon.stop()


def _rtpengine_relay(engine: tuple[RtpengineDaemon, tuple[str, int]], relay_factory: Any,
                     tmp_path: Path, out: int) -> Any:
    """`relay serve` with `[media] backend = "rtpengine"` on `engine`, hearing its DTMF
    log, with the outbound trunk on `out`."""
    daemon, dtmf = engine
    host, port = daemon.ng_addr
    cfg = write_config(tmp_path / "cfg", {},
                       media={"backend": "rtpengine", "rtpengine": f"{host}:{port}",
                              "rtpengine_dtmf": f"{dtmf[0]}:{dtmf[1]}"})
    return relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         relay_args(out, tmp_path, "--config", str(cfg)))


@pytest.mark.parametrize("end", ["#", ""], ids=["hash", "pause"])
def test_caller_keys_the_extension_through_rtpengine(
        engine: tuple[RtpengineDaemon, tuple[str, int]], relay_factory: Any,
        tmp_path: Path, end: str) -> None:
    daemon = engine[0]
    out = udp_port()
    relay = _rtpengine_relay(engine, relay_factory, tmp_path, out)
    binding = _axe_bindings(relay.base)
    after_ms = (0 if end else END_PAUSE_MS) + RING_MS + TALK_MS
    pcap = write_dtmf_pcap(tmp_path / "ext.pcap", f"{EXT}{end}", audio_hz=A_HZ,
                           tail_ms=after_ms + 2000)
    play_ms = int(pcap_seconds(pcap) * 1000) - 2000
    uas = tone_callee(tmp_path, out, write_tone_pcap(tmp_path / "b.pcap", B_HZ, 60.0),
                      ring_ms=RING_MS).start()
    uac = dtmf_caller(tmp_path, relay.sip_port, pcap, wait_ms=PROMPT_WAIT_MS,
                      hold_ms=play_ms)
    low, high = daemon.port_range
    with sniff([uac.port, uac.media_port, out, uas.media_port]) as wire:
        uac.start()
        assert uac.wait(60) == 0, uac.tail()
        assert uas.wait(60) == 0, uas.tail()
    keyed = telephone_events(d.payload for d in wire.from_port(uac.media_port))
    assert "".join(g[0].digit for g in iter_events_by_digit(keyed)) == f"{EXT}{end}"
    # Both SDPs the relay sent name rtpengine's ports: the media went through it.
    invite = next(m for m in uas.received() if m.startswith("INVITE"))
    ok = next(m for m in uac.received() if m.startswith("SIP/2.0 200") and "INVITE" in m)
    for text in (invite, ok):
        media_port = int(text.split("m=audio ", 1)[1].split()[0])
        assert low <= media_port <= high, text
    _bridged_checks(relay, wire, uac, uas, out, binding, tmp_path, voiced=True)
    assert "rtpengine_dtmf is not set" not in relay.log.read_text()


def test_unknown_x_is_announced_through_rtpengine(
        engine: tuple[RtpengineDaemon, tuple[str, int]], relay_factory: Any,
        tmp_path: Path) -> None:
    relay = _rtpengine_relay(engine, relay_factory, tmp_path, udp_port())
    uac, wire = refused(relay, tmp_path, UNKNOWN_X, 404)
    announced(wire, uac, 404, "not_in_service", exact=False)
    assert "Q.850;cause=1" in reason(uac, 404).replace(" ", "")
    plain_refusal(calls(relay.base)[0], 404, "no_binding")
