"""binding.frozen: committed with the freeze itself (API, expiry, `relay freeze`), on
SQLite and on Redis, and delivered by the relay's sender."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from event_receiver import Receiver
from sipp_harness import api

pytestmark = pytest.mark.integration
SECRET = "hook-secret-0123456789"
A, B = "+8613811112222", "+8613933334444"
XS = ["+8617000000011", "+8617000000012", "+8617000000013"]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_freezes_by_api_expiry_and_cli(kind: str, relay_factory: Any, tmp_path: Path,
                                       request: Any) -> None:
    store = f"sqlite:///{tmp_path}/relay.db"
    if kind == "redis":
        store = request.getfixturevalue("redis_server").url
    receiver = Receiver(free_port(), SECRET)
    receiver.start()
    conf = tmp_path / "relay.toml"
    conf.write_text(f'[events]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n'
                    "backoff = 0.1\nbackoff_max = 0.5\n[bindings]\nsweep_interval = 0.2\n")
    try:
        relay = relay_factory(store, ["--config", str(conf)])
        api(relay.base, "POST", "/v1/numbers", {"numbers": XS})
        made = [api(relay.base, "POST", "/v1/bindings",
                    {"mode": "AXB", "a": A, "b": B, "x": x, "ttl": ttl, "out_id": f"o{i}"})
                for i, (x, ttl) in enumerate(zip(XS, (3600, 1, 3600), strict=True))]
        api(relay.base, "POST", f"/v1/bindings/{made[0]['id']}/freeze")
        api(relay.base, "POST", f"/v1/bindings/{made[0]['id']}/freeze")  # idempotent: no event
        cli = subprocess.run([sys.executable, "-m", "relay", "freeze", made[2]["id"],
                              "--config", str(conf), "--store", store, "--json"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert cli.returncode == 0, cli.stderr
        # A text to the frozen X is refused, and says so.
        req = urllib.request.Request(relay.base + "/v1/sms", method="POST", data=json.dumps(
            {"from": A, "to": XS[0], "text": "still there?"}).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req)
        assert refused.value.code == 410
        got = receiver.wait_for(lambda g: len({e["id"] for e in g
                                               if e["type"] == "binding.frozen"}) >= 3
                                and any(e["type"] == "sms.refused" for e in g))
        time.sleep(0.5)
        receiver.check()
        frozen = {e["binding"]: e for e in receiver.taken() if e["type"] == "binding.frozen"}
        assert set(frozen) == {b["id"] for b in made}
        assert len([e for e in got if e["type"] == "binding.frozen"]) == 3  # none repeated
        assert frozen[made[0]["id"]]["reason"] == "api"
        assert frozen[made[1]["id"]]["reason"] == "expired"
        assert frozen[made[2]["id"]]["reason"] == "cli"
        one = frozen[made[0]["id"]]
        assert one["x"] == XS[0] and one["out_id"] == "o0" and one["mode"] == "AXB"
        assert one["a"] == "+86138****2222" and A not in json.dumps(one)
        assert one["frozen_at"].endswith("Z")
        sms = next(e for e in receiver.taken() if e["type"] == "sms.refused")
        assert sms["x"] == XS[0] and sms["reason"] == "frozen"
        assert sms["sender"] == "+86138****2222" and sms["received_at"].endswith("Z")
    finally:
        receiver.stop()
