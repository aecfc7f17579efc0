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
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import __version__
from .cli_ops import WHEN_HELP, RemoteApi, iso, parse_when, to_csv
from .config import Config, ConfigError, load_config, parse_hostport, parse_port_range
from .errors import BadRequest, RelayError

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="relay.toml (its store, recordings and country code)")
    p.add_argument("--store", help="sqlite:///path or redis://host:port/db "
                   "(default: ./var/relay.db, or the config's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--csv", action="store_true", help="CSV with a header line instead of a table")
    p.add_argument("--role", choices=("admin", "ops"), default="admin",
                   help="ops masks real numbers (with --url the token's role decides)")
    p.add_argument("--url", default=os.environ.get("RELAY_URL"),
                   help="a node's API, http://HOST:PORT: run the verb there instead of on a "
                   "store (default: $RELAY_URL)")
    p.add_argument("--token", default=os.environ.get("RELAY_TOKEN"),
                   help="bearer token for the API (default: $RELAY_TOKEN)")


def _serve_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override relay.toml (`serve`, `config check`, `config show`)."""
    p.add_argument("--config", help="relay.toml (flags override it)")
    p.add_argument("--sip", help="HOST:PORT for SIP (UDP and TCP)")
    p.add_argument("--sip-tls", help="HOST:PORT for SIP over TLS ([sip] tls_cert, tls_key)")
    p.add_argument("--http", help="HOST:PORT for the API and ops page")
    p.add_argument("--smpp", help="HOST:PORT for the SMPP server")
    p.add_argument("--store", help="sqlite:///path or redis://host:port/db")
    p.add_argument("--outbound", help="HOST:PORT where B-legs go")
    p.add_argument("--trunk", action="append", help="trusted INVITE source (CIDR), repeatable")
    p.add_argument("--recordings", help="recordings folder")
    p.add_argument("--media-ports", help="A-B: the UDP ports media may use")
    p.add_argument("--smpp-account", action="append", metavar="SYSTEM_ID:PASSWORD",
                   help="an SMPP gateway allowed to bind (repeatable)")
    p.add_argument("--default-cc", help="country code for national numbers")
    p.add_argument("--log-level", default=None,
                   help="DEBUG, INFO (default: a line per call and per API request), WARNING")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="relay", description="privacy-number switch")
    ap.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the switch")
    _serve_flags(s)
    s.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text lines, or one JSON object a line (fields as keys)")
    s.add_argument("--workers", type=int, default=1,
                   help="N relay processes behind Kamailio's dispatcher on --sip")

    cf = sub.add_parser("config", help="check relay.toml, or show the effective settings")
    cfsub = cf.add_subparsers(dest="config_cmd", required=True)
    cfsub_check = cfsub.add_parser("check", help="validate: prints ok, or the one error "
                                   "(exit 2)")
    _serve_flags(cfsub_check)
    cfsub_show = cfsub.add_parser("show", help="every setting after defaults, environment "
                                  "and flags; secrets as ***")
    _serve_flags(cfsub_show)
    cfsub_show.add_argument("--json", action="store_true", help="JSON instead of TOML")

    d = sub.add_parser("drain", help="refuse new calls (503) while live calls finish")
    d.add_argument("--config", help="relay.toml (its [relay] http is the node to drain)")
    d.add_argument("--url", help="the node's API (default: http from the config)")
    d.add_argument("--token", help="an admin bearer token (default: RELAY_TOKEN)")
    d.add_argument("--resume", action="store_true", help="take new calls again")
    d.add_argument("--json", action="store_true", help="machine-readable output")

    b = sub.add_parser("bind", help="create a binding")
    _common(b)
    b.add_argument("--mode", default="AXB", choices=("AXB", "AXN", "AXE"),
                   help="AXB (A and B), AXN (anyone reaches B), AXE (shared X, extension)")
    b.add_argument("--a", help="party A's real number (AXB; AXN optional)")
    b.add_argument("--b", required=True, help="party B's real number")
    b.add_argument("--x", help="the virtual number (default: one from the pool)")
    b.add_argument("--ext", help="AXE extension (default: allocated)")
    b.add_argument("--ttl", type=float, help="seconds until the binding freezes by itself")
    b.add_argument("--out-id", help="the platform's own reference (order id)")
    b.add_argument("--area", help="prefer a pool number of this area")
    b.add_argument("--no-record", action="store_true", help="do not record its calls")

    for verb in ("freeze", "release"):
        v = sub.add_parser(verb, help=f"{verb} a binding")
        _common(v)
        v.add_argument("id", help="the binding's id")

    g = sub.add_parser("bindings", help="list bindings")
    _common(g)
    g.add_argument("--x", help="only this virtual number")
    g.add_argument("--state", choices=("active", "frozen", "released"), help="only this state")
    g.add_argument("--out-id", help="only this platform reference")
    g.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    c = sub.add_parser("calls", help="list call records (newest first), or --live calls")
    _common(c)
    c.add_argument("--live", action="store_true",
                   help="the calls in progress on a serving node (through its API: --url, "
                   "default the config's http address)")
    c.add_argument("--x", help="only this virtual number")
    c.add_argument("--binding", help="only this binding's calls")
    c.add_argument("--out-id", help="only this platform reference")
    c.add_argument("--party", help="only calls with this caller or callee (admin)")
    c.add_argument("--outcome", choices=("answered", "unanswered", "refused"),
                   help="only calls with this outcome")
    c.add_argument("--since", help="from this time: " + WHEN_HELP)
    c.add_argument("--until", help="before this time: " + WHEN_HELP)
    c.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    ms = sub.add_parser("messages", help="list message records (newest first)")
    _common(ms)
    ms.add_argument("--x", help="only this virtual number")
    ms.add_argument("--binding", help="only this binding's messages")
    ms.add_argument("--out-id", help="only this platform reference")
    ms.add_argument("--since", help="from this time: " + WHEN_HELP)
    ms.add_argument("--until", help="before this time: " + WHEN_HELP)
    ms.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    h = sub.add_parser("hangup", help="end a call in progress (BYE to both legs; its record "
                       "says end_reason operator), through a serving node's API")
    _common(h)
    h.add_argument("call_id", help="the call's id (relay calls --live)")

    r = sub.add_parser("recordings", help="list, show or export call recordings")
    r.add_argument("--config", help="relay.toml (its recordings folder)")
    r.add_argument("--recordings", help="recordings folder (default from config)")
    rsub = r.add_subparsers(dest="rec_cmd", required=True)
    ls = rsub.add_parser("ls", help="recorded calls, newest first")
    ls.add_argument("--since", help="from this time: " + WHEN_HELP)
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = rsub.add_parser("show", help="one call's files with sizes and SHA-256")
    show.add_argument("call_id", help="the call's id")
    exp = rsub.add_parser("export", help="copy a call's WAVs and metadata to a folder")
    exp.add_argument("call_id", help="the call's id")
    exp.add_argument("dest", help="the folder to copy into")
    sw = rsub.add_parser("sweep", help="delete recordings older than the retention period")
    sw.add_argument("--days", type=float,
                    help="keep this many days (default: [recordings] retention_days)")
    ver = rsub.add_parser("verify", help="check a day's signed manifest chain and files")
    ver.add_argument("--date", help="YYYY-MM-DD (UTC; default today)")
    for p in (ls, show, exp, sw, ver):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--csv", action="store_true",
                       help="CSV with a header line instead of a table")
        # SUPPRESS: unset here, the value given before the verb stays (argparse lets a
        # subparser's default overwrite it otherwise).
        p.add_argument("--recordings", default=argparse.SUPPRESS,
                       help="recordings folder (default from config)")

    pol = sub.add_parser("policies", help="list, show, set or delete named policies")
    _common(pol)
    psub = pol.add_subparsers(dest="policies_cmd")
    for verb, what in (("show", "one policy"), ("rm", "delete a policy")):
        psub.add_parser(verb, help=what).add_argument("name", help="the policy's name")
    pset = psub.add_parser("set", help="create or replace a policy from JSON")
    pset.add_argument("name", help="the policy's name")
    pset.add_argument("policy", help='JSON, e.g. \'{"directions": ["a_to_b"]}\', or @FILE')

    bl = sub.add_parser("blocklist", help="list, add or remove blocked callers")
    _common(bl)
    bsub = bl.add_subparsers(dest="blocklist_cmd")
    badd = bsub.add_parser("add", help="block a caller (603) on every X, or on one with --x")
    badd.add_argument("number", help="the caller's number")
    badd.add_argument("--reason", required=True, help="why (kept with the entry)")
    badd.add_argument("--until", help="blocked until: UNIX seconds, ISO 8601 or a span "
                      "from now (2h, 7d); default for good")
    brm = bsub.add_parser("rm", help="unblock a caller (the global entry, or --x's)")
    brm.add_argument("number", help="the caller's number")
    for p in (badd, brm):
        p.add_argument("--x", help="only this virtual number")

    n = sub.add_parser("numbers", help="show the pool, or add numbers to it")
    _common(n)
    nsub = n.add_subparsers(dest="numbers_cmd")
    add = nsub.add_parser("add", help="add numbers")
    add.add_argument("numbers", nargs="+", help="E.164 numbers (or national ones)")
    add.add_argument("--area", help="an area tag for these numbers")
    return ap


def _serve_overrides(a: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"store": a.store, "recordings": a.recordings, "default_cc": a.default_cc,
                         "log_level": a.log_level}
    for name in ("sip", "sip_tls", "http", "smpp", "outbound"):
        v = getattr(a, name)
        if v:
            o[name] = parse_hostport(v, "--" + name.replace("_", "-"))
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
    elif getattr(a, "csv", False):
        sys.stdout.write(to_csv(rows, list(cols)))
    else:
        sys.stdout.write(_table(rows, cols) + "\n")


_BCOLS = ("id", "mode", "x", "a", "b", "ext", "state", "expires_at", "out_id")
_CCOLS = ("id", "started_at", "x", "caller", "callee", "outcome", "sip_code", "cause",
          "released_by", "end_reason", "unconnected_cause", "duration_ms")
_LCOLS = ("id", "node", "started_at", "x", "caller", "callee", "phase", "answered_at",
          "duration_ms")
_MCOLS = ("id", "started_at", "x", "sender", "recipient", "direction", "status", "reason",
          "parts")


def _when(a: argparse.Namespace, name: str) -> float | None:
    raw = getattr(a, name, None)
    if raw is None:
        return None
    try:
        return parse_when(raw)
    except ValueError as exc:
        raise ConfigError(f"--{name} {exc}") from None


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


def _bind_body(a: argparse.Namespace) -> dict[str, Any]:
    """`relay bind`'s options as a POST /v1/bindings body (local store or --url alike)."""
    body: dict[str, Any] = {"mode": a.mode, "b": a.b}
    for k in ("a", "x", "ext", "ttl", "area"):
        if getattr(a, k) is not None:
            body[k] = getattr(a, k)
    if a.out_id:
        body["out_id"] = a.out_id
    if a.no_record:
        body["record"] = False
    return body


