"""The pure parts of `relay serve --workers N` (relay/cluster/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cluster.front import merge_json, merge_metrics
from relay.cluster.kamailio import CONFIG, command, write_list
from relay.cluster.supervisor import media_share, worker_argv


def test_metrics_of_every_worker_make_one_valid_exposition() -> None:
    w0 = ("# HELP relay_bindings live bindings\n# TYPE relay_bindings gauge\n"
          "relay_bindings 3\n# HELP relay_api_requests_total API requests\n"
          "# TYPE relay_api_requests_total counter\n"
          'relay_api_requests_total{method="GET",status="200"} 7\n')
    w1 = w0.replace(" 3\n", " 4\n").replace("} 7", "} 9")
    text = merge_metrics([(0, w0), (1, w1)])
    assert text.splitlines() == [
        "# HELP relay_bindings live bindings", "# TYPE relay_bindings gauge",
        'relay_bindings{worker="0"} 3', 'relay_bindings{worker="1"} 4',
        "# HELP relay_api_requests_total API requests",
        "# TYPE relay_api_requests_total counter",
        'relay_api_requests_total{worker="0",method="GET",status="200"} 7',
        'relay_api_requests_total{worker="1",method="GET",status="200"} 9']


def test_lists_are_joined_and_a_cursor_is_dropped() -> None:
    merged = merge_json([{"calls": [{"id": "a"}], "next": "x", "n": 1},
                         {"calls": [{"id": "b"}], "next": None, "n": 2}])
    assert merged == {"calls": [{"id": "a"}, {"id": "b"}], "next": None, "n": 1}


def test_each_worker_gets_its_own_even_share_of_the_media_ports() -> None:
    shares = [media_share((20000, 29999), 3, i) for i in range(3)]
    assert shares == [(20000, 23331), (23332, 26663), (26664, 29995)]
    assert all(lo % 2 == 0 for lo, _hi in shares)
    with pytest.raises(ValueError, match="too small"):
        media_share((20000, 20005), 4, 0)


def test_workers_run_the_serve_arguments_without_workers() -> None:
    assert worker_argv(["--workers", "2", "--sip", "h:1", "--workers=3", "--store", "s"]) \
        == ["--sip", "h:1", "--store", "s"]


def test_kamailio_runs_the_shipped_configuration_with_the_sets_addresses(
        tmp_path: Path) -> None:
    ds = tmp_path / "dispatcher.list"
    write_list(ds, [("127.0.0.1", 5071), ("::1", 5072)])
    assert ds.read_text().splitlines()[1:] == ["1 sip:127.0.0.1:5071", "1 sip:[::1]:5072"]
    argv = command("kamailio", "/mods", tmp_path, ("127.0.0.1", 5060), ds,
                   ["127.0.0.0/8", "10.0.0.0/8"], ping_interval=2)
    assert argv[:3] == ["kamailio", "-f", str(CONFIG)] and CONFIG.exists()
    defines = [argv[i + 1] for i, a in enumerate(argv) if a == "-A"]
    assert "LISTEN_UDP=udp:127.0.0.1:5060" in defines
    assert f'DS_LIST="{ds}"' in defines
    assert 'TRUNKS="127.0.0.0/8,10.0.0.0/8"' in defines and "PING_INTERVAL=2" in defines
    # Transactions need room: Debian's default 64 MB ran out at 600 calls/s.
    assert int(argv[argv.index("-m") + 1]) >= 512
