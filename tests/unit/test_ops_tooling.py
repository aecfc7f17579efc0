"""The pieces of the operator tooling that need no server: the metrics text (parsed by
prometheus_client's own parser), the access log's scrubbing, the one time format, CSV."""

from __future__ import annotations

import csv
import io

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.api.access import scrub
from relay.calllog import CallLog, outcome
from relay.cli_ops import parse_when, to_csv
from relay.metrics import Metrics


def test_metrics_text_parses_with_histograms_labels_and_info() -> None:
    m = Metrics()
    log = CallLog(m)
    answered = {"id": "c1", "sip_code": 200, "duration_ms": 42_000, "x": "+8617000000001",
                "caller": "+8613800000001", "callee": "+8613900000001",
                "legs": {"caller": {"invite_at": 1000, "ring_at": 1030, "answer_at": 1500}}}
    refused = {"id": "c2", "sip_code": 410, "unconnected_cause": "frozen", "legs": {}}
    policy = {"id": "c3", "sip_code": 480, "unconnected_cause": "policy",
              "policy_reason": "quiet_hours"}
    for rec in (answered, refused, refused, policy):
        log.submit(rec)
    log.submit({"id": "bad", "legs": "not a dict"})  # logged, never raised
    m.info("relay_build_info", "build", {"version": "1.2.3", "python": "3.11"})
    fams = {f.name: f for f in text_string_to_metric_families(m.render())}
    refusals = {(s.labels["reason"], s.labels["code"]): s.value
                for s in fams["relay_calls_refused"].samples}
    assert refusals == {("frozen", "410"): 2.0, ("quiet_hours", "480"): 1.0}
    setup = {(s.name, s.labels.get("le")): s.value
             for s in fams["relay_call_setup_seconds"].samples}
    assert setup[("relay_call_setup_seconds_bucket", "0.025")] == 0.0
    assert setup[("relay_call_setup_seconds_bucket", "0.05")] == 1.0  # 30 ms to ringing
    assert setup[("relay_call_setup_seconds_bucket", "+Inf")] == 1.0
    assert setup[("relay_call_setup_seconds_sum", None)] == pytest.approx(0.03)
    dur = {(s.name, s.labels.get("le")): s.value
           for s in fams["relay_call_duration_seconds"].samples}
    assert dur[("relay_call_duration_seconds_bucket", "30.0")] == 0.0
    assert dur[("relay_call_duration_seconds_bucket", "60.0")] == 1.0
    assert fams["relay_build_info"].samples[0].labels["version"] == "1.2.3"
    assert fams["process_open_fds"].samples[0].value > 0
    assert outcome(answered) == "answered" and outcome(refused) == "refused"
    assert outcome({"sip_code": 486, "unconnected_cause": "none"}) == "unanswered"


def test_access_log_scrubs_numbers_and_secrets() -> None:
    assert scrub("/v1/callers/+8613800000001") == "/v1/callers/+86138****0001"
    assert scrub("/v1/calls?party=%2B8613800000001&x=1") == \
        "/v1/calls?party=+86138****0001&x=1"
    assert scrub("/v1/recordings/c/mix.wav?expires=1700000000&sig=abcdef") == \
        "/v1/recordings/c/mix.wav?expires=1700000000&sig=..."
    assert scrub("/v1/bindings?token=T0ps3cret") == "/v1/bindings?token=..."


def test_one_time_format() -> None:
    now = 1_800_000_000.0
    assert parse_when("30m", now) == now - 1800
    assert parse_when("2h", now, ahead=True) == now + 7200
    assert parse_when("1700000000", now) == 1_700_000_000.0
    assert parse_when("2023-11-14T22:13:20Z", now) == 1_700_000_000.0
    assert parse_when("2023-11-15T06:13:20+08:00", now) == 1_700_000_000.0
    assert parse_when("2023-11-14T22:13:20", now) == 1_700_000_000.0  # naive: UTC
    with pytest.raises(ValueError, match="use UNIX seconds"):
        parse_when("last tuesday", now)


def test_csv_has_a_header_and_quotes() -> None:
    text = to_csv([{"id": "a,b", "legs": {"caller": 1}, "n": None}], ("id", "legs", "n"))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["id", "legs", "n"], ["a,b", '{"caller": 1}', ""]]
