"""The `relay` command: `serve`, and operator verbs that work on the same store.

Verbs print a table for people and, with --json, JSON for scripts. Numbers are shown in
full (the operator holds the store's credentials); `--role ops` masks them as the API does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .config import Config, ConfigError, load_config, parse_hostport, parse_port_range
from .errors import RelayError

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="relay.toml")
    p.add_argument("--store", help="sqlite:///path or redis://host:port/db")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--role", choices=("admin", "ops"), default="admin",
                   help="ops masks real numbers")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="relay", description="privacy-number switch")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the switch")
    s.add_argument("--config")
    s.add_argument("--sip", help="HOST:PORT for SIP (UDP and TCP)")
    s.add_argument("--http", help="HOST:PORT for the API and ops page")
    s.add_argument("--smpp", help="HOST:PORT for the SMPP server")
    s.add_argument("--store")
    s.add_argument("--outbound", help="HOST:PORT where B-legs go")
    s.add_argument("--trunk", action="append", help="trusted INVITE source (CIDR), repeatable")
    s.add_argument("--recordings", help="recordings folder")
    s.add_argument("--media-ports", help="A-B")
    s.add_argument("--smpp-account", action="append", metavar="SYSTEM_ID:PASSWORD")
    s.add_argument("--default-cc", help="country code for national numbers")
    s.add_argument("--log-level", default=None)
    s.add_argument("--workers", type=int, default=1,
                   help="N relay processes behind Kamailio's dispatcher on --sip")

    d = sub.add_parser("drain", help="refuse new calls (503) while live calls finish")
    d.add_argument("--config")
    d.add_argument("--url", help="the node's API (default: http from the config)")
    d.add_argument("--token", help="an admin bearer token (default: RELAY_TOKEN)")
    d.add_argument("--resume", action="store_true", help="take new calls again")
    d.add_argument("--json", action="store_true", help="machine-readable output")

    b = sub.add_parser("bind", help="create a binding")
    _common(b)
    b.add_argument("--mode", default="AXB", choices=("AXB", "AXN", "AXE"))
    b.add_argument("--a")
    b.add_argument("--b", required=True)
    b.add_argument("--x")
    b.add_argument("--ext")
    b.add_argument("--ttl", type=float)
    b.add_argument("--out-id")
    b.add_argument("--area")
    b.add_argument("--no-record", action="store_true")

    for verb in ("freeze", "release"):
        v = sub.add_parser(verb, help=f"{verb} a binding")
        _common(v)
        v.add_argument("id")

    g = sub.add_parser("bindings", help="list bindings")
    _common(g)
    g.add_argument("--x")
    g.add_argument("--state", choices=("active", "frozen", "released"))
    g.add_argument("--out-id")
    g.add_argument("--limit", type=int, default=50)

    c = sub.add_parser("calls", help="list call records (newest first)")
    _common(c)
    c.add_argument("--x")
    c.add_argument("--binding")
    c.add_argument("--out-id")
    c.add_argument("--since", type=float, help="UNIX seconds")
    c.add_argument("--limit", type=int, default=50)

    r = sub.add_parser("recordings", help="list, show or export call recordings")
    r.add_argument("--config")
    r.add_argument("--recordings", help="recordings folder (default from config)")
    rsub = r.add_subparsers(dest="rec_cmd", required=True)
    ls = rsub.add_parser("ls", help="recorded calls, newest first")
    ls.add_argument("--since", help="30m, 24h, 7d or an ISO date")
    ls.add_argument("--limit", type=int, default=50)
    show = rsub.add_parser("show", help="one call's files with sizes and SHA-256")
    show.add_argument("call_id")
    exp = rsub.add_parser("export", help="copy a call's WAVs and metadata to a folder")
    exp.add_argument("call_id")
    exp.add_argument("dest")
    sw = rsub.add_parser("sweep", help="delete recordings older than the retention period")
    sw.add_argument("--days", type=float,
                    help="keep this many days (default: [recordings] retention_days)")
    ver = rsub.add_parser("verify", help="check a day's signed manifest chain and files")
    ver.add_argument("--date", help="YYYY-MM-DD (UTC; default today)")
    for p in (ls, show, exp, sw, ver):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        # SUPPRESS: unset here, the value given before the verb stays (argparse lets a
        # subparser's default overwrite it otherwise).
        p.add_argument("--recordings", default=argparse.SUPPRESS,
                       help="recordings folder (default from config)")

    pol = sub.add_parser("policies", help="list, show, set or delete named policies")
    _common(pol)
    psub = pol.add_subparsers(dest="policies_cmd")
    for verb, what in (("show", "one policy"), ("rm", "delete a policy")):
        psub.add_parser(verb, help=what).add_argument("name")
    pset = psub.add_parser("set", help="create or replace a policy from JSON")
    pset.add_argument("name")
    pset.add_argument("policy", help='JSON, e.g. \'{"directions": ["a_to_b"]}\', or @FILE')

    bl = sub.add_parser("blocklist", help="list, add or remove blocked callers")
    _common(bl)
    bsub = bl.add_subparsers(dest="blocklist_cmd")
    badd = bsub.add_parser("add", help="block a caller (603) on every X, or on one with --x")
    badd.add_argument("number")
    badd.add_argument("--reason", required=True)
    badd.add_argument("--until", help="UNIX seconds or ISO 8601 with a zone")
    brm = bsub.add_parser("rm", help="unblock a caller (the global entry, or --x's)")
    brm.add_argument("number")
    for p in (badd, brm):
        p.add_argument("--x", help="only this virtual number")

    n = sub.add_parser("numbers", help="show the pool, or add numbers to it")
    _common(n)
    nsub = n.add_subparsers(dest="numbers_cmd")
    add = nsub.add_parser("add", help="add numbers")
    add.add_argument("numbers", nargs="+")
    add.add_argument("--area")
    return ap


def _serve_overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"store": a.store, "recordings": a.recordings, "default_cc": a.default_cc,
                         "log_level": a.log_level}
    for name in ("sip", "http", "smpp", "outbound"):
        v = getattr(a, name)
        if v:
            o[name] = parse_hostport(v, "--" + name)
    if a.trunk:
        o["trunks"] = tuple(a.trunk)
    if a.media_ports:
        o["media_ports"] = parse_port_range(a.media_ports)
    if a.smpp_account:
        accounts = {}
        for item in a.smpp_account:
            sid, sep, pw = item.partition(":")
            if not sep or not sid:
                raise ConfigError(f"--smpp-account: expected SYSTEM_ID:PASSWORD, got {item!r}")
            accounts[sid] = pw
        o["smpp_accounts"] = accounts
    return o


def _table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line]
    for row in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def _emit(a: argparse.Namespace, data: Any, rows: list[dict[str, Any]], cols: Sequence[str]
          ) -> None:
    if a.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(_table(rows, cols) + "\n")


_BCOLS = ("id", "mode", "x", "a", "b", "ext", "state", "expires_at", "out_id")


async def _with_service(cfg: Config, fn: Callable[[Any], Awaitable[None]]) -> None:
    from .app import Node
    from .events.service import install_binding_events

    node = Node(cfg)
    install_binding_events(node)  # `relay freeze` commits binding.frozen like the API
    await node.store.open()
    try:
        await node.follower.load()
        await fn(node)
    finally:
        await node.store.close()


def _run_verb(a: argparse.Namespace, cfg: Config) -> None:
    from dialplan.numbers import normalise

    from .api.views import binding_view
    from .bindings.validate import parse_create, parse_numbers

    async def bind(node: Any) -> None:
        body: dict[str, Any] = {"mode": a.mode, "b": a.b}
        for k in ("a", "x", "ext", "ttl", "area"):
            if getattr(a, k) is not None:
                body[k] = getattr(a, k)
        if a.out_id:
            body["out_id"] = a.out_id
        if a.no_record:
            body["record"] = False
        b, _created = await node.service.create(parse_create(body, cfg.default_cc, time.time()))
        v = binding_view(b, a.role, time.time())
        _emit(a, v, [v], _BCOLS)

    async def change(node: Any) -> None:
        fn = node.service.freeze if a.cmd == "freeze" else node.service.release
        b = await fn(a.id, "cli")
        v = binding_view(b, a.role, time.time())
        _emit(a, v, [v], _BCOLS)

    async def bindings(node: Any) -> None:
        found, nxt = await node.store.query(x=a.x, state=a.state, out_id=a.out_id,
                                            limit=a.limit)
        views = [binding_view(b, a.role, time.time()) for b in found]
        _emit(a, {"bindings": views, "next": nxt}, views, _BCOLS)

    async def numbers(node: Any) -> None:
        if a.numbers_cmd == "add":
            nums, area = parse_numbers({"numbers": a.numbers, "area": a.area}, cfg.default_cc)
            added = await node.service.add_numbers(nums, area)
            _emit(a, {"added": added}, [{"added": added, "area": area}], ("added", "area"))
            return
        now = time.time()
        rows = []
        for n, rec in sorted(node.pool.numbers.items()):
            use = node.table.usage(n)
            q = node.table.quarantine.get(int(n[1:]), 0.0)
            rows.append({"number": n, "area": rec.area, "mode": use[0].value if use else None,
                         "bindings": use[1] if use else 0,
                         "state": "in_use" if use else ("quarantined" if q > now else "free")})
        s = node.pool.stats(node.table, now)
        _emit(a, {"numbers": rows, "stats": dataclasses.asdict(s)}, rows,
              ("number", "area", "mode", "bindings", "state"))

    async def calls(node: Any) -> None:
        from .api.calls import call_view

        await node.records.open()
        try:
            x = normalise(a.x, cfg.default_cc) if a.x else None
            found, nxt = await node.records.query("call", x=x, binding=a.binding,
                                                  out_id=a.out_id, since=a.since,
                                                  limit=a.limit)
        finally:
            await node.records.close()
        views = [call_view(r, a.role) for r in found]
        _emit(a, {"calls": views, "next": nxt}, views,
              ("id", "started_at", "x", "caller", "callee", "sip_code", "cause", "released_by",
               "unconnected_cause", "duration_ms"))

    async def policies(node: Any) -> None:
        from dialplan.policy import PolicyError, parse_policy

        from .errors import BadRequest, NotFound

        store = node.policy_store
        await store.open()
        try:
            docs = await store.all()
            cmd, name = a.policies_cmd, str(getattr(a, "name", ""))
            if cmd == "set":
                raw = a.policy
                if raw.startswith("@"):
                    with open(raw[1:], encoding="utf-8") as f:
                        raw = f.read()
                try:
                    policy = parse_policy(name, json.loads(raw))
                except (ValueError, PolicyError) as exc:  # JSONDecodeError is a ValueError
                    raise BadRequest(str(exc), "invalid_policy") from None
                await store.put(policy)
                docs = {name: policy.as_dict()}
            elif cmd in ("show", "rm"):
                if name not in docs:
                    raise NotFound(f"no policy named {name!r}")
                if cmd == "rm":
                    await store.delete(name)
                docs = {name: docs[name]}
        finally:
            await store.close()
        rows = [{"name": n, "rules": json.dumps({k: v for k, v in d.items() if k != "name"})}
                for n, d in sorted(docs.items())]
        _emit(a, {"policies": [d for _n, d in sorted(docs.items())],
                  "default_policy": cfg.default_policy}, rows, ("name", "rules"))

    async def blocklist(node: Any) -> None:
        from dialplan.blocklist import parse_block
        from dialplan.numbers import InvalidNumber, mask

        from .api.views import iso
        from .errors import BadRequest, NotFound

        store, now, cmd = node.policy_store, time.time(), a.blocklist_cmd
        await store.open()
        try:
            if cmd in ("add", "rm"):
                try:
                    number = normalise(a.number, cfg.default_cc)
                    x = normalise(a.x, cfg.default_cc) if a.x else None
                except InvalidNumber as exc:
                    raise BadRequest(str(exc), "invalid_number") from None
            if cmd == "add":
                until: Any = a.until
                if until is not None and until.replace(".", "", 1).isdigit():
                    until = float(until)
                try:
                    await store.block(parse_block(number, {"reason": a.reason, "until": until},
                                                  x, now))
                except ValueError as exc:
                    raise BadRequest(str(exc), "invalid_block") from None
            elif cmd == "rm" and not await store.unblock(number, x):
                raise NotFound("that number is not on the blocklist")
            entries = [b for b in await store.blocks() if b.live(now)]
        finally:
            await store.close()
        rows = [{"number": b.number if a.role == "admin" else mask(b.number), "x": b.x,
                 "reason": b.reason, "until": iso(b.until), "created_at": iso(b.created_at)}
                for b in sorted(entries, key=lambda b: (b.number, b.x or ""))]
        _emit(a, {"blocklist": rows}, rows, ("number", "x", "reason", "until", "created_at"))

    fn = {"bind": bind, "freeze": change, "release": change, "bindings": bindings,
          "numbers": numbers, "calls": calls, "policies": policies,
          "blocklist": blocklist}[a.cmd]
    asyncio.run(_with_service(cfg, fn))


def _verify(a: argparse.Namespace, cfg: Config, root: str) -> int:
    """`relay recordings verify`: exit 1 and name the first break when the day's chain,
    a manifest, a signature or a file does not hold."""
    from datetime import UTC, datetime

    from recordings.manifest import verify_day

    from .recordings_config import recordings_settings

    day = a.date or datetime.now(UTC).strftime("%Y-%m-%d")
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"--date: expected YYYY-MM-DD, got {day!r}") from None
    # The folder's own key file (when no keys are configured) is the one in `root`.
    settings = dataclasses.replace(recordings_settings(cfg), root=root)
    report = verify_day(root, day, settings.manifest_signing_keys())
    rows = [{"seq": p["seq"], "call_id": p["call_id"], "problem": p["problem"]}
            for p in report.problems]
    _emit(a, report.to_json(), rows, ("seq", "call_id", "problem"))
    if not a.json:
        verdict = "intact" if report.ok else f"BROKEN at {report.first_break}"
        sys.stdout.write(f"{day}: {report.checked} sealed calls checked, {verdict}; "
                         f"{len(report.unsealed)} unsealed\n")
    return 0 if report.ok else 1


def _recordings(a: argparse.Namespace, cfg: Config) -> int:
    """`relay recordings ls|show|export|sweep|verify`: straight from the recordings
    folder; returns the exit status."""
    from recordings.cli import (
        export_recording,
        list_recordings,
        parse_since,
        show_recording,
    )

    root = a.recordings or cfg.recordings
    if a.rec_cmd == "ls":
        since = parse_since(a.since, time.time()) if a.since else None
        rows = list_recordings(root, since=since, limit=a.limit)
        _emit(a, {"recordings": rows}, rows,
              ("call_id", "started_at", "duration_ms", "size", "state"))
    elif a.rec_cmd == "show":
        shown = show_recording(root, a.call_id)
        files = [{"leg": leg, **f} for leg, f in shown.get("files", {}).items()]
        _emit(a, shown, files, ("leg", "path", "size", "duration_ms", "sha256"))
    elif a.rec_cmd == "verify":
        return _verify(a, cfg, root)
    elif a.rec_cmd == "sweep":
        from recordings.retention import sweep

        from .recordings_config import recordings_settings

        days = a.days if a.days is not None else recordings_settings(cfg).retention_days
        if not days or days <= 0:
            raise ConfigError("no retention period: pass --days N or set "
                              "[recordings] retention_days")
        removed = sweep(root, days, time.time())
        _emit(a, {"removed": removed, "days": days}, [{"removed": removed, "days": days}],
              ("removed", "days"))
    else:
        out = export_recording(root, a.call_id, a.dest)
        _emit(a, out, [{"file": f} for f in out["files"]], ("file",))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `relay` console script."""
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "serve":
            cfg = load_config(a.config, _serve_overrides(a))
        else:
            cfg = load_config(a.config, {"store": getattr(a, "store", None)})
    except ConfigError as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 2
    level = cfg.log_level.upper() if a.cmd == "serve" else "WARNING"
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if a.cmd == "serve":
        if a.workers > 1:
            raw = list(sys.argv[1:] if argv is None else argv)
            return _serve_workers(cfg, raw[raw.index("serve") + 1:], a.workers)
        return _serve(cfg)
    if a.cmd == "drain":
        return _drain(a, cfg)
    try:
        if a.cmd == "recordings":
            return _recordings(a, cfg)
        _run_verb(a, cfg)
    except ConfigError as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 2
    except LookupError as exc:  # recordings.cli.RecordingNotFound
        sys.stderr.write(f"relay: not_found: {exc}\n")
        return 1
    except RelayError as exc:
        if getattr(a, "json", False):
            sys.stdout.write(json.dumps({"error": exc.code, "detail": exc.detail}) + "\n")
        sys.stderr.write(f"relay: {exc.code}: {exc.detail}\n")
        return 1
    except Exception as exc:  # the store is down, the file is unreadable, ...
        sys.stderr.write(f"relay: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


def _drain(a: argparse.Namespace, cfg: Config) -> int:
    """`relay drain`: POST (or, with --resume, DELETE) /v1/node/drain on a node's API."""
    import os
    import urllib.error
    import urllib.request

    base = (a.url or f"http://{cfg.http[0]}:{cfg.http[1]}").rstrip("/")
    token = a.token or os.environ.get("RELAY_TOKEN")
    req = urllib.request.Request(base + "/v1/node/drain",
                                 method="DELETE" if a.resume else "POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        sys.stderr.write(f"relay: {exc.code}: {exc.read().decode(errors='replace')}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"relay: {base}: {exc}\n")
        return 1
    rows = data.get("workers") or [data]
    _emit(a, data, rows, ("worker", "pid", "draining", "live_calls", "sip"))
    return 0


def _serve_workers(cfg: Config, argv: list[str], n: int) -> int:
    """`relay serve --workers N`: Kamailio's dispatcher in front of N workers."""
    from .cluster.kamailio import KamailioNotFound
    from .cluster.supervisor import run_cluster

    def ready(cluster: Any) -> None:
        h = cfg.http
        sys.stderr.write(
            f"relay is serving with {n} workers behind kamailio (store {cfg.store}).\n"
            f"  SIP: {cfg.sip[0]}:{cfg.sip[1]}, workers on "
            + ", ".join(f"{w.sip[0]}:{w.sip[1]}" for w in cluster.workers) + "\n"
            f"  API and ops page: http://{h[0]}:{h[1]}/\n")

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_cluster(cfg, argv, n, ready))
    except (KamailioNotFound, ValueError) as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 2
    except RuntimeError as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 1
    return 0


def _serve(cfg: Config) -> int:
    from .app import serve

    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run

    def ready(node: Any) -> None:
        h = cfg.http
        sys.stderr.write(
            f"relay is serving (store {cfg.store}).\n"
            f"  API and ops page: http://{h[0]}:{node.http_port}/\n"
            f"  add numbers:   curl -X POST http://{h[0]}:{node.http_port}/v1/numbers "
            "-d '{\"numbers\": [\"+8617000000001\"]}'\n"
            f"  first binding: curl -X POST http://{h[0]}:{node.http_port}/v1/bindings "
            "-d '{\"mode\": \"AXB\", \"a\": \"+8613800000001\", \"b\": \"+8613900000001\", "
            "\"ttl\": 3600}'\n")

    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(serve(cfg, ready))
    except ConfigError as exc:  # a subsystem's own section ([sip], [sms], ...) is wrong
        sys.stderr.write(f"relay: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
