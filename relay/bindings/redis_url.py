"""Redis clients from store URLs: one server, or the master that Redis Sentinel names.

* `redis://host:port/db` (also `rediss://`, `unix://`): one server (redis-py's from_url).
* `redis+cluster://host:port[,host:port...]`: Redis Cluster, from any of its nodes. Every
  key the relay writes carries the hash tag `{relay}` (or `?prefix=`), so they all live
  in one slot and the Lua scripts and multi-key commands run as on one server.
* `redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]`: the sentinels
  to ask, the monitored service (`sentinel monitor SERVICE ...`) and the database. The
  client connects to whichever server the sentinels name as master at the time; after
  a failover, the next command after a broken connection (or a READONLY reply from a
  demoted master) asks again.

Query parameters (`?prefix=...`) belong to the relay and are not passed to redis-py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis

__all__ = ["CLUSTER_SCHEME", "SENTINEL_SCHEME", "is_redis_url", "parse_cluster_url",
           "parse_sentinel_url", "redis_client"]

SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"


def is_redis_url(url: str) -> bool:
    """Whether `url` names a Redis store (one server or a Sentinel set)."""
    return url.startswith(("redis://", "rediss://", "unix://", SENTINEL_SCHEME,
                           CLUSTER_SCHEME))


def parse_cluster_url(url: str) -> list[tuple[str, int]]:
    """The startup nodes of a `redis+cluster://` URL."""
    netloc = url[len(CLUSTER_SCHEME):].split("?", 1)[0].split("/", 1)[0]
    nodes = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: expected host:port of each cluster node, got {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError(f"{url!r}: expected redis+cluster://HOST:PORT[,HOST:PORT]")
    return nodes


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """(sentinels, service, db, password) of a `redis+sentinel://` URL."""
    rest = url[len(SENTINEL_SCHEME):].split("?", 1)[0]
    netloc, _, path = rest.partition("/")
    password: str | None = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2] or auth) or None
    sentinels = []
    for item in filter(None, netloc.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: expected host:port of each sentinel, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    if not sentinels or not parts:
        raise ValueError(f"{url!r}: expected redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE"
                         "[/DB]")
    db = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return sentinels, parts[0], db, password


def redis_client(url: str, **kwargs: Any) -> Any:
    """An asyncio Redis client for `url` (see the module docstring); `kwargs` go to the
    connections (socket_timeout, ...)."""
    if url.startswith(CLUSTER_SCHEME):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        kwargs.pop("health_check_interval", None)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in
                                           parse_cluster_url(url)], **kwargs)
    if not url.startswith(SENTINEL_SCHEME):
        return aioredis.from_url(url.split("?", 1)[0], **kwargs)
    from redis.asyncio.sentinel import Sentinel

    sentinels, service, db, password = parse_sentinel_url(url)
    timeout = {k: v for k, v in kwargs.items()
               if k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 1.0,
                                                    "socket_connect_timeout": 1.0},
                        **timeout)
    kwargs.pop("health_check_interval", None)
    return sentinel.master_for(service, db=db, password=password, **kwargs)
