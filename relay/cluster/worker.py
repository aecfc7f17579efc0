"""One worker of `relay serve --workers N`: a whole relay node (SIP, media, API) on the
internal ports its parent chose. Run as `python -m relay.cluster.worker` with the spec
in RELAY_WORKER_SPEC (JSON, see supervisor.WorkerSpec)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys

from ..config import Config, ConfigError, load_config

__all__ = ["worker_config"]


def worker_config(spec: dict[str, object]) -> Config:
    """The node's settings: the serve command's own, with this worker's addresses.

    Only worker 0 serves SMPP (one bind address); the media port range is this worker's
    share; the balancer's address joins the trusted trunks (every INVITE comes from it).
    """
    from ..cli import _parser, _serve_overrides

    argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
    a = _parser().parse_args(["serve", *argv])
    cfg = load_config(a.config, _serve_overrides(a))
    sip = spec["sip"]
    http = spec["http"]
    ports = spec["media_ports"]
    trunks = tuple(dict.fromkeys([*cfg.trunks, *(str(t) for t in spec["trunks"])]))  # type: ignore[attr-defined]
    return dataclasses.replace(
        cfg, sip=(str(sip[0]), int(sip[1])), http=(str(http[0]), int(http[1])),  # type: ignore[index]
        media_ports=(int(ports[0]), int(ports[1])),  # type: ignore[index]
        smpp=cfg.smpp if spec.get("index") == 0 else None, trunks=trunks)


def main() -> int:
    """Entry point of a worker process."""
    spec = json.loads(os.environ["RELAY_WORKER_SPEC"])
    # Stable across restarts (a pid is not): live calls and call records name it.
    os.environ.setdefault("RELAY_NODE_ID", f"{socket.gethostname()}/worker-{spec.get('index')}")
    try:
        cfg = worker_config(spec)
    except ConfigError as exc:
        sys.stderr.write(f"relay worker {spec.get('index')}: {exc}\n")
        return 2
    from ..cli import _parser
    from ..logfmt import TEXT, configure

    fmt = getattr(_parser().parse_args(["serve", *spec["argv"]]), "log_format", "text")
    configure(cfg.log_level.upper(), fmt)
    if fmt == "text":  # which worker said it
        logging.getLogger().handlers[0].setFormatter(logging.Formatter(
            TEXT.replace("%(name)s", f"w{spec.get('index')} %(name)s")))
    from ..app import serve

    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run  # type: ignore[assignment]
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(serve(cfg))
    except ConfigError as exc:
        sys.stderr.write(f"relay worker {spec.get('index')}: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
