"""Logs and metrics of `relay serve` with real calls (SIPp): one masked INFO line per
ended and per refused call, JSON logs, an access log without tokens or numbers, and
/metrics in the standard content type, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
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

TOKEN = "s3cretAdminToken42"
STRANGER = "+8613000000009"


def get(base: str, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(base + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def families(base: str) -> dict[str, Any]:
    status, headers, body = get(base, "/metrics", None)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_call_lines_access_log_and_metrics(relay_factory: Any, tmp_path: Path) -> None:
    out = udp_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          [*relay_args(out, tmp_path), "--log-level", "INFO",
                           "--log-format", "json"],
                          env={"RELAY_API_TOKENS": f"{TOKEN}:admin"})
    bind(relay.base, token=TOKEN)
    uas = callee(tmp_path, out, "uas.xml", number=B, extra=["-m", "1"])
    uac = caller(tmp_path, relay.sip_port, "uac.xml", number=A, x=X,
                 extra=["-m", "1", "-d", "1200"])
    uas.start()
    uac.start()
    assert uac.wait(30) == 0, uac.tail()
    assert uas.wait(30) == 0, uas.tail()
    ref = caller(tmp_path, relay.sip_port, number=STRANGER, x="+8617000000002",
                 scenario_path=refused_scenario(tmp_path, 404), extra=["-m", "1"], name="ref")
    ref.start()
    assert ref.wait(30) == 0, ref.tail()
    records = {c["outcome"]: c for c in calls(relay.base, token=TOKEN, want=2)}
    assert set(records) == {"answered", "refused"}
    get(relay.base, f"/v1/callers/%2B{A[1:]}")  # a real number in the path
    get(relay.base, f"/v1/calls?party=%2B{A[1:]}")
    get(relay.base, "/v1/recordings/abc/mix.wav?expires=1&sig=" + "ab" * 32, None)

    m = families(relay.base)
    refused = {(s.labels["reason"], s.labels["code"]): s.value
               for s in m["relay_calls_refused"].samples if s.name.endswith("_total")}
    assert refused == {("no_binding", "404"): 1.0}
    setup = {s.name: s.value for s in m["relay_call_setup_seconds"].samples
             if not s.labels or s.labels.get("le") == "+Inf"}
    assert setup["relay_call_setup_seconds_count"] == 1.0
    assert 0 < setup["relay_call_setup_seconds_sum"] < 5
    duration = {s.name: s.value for s in m["relay_call_duration_seconds"].samples
                if s.labels.get("le") in (None, "0.0", "1.0", "5.0")}
    assert duration["relay_call_duration_seconds_count"] == 1.0
    assert 1.0 <= duration["relay_call_duration_seconds_sum"] < 5
    (info,) = m["relay_build_info"].samples
    assert info.value == 1 and info.labels["version"]
    assert m["process_cpu_seconds"].samples[0].value > 0
    assert m["process_resident_memory_bytes"].samples[0].value > 1e6
    assert m["relay_recording_errors"].samples[0].value == 0

    relay.stop()
    lines = [json.loads(line) for line in relay.log.read_text().splitlines()
             if line.startswith("{")]
    text = relay.log.read_text()
    assert TOKEN not in text and "ab" * 32 not in text
    for real in (A, B, STRANGER):
        assert real[1:] not in text and real[3:] not in text, real
    by_id = {ln.get("call_id"): ln for ln in lines if ln["logger"] == "relay.calls"}
    ended = by_id[records["answered"]["id"]]
    assert ended["msg"].startswith("call ended") and ended["level"] == "INFO"
    assert ended["x"] == X and ended["caller"] == "+86138****2222"
    assert ended["callee"] == "+86139****4444" and ended["outcome"] == "answered"
    assert ended["sip_code"] == 200 and ended["duration_ms"] >= 1000
    assert ended["released_by"] == "caller" and ended["setup_ms"] >= 0
    refusal = by_id[records["refused"]["id"]]
    assert refusal["msg"].startswith("call refused") and refusal["reason"] == "no_binding"
    assert refusal["sip_code"] == 404 and refusal["caller"] == "+86130****0009"
    access = [ln for ln in lines if ln["logger"] == "relay.access"]
    paths = [ln["path"] for ln in access]
    assert "/v1/callers/+86138****2222" in paths
    assert any(p.startswith("/v1/recordings/abc/mix.wav?expires=1&sig=...") for p in paths)
    assert {ln["role"] for ln in access if ln["path"].startswith("/v1/calls")} == {"admin"}
