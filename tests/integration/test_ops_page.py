"""The ops page in a real browser (headless Chromium over the DevTools protocol) against
`relay serve` with real calls (SIPp, one recorded with tones, one live), a refusal and
texts: every view renders, search finds the call, the player's sources are WAVs that
play, an admin's hang-up ends a live call (SIPp sees BYE), and the `ops` role never
sees a real number anywhere: not in the DOM, the responses, the URLs or the storage.

Screenshots of each view go to the test's temp folder (and to `docs/ops/` when
RELAY_DOCS_SHOTS=1, for the README).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cdp import CHROMIUM, Browser
from sipp_harness import (
    A,
    B,
    X,
    bind,
    callee,
    caller,
    calls,
    refused_scenario,
    relay_args,
    udp_port,
)

from loadtest.tones import write_tone_pcap

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

TOKENS = {"RELAY_API_TOKENS": "adm:admin,opstok:ops"}
STRANGER = "+8613000000009"
REAL = [n[1:] for n in (A, B, STRANGER)] + [n[3:] for n in (A, B, STRANGER)]
VIEWS = ("calls", "call", "live", "messages", "bindings", "pool", "health")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "ops"


def api(base: str, method: str, path: str, body: Any = None, token: str = "adm") -> Any:
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"null")


def live_ids(base: str) -> list[str]:
    return [c["id"] for c in api(base, "GET", "/v1/calls/live")["calls"]]


def wait_until(fn: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


async def shot(b: Browser, shots: Path, name: str) -> None:
    shots.mkdir(exist_ok=True)
    await b.screenshot(shots / f"{name}.png")


async def view(b: Browser, name: str, ready: str) -> str:
    """Open a view by its fragment and wait until `ready` holds; the page's HTML."""
    await b.eval(f"location.hash = {json.dumps(name)}")
    await b.wait(ready)
    return str(await b.eval("document.documentElement.outerHTML"))