def _run_verb(a: argparse.Namespace, cfg: Config) -> None:
    from dialplan.numbers import normalise

    from .api.views import binding_view
    from .bindings.validate import parse_create, parse_numbers

    async def bind(node: Any) -> None:
        body = _bind_body(a)
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

    async def records(node: Any, kind: str, keep: Callable[[dict[str, Any]], bool]
                      ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first by the store's filters, then `keep` (read on, at most 5000)."""
        await node.records.open()
        try:
            x = normalise(a.x, cfg.default_cc) if a.x else None
            found: list[dict[str, Any]] = []
            nxt, scanned = None, 0
            while len(found) < a.limit and scanned < 5000:
                page, nxt = await node.records.query(
                    kind, x=x, binding=a.binding, out_id=a.out_id, since=_when(a, "since"),
                    until=_when(a, "until"), cursor=nxt, limit=a.limit - len(found))
                scanned += len(page)
                found += [r for r in page if keep(r)]
                if nxt is None:
                    break
        finally:
            await node.records.close()
        return found, nxt

    async def calls(node: Any) -> None:
        from .api.calls import call_outcome, call_view

        party = normalise(a.party, cfg.default_cc) if a.party else None
        found, nxt = await records(node, "call", lambda r: (
            (party is None or party in (r.get("caller"), r.get("callee")))
            and (a.outcome is None or call_outcome(r) == a.outcome)))
        views = [call_view(r, a.role) for r in found]
        _emit(a, {"calls": views, "next": nxt}, views, _CCOLS)

    async def messages(node: Any) -> None:
        from .api.sms import message_view

        found, nxt = await records(node, "message", lambda r: True)
        views = [message_view(r, a.role) for r in found]
        _emit(a, {"messages": views, "next": nxt}, views, _MCOLS)

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
                until = _ahead(a.until)
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
          "numbers": numbers, "calls": calls, "messages": messages, "policies": policies,
          "blocklist": blocklist}[a.cmd]
    asyncio.run(_with_service(cfg, fn))


