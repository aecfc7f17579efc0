"""Store URLs for Redis Sentinel (relay.bindings.redis_url)."""

from __future__ import annotations

import pytest

from relay.bindings.redis_url import is_redis_url, parse_cluster_url, parse_sentinel_url


def test_sentinel_url_names_the_sentinels_service_db_and_password() -> None:
    assert parse_sentinel_url("redis+sentinel://127.0.0.1:26379,[::1]:26380/relay/2"
                              "?prefix=x") == ([("127.0.0.1", 26379), ("::1", 26380)],
                                               "relay", 2, None)
    assert parse_sentinel_url("redis+sentinel://:s%40cret@h:1/m") == ([("h", 1)], "m", 0,
                                                                       "s@cret")
    assert is_redis_url("redis+sentinel://h:1/m") and not is_redis_url("sqlite:///x")


@pytest.mark.parametrize("bad", ["redis+sentinel://h:1", "redis+sentinel:///m",
                                 "redis+sentinel://h:port/m", "redis+sentinel://h/m"])
def test_a_malformed_sentinel_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sentinel"):
        parse_sentinel_url(bad)


def test_cluster_url_names_its_startup_nodes() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001?prefix=r") == [
        ("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    with pytest.raises(ValueError, match="cluster"):
        parse_cluster_url("redis+cluster://")