async def test_ops_page_end_to_end(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", relay_args(out, tmp_path),
                          env=TOKENS)
    base = relay.base
    bind(base, token="adm", out_id="order-42")
    api(base, "POST", "/v1/numbers", {"numbers": ["+8617000000001", "+8617000000002"]})

    # 1. A recorded call in which each side speaks a tone.
    talk_a = write_tone_pcap(tmp_path / "a.pcap", 440.0, 3.0)
    talk_b = write_tone_pcap(tmp_path / "b.pcap", 1000.0, 3.0)
    uas = callee(tmp_path, out, "uas_audio.xml", number=B,
                 extra=["-m", "1", "-key", "pcap", str(talk_b)], name="rec-callee")
    uac = caller(tmp_path, relay.sip_port, "uac_audio.xml", number=A, x=X,
                 extra=["-m", "1", "-d", "2000", "-key", "pcap", str(talk_a)], name="rec-caller")
    uas.start()
    uac.start()
    assert uac.wait(60) == 0, uac.tail()
    assert uas.wait(60) == 0, uas.tail()
    recorded = calls(base, token="adm")[0]
    assert recorded["recording"], recorded
    # 2. A refused attempt (a stranger dials an X nobody holds), and texts.
    ref = caller(tmp_path, relay.sip_port, number=STRANGER, x="+8617000000002",
                 scenario_path=refused_scenario(tmp_path, 404), extra=["-m", "1"], name="ref")
    ref.start()
    assert ref.wait(30) == 0, ref.tail()
    api(base, "POST", "/v1/sms", {"from": A, "to": X, "text": "on my way"})
    api(base, "POST", "/v1/sms", {"from": STRANGER, "to": X, "text": "who is this"})
    wait_until(lambda: len(api(base, "GET", "/v1/messages")["messages"]) >= 1)
    calls(base, token="adm", want=2)
    # 3. A call that stays up until somebody hangs it up.
    held_uas = callee(tmp_path, out, "uas.xml", number=B, extra=["-m", "1"], name="held-callee")
    held_uac = caller(tmp_path, relay.sip_port, "uac_wait_bye.xml", number=A, x=X,
                      extra=["-m", "1"], name="held-caller")
    held_uas.start()
    held_uac.start()
    try:
        (live_id,) = wait_until(lambda: live_ids(base))
        await _as_ops(base, recorded["id"], live_id, tmp_path / "shots-ops")
        await _as_admin(base, recorded, live_id, tmp_path / "shots-admin")
        assert held_uac.wait(30) == 0, held_uac.tail()
        assert held_uas.wait(30) == 0, held_uas.tail()
    finally:
        held_uac.stop()
        held_uas.stop()
    assert any(m.startswith("BYE") for m in held_uac.received())
    assert any(m.startswith("BYE") for m in held_uas.received())
    ended = api(base, "GET", f"/v1/calls/{live_id}")
    assert ended["end_reason"] == "operator"
    for name in VIEWS:
        assert (tmp_path / "shots-admin" / f"{name}.png").stat().st_size > 5000
        assert (tmp_path / "shots-ops" / f"{name}.png").stat().st_size > 5000
    if os.environ.get("RELAY_DOCS_SHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        for name in VIEWS:
            shutil.copy(tmp_path / "shots-admin" / f"{name}.png", DOCS / f"{name}.png")


async def _as_admin(base: str, recorded: dict[str, Any], live_id: str, shots: Path) -> None:
    async with Browser(shots.parent / "admin") as b:
        await b.goto(base + "/#token=adm&view=calls")
        assert "token=" not in str(await b.eval("location.href"))  # the token left the URL
        await b.wait("document.getElementById('role').textContent === 'role: admin'")
        # Search by the caller's real number (admin only) finds the recorded call.
        await b.eval(f"""(() => {{ const f = document.getElementById('cf');
            f.party.value = {json.dumps(A)}; f.outcome.value = 'answered';
            f.requestSubmit(); }})()""")
        await b.wait(f"document.querySelector('#calls tbody tr[data-id=\"{recorded['id']}\"]')"
                     " && document.querySelectorAll('#calls tbody tr').length === 1")
        await shot(b, shots, "calls")
        await view(b, f"call/{recorded['id']}",
                   "[...document.querySelectorAll('#d-rec canvas')]"
                   ".every(c => c.dataset.frames > 0) && "
                   "document.querySelectorAll('#d-rec canvas').length === 3")
        legs = await b.eval("[...document.querySelectorAll('#d-rec audio')]"
                            ".map(a => a.dataset.leg)")
        assert legs == ["caller", "callee", "mix"]
        # Each source is a signed link that answers a WAV without the token ...
        kinds = await b.eval("""Promise.all([...document.querySelectorAll('#d-rec audio')]
            .map(a => fetch(a.src).then(r => [r.status, r.headers.get('content-type'),
                                              a.src.includes('sig=')])))""")
        assert kinds == [[200, "audio/wav", True]] * 3
        # ... and the browser plays it.
        played = await b.eval("""(async () => { const a = document.querySelector('#d-rec audio');
            await a.play(); const t0 = Date.now();
            while (a.currentTime === 0 && Date.now() - t0 < 10000)
              await new Promise(r => setTimeout(r, 100));
            a.pause(); return [a.currentTime, a.duration]; })()""")
        assert played[0] > 0 and 2.0 < played[1] < 6.0, played
        marks = await b.eval("[...document.querySelectorAll('#d-timeline text.mark')]"
                             ".map(t => t.dataset.mark)")
        assert marks == ["invite", "ring", "answer", "end"] * 2, marks
        await shot(b, shots, "call")
        for name, ready in (("messages", "document.querySelectorAll('#messages tbody tr').length"),
                            ("bindings", "document.querySelectorAll('#bindings tbody tr').length"),
                            ("pool", "document.getElementById('pool-stats').textContent"),
                            ("health", "document.getElementById('counters').children.length")):
            await view(b, name, ready)
            await shot(b, shots, name)
        assert await b.eval("document.querySelectorAll('#bindings button').length") >= 2
        await view(b, "live", f"document.querySelector('#live button[data-id=\"{live_id}\"]')")
        await shot(b, shots, "live")
        # Hang up from the page; the row goes and the call is over.
        await b.eval(f"document.querySelector('#live button[data-id=\"{live_id}\"]').click()")
        await b.wait("document.querySelectorAll('#live tbody tr').length === 0", timeout=20)
        # After the hang-up the call is in the list (the record writer batches: search
        # again until it is there), and its detail says the operator ended it.
        found = f"document.querySelector('#calls tbody tr[data-id=\"{live_id}\"]')"
        await b.eval("location.hash = 'calls'")
        for _ in range(50):
            await b.eval("(() => { const f = document.getElementById('cf');"
                         " f.party.value = ''; f.outcome.value = ''; f.requestSubmit(); })()")
            await asyncio.sleep(0.3)
            if await b.eval(f"!!{found}"):
                break
        await b.wait(found)
        await view(b, f"call/{live_id}",
                   "document.getElementById('d-facts').textContent.includes('operator')")


async def _as_ops(base: str, recorded_id: str, live_id: str, shots: Path) -> None:
    async with Browser(shots.parent / "ops") as b:
        await b.goto(base + "/#token=opstok&view=calls")
        await b.wait("document.getElementById('role').textContent === 'role: ops'")
        pages = [await view(b, "calls", "document.querySelectorAll('#calls tbody tr').length >= 2")]
        assert await b.eval("getComputedStyle(document.querySelector('.admin-only')).display") \
            == "none"
        await shot(b, shots, "calls")
        await b.eval("(() => { const f = document.getElementById('cf');"
                     " f.out_id.value = 'order-42'; f.requestSubmit(); })()")
        await b.wait("[...document.querySelectorAll('#calls tbody tr')].length >= 1 && "
                     "[...document.querySelectorAll('#calls tbody tr')]"
                     ".every(r => r.textContent.includes('order-42'))")
        assert await b.eval(f"!!document.querySelector('#calls tr[data-id=\"{recorded_id}\"]')")
        pages.append(await view(b, f"call/{recorded_id}",
                                "document.querySelectorAll('#d-rec canvas').length === 3 && "
                                "[...document.querySelectorAll('#d-rec canvas')]"
                                ".every(c => c.dataset.frames > 0)"))
        await shot(b, shots, "call")
        row = f"document.querySelector('#live tbody tr[data-id=\"{live_id}\"]')"
        pages.append(await view(b, "live", row))
        assert await b.eval("document.querySelectorAll('#live button').length") == 0
        await shot(b, shots, "live")
        for name, ready in (("messages", "document.querySelectorAll('#messages tbody tr').length"),
                            ("bindings", "document.querySelectorAll('#bindings tbody tr').length"),
                            ("pool", "document.getElementById('pool-stats').textContent"),
                            ("health", "document.getElementById('counters').children.length")):
            pages.append(await view(b, name, ready))
            await shot(b, shots, name)
        assert await b.eval("document.querySelectorAll('#bindings button').length") == 0
        assert "+86138****2222" in "".join(pages)  # masked numbers are there ...
        storage = await b.eval("JSON.stringify([Object.entries(localStorage), "
                               "Object.entries(sessionStorage), document.cookie])")
        bodies = await b.bodies(base)
        assert len(bodies) >= 8
        seen = "\n".join([*pages, storage, *b.requests, *(t for _u, t in bodies)])
        for real in REAL:  # ... and nothing real, anywhere the page could keep it
            assert real not in seen, real