def _ahead(raw: str | None) -> float | None:
    """A blocklist entry's end: the time format of every verb, a span counting forward."""
    if raw is None:
        return None
    try:
        return parse_when(raw, ahead=True)
    except ValueError as exc:
        raise ConfigError(f"--until {exc}") from None


def _api_for(a: argparse.Namespace, cfg: Config) -> RemoteApi:
    """--url, or the config's own HTTP address (a serving node on this machine)."""
    url = a.url or f"http://{cfg.http[0]}:{cfg.http[1]}"
    return RemoteApi(url, a.token)


def _remote(a: argparse.Namespace, cfg: Config) -> None:
    """Run a verb against a node's API (`--url`; always for `calls --live` and `hangup`,
    which only the serving process can answer). The token's role decides the masking."""
    api = _api_for(a, cfg)
    cmd = a.cmd
    if cmd == "hangup":
        out = api.call("DELETE", f"/v1/calls/live/{_seg(a.call_id)}")
        _emit(a, out, [out], ("id", "ended", "end_reason", "node"))
    elif cmd == "calls" and a.live:
        out = api.call("GET", "/v1/calls/live")
        _emit(a, out, out["calls"], _LCOLS)
    elif cmd in ("calls", "messages"):
        q = {"x": a.x, "binding": a.binding, "out_id": a.out_id, "limit": a.limit,
             "since": _iso_or_none(_when(a, "since")), "until": _iso_or_none(_when(a, "until"))}
        if cmd == "calls":
            q.update(party=a.party, outcome=a.outcome)
        out = api.call("GET", f"/v1/{cmd}", q)
        _emit(a, out, out[cmd], _CCOLS if cmd == "calls" else _MCOLS)
    elif cmd == "bindings":
        out = api.call("GET", "/v1/bindings", {"x": a.x, "state": a.state, "out_id": a.out_id,
                                                "limit": a.limit})
        _emit(a, out, out["bindings"], _BCOLS)
    elif cmd == "bind":
        out = api.call("POST", "/v1/bindings", body=_bind_body(a))
        _emit(a, out, [out], _BCOLS)
    elif cmd in ("freeze", "release"):
        path = f"/v1/bindings/{_seg(a.id)}"
        out = (api.call("POST", path + "/freeze") if cmd == "freeze"
               else api.call("DELETE", path))
        _emit(a, out, [out], _BCOLS)
    elif cmd == "numbers":
        if a.numbers_cmd == "add":
            out = api.call("POST", "/v1/numbers", body={"numbers": a.numbers, "area": a.area}
                           if a.area else {"numbers": a.numbers})
            _emit(a, out, [out], ("added", "already_present"))
        else:
            out = api.call("GET", "/v1/numbers", {"limit": 1000})
            _emit(a, out, out["numbers"], ("number", "area", "mode", "bindings", "state"))
    elif cmd == "policies":
        _remote_policies(a, api)
    elif cmd == "blocklist":
        _remote_blocklist(a, api)
    else:  # pragma: no cover - the parser knows every verb
        raise BadRequest(f"{cmd} has no remote form")


def _seg(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def _iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def _remote_policies(a: argparse.Namespace, api: RemoteApi) -> None:
    cmd = a.policies_cmd
    if cmd is None:
        out = api.call("GET", "/v1/policies")
        docs = out["policies"]
    else:
        path = f"/v1/policies/{_seg(a.name)}"
        if cmd == "set":
            raw = a.policy
            if raw.startswith("@"):
                with open(raw[1:], encoding="utf-8") as f:
                    raw = f.read()
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise BadRequest(f"the policy is not JSON: {exc}", "invalid_policy") from None
            out = api.call("PUT", path, body=body)
        else:
            out = api.call("GET" if cmd == "show" else "DELETE", path)
        docs = [out] if cmd != "rm" else []
    rows = [{"name": d.get("name"), "rules": json.dumps({k: v for k, v in d.items()
                                                        if k != "name"})} for d in docs]
    _emit(a, out, rows, ("name", "rules"))


def _remote_blocklist(a: argparse.Namespace, api: RemoteApi) -> None:
    cmd = a.blocklist_cmd
    if cmd == "add":
        body: dict[str, Any] = {"reason": a.reason}
        until = _ahead(a.until)
        if until is not None:
            body["until"] = until
        if a.x:
            body["x"] = a.x
        api.call("PUT", f"/v1/blocklist/{_seg(a.number)}", body=body)
    elif cmd == "rm":
        api.call("DELETE", f"/v1/blocklist/{_seg(a.number)}", {"x": a.x})
    out = api.call("GET", "/v1/blocklist")
    _emit(a, out, out["blocklist"], ("number", "x", "reason", "until", "created_at"))


def _store_notice(a: argparse.Namespace, cfg: Config) -> None:
    """Say which store a verb opens when nobody chose it (run from another folder, the
    default ./var/relay.db is not the one the switch writes)."""
    if getattr(a, "store", None) or getattr(a, "config", None) or os.environ.get("RELAY_STORE"):
        return
    where = cfg.store
    if cfg.store.startswith("sqlite:///"):
        path = os.path.abspath(cfg.store[len("sqlite:///"):])
        where = path + ("" if os.path.exists(path) else
                        " (no such file: nothing is stored here; pass --store, --config "
                        "or --url)")
    sys.stderr.write(f"relay: store {where}\n")


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
    from recordings.cli import export_recording, list_recordings, show_recording

    root = a.recordings or cfg.recordings
    if a.rec_cmd == "ls":
        since = _when(a, "since")
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
        if a.cmd in ("serve", "config"):
            cfg = load_config(a.config, _serve_overrides(a))
        else:
            cfg = load_config(a.config, {"store": getattr(a, "store", None)})
    except ConfigError as exc:
        sys.stderr.write(f"relay: config error: {exc}\n")
        return 2
    if a.cmd == "config":
        return _config(a, cfg)
    from .logfmt import configure

    level = cfg.log_level.upper() if a.cmd == "serve" else "WARNING"
    configure(level, getattr(a, "log_format", "text"))
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
        if getattr(a, "url", None) or a.cmd == "hangup" or getattr(a, "live", False):
            _remote(a, cfg)
            return 0
        _store_notice(a, cfg)
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


def _config(a: argparse.Namespace, cfg: Config) -> int:
    """`relay config check|show` (the file already loaded and validated)."""
    from .settings import effective, to_toml

    if a.config_cmd == "check":
        sys.stdout.write("ok\n")
        return 0
    data = effective(cfg)
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if a.json else to_toml(data))
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
    except ConfigError as exc:  # found only at start (a TLS key that will not load, ...)
        sys.stderr.write(f"relay: config error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
