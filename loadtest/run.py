"""`python -m loadtest replay` and `python -m loadtest profile`: the load tester's tool.

    python -m loadtest replay --records FILE|URL [--messages FILE|URL --smpp HOST:PORT]
        --target HOST:PORT --api URL [--token T] --callee HOST:PORT [--speed F]
        [--engine native|sipp] [--no-setup] [--rtp] [--direct] --report DIR
    python -m loadtest profile --profile FILE|"hold 10 5s; hold-time 1s" --target ...
        (same options; --smpp HOST:PORT --smpp-account ID:PW for SMS over SMPP)

The target is any SIP switch: the setup step (numbers and bindings through the relay's
HTTP API) is skipped with --no-setup or without --api. --direct first runs the same
traffic against a SIPp UAS of the tool's own (no switch in between: the anchor) and puts
the ratio in the report. A live progress line goes to stderr; Ctrl-C stops placing
calls, ends those up, and writes a partial report. Exit status: 0 when every attempt
got the answer it expected and nothing leaked, 1 otherwise, 130 after Ctrl-C, 2 on bad
input.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .common import free_port, percentile
from .native import NativeEngine, engine_cpu
from .plan import Plan, PlanError, describe, from_records, load_messages, load_records, next_cursor
from .profile import ProfileError, generate, parse_profile
from .report import Result, build_report, write_report

__all__ = ["main_profile", "main_replay", "setup_target"]


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def _api(base: str, method: str, path: str, body: Any = None, token: str | None = None
         ) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def read_source(src: str, key: str, token: str | None = None, max_pages: int = 10000
                ) -> str:
    """Records from a file, stdin (`-`) or an API URL (`http://node:8080/v1/calls?since=1h`):
    from a URL every page is read, following the answer's `next` cursor."""
    if src == "-":
        return sys.stdin.read()
    if not src.startswith(("http://", "https://")):
        return Path(src).read_text()
    rows: list[Any] = []
    url = src
    for _ in range(max_pages):
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
        data = json.loads(text)
        page = data.get(key) if isinstance(data, dict) else None
        if not isinstance(page, list):
            raise PlanError(f"{url}: expected {{\"{key}\": [...]}}")
        rows += page
        nxt = next_cursor(text)
        if nxt is None:
            break
        parts = urllib.parse.urlsplit(src)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "cursor"]
        url = urllib.parse.urlunsplit(parts._replace(
            query=urllib.parse.urlencode([*query, ("cursor", nxt)])))
    return json.dumps({key: rows})


def setup_target(plan: Plan, api: str, token: str | None = None,
                 later: list[tuple[float, str]] | None = None) -> dict[str, int]:
    """Numbers and bindings the plan needs, through the target's HTTP API. An X that is
    already bound (a rerun) is left as it is; frozen ones are frozen after creation, or,
    with a `freeze_at`, listed in `later` as (offset, binding id) for the run to freeze."""
    xs = sorted({b.x for b in plan.bindings})
    for i in range(0, len(xs), 500):
        _api(api, "POST", "/v1/numbers", {"numbers": xs[i:i + 500]}, token)
    made = frozen = kept = 0
    for b in plan.bindings:
        try:
            body: dict[str, Any] = {"mode": b.mode, "b": b.b, "x": b.x, "ttl": 86400,
                                    "record": b.record}
            if b.a:
                body["a"] = b.a
            if b.ext is not None:
                body["ext"] = b.ext
            got = _api(api, "POST", "/v1/bindings", body, token)
        except urllib.error.HTTPError as exc:
            if exc.code == 409:
                kept += 1
                continue
            raise SystemExit(f"setup: {b.mode} binding {b.x}: HTTP {exc.code} "
                             f"{exc.read().decode(errors='replace')[:200]}") from None
        made += 1
        if b.frozen and b.freeze_at is not None and later is not None:
            later.append((b.freeze_at, got["id"]))
        elif b.frozen:
            _api(api, "POST", f"/v1/bindings/{got['id']}/freeze", {}, token)
            frozen += 1
    return {"numbers": len(xs), "bindings_made": made, "frozen": frozen, "kept": kept,
            "frozen_during_run": len(later or [])}


class Freezer(threading.Thread):
    """Freezes bindings at their offsets while the run goes on (through the API)."""

    def __init__(self, api: str, token: str | None, later: list[tuple[float, str]]) -> None:
        super().__init__(name="freezer", daemon=True)
        self.api, self.token, self.later = api, token, sorted(later)
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        t0 = time.monotonic()
        for at, bid in self.later:
            if self.stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            try:
                _api(self.api, "POST", f"/v1/bindings/{bid}/freeze", {}, self.token)
            except (OSError, ValueError) as exc:  # reported, never fatal
                self.errors.append(f"{bid}: {exc}")


class Progress:
    """The live line on stderr: attempted, completed, refused, failed, rate, p99 setup."""

    def __init__(self, engine: NativeEngine, total: int, stream: Any = sys.stderr) -> None:
        self.engine = engine
        self.total = total
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def line(self) -> str:
        c = self.engine.counters
        now = time.monotonic()
        recent = sum(1 for t in c.placed_at if now - t <= 5.0)
        p99 = percentile(list(c.setups), 99) if c.setups else float("nan")
        return (f"attempted {c.attempted}/{self.total}  completed {c.completed}  "
                f"refused {c.refused}  failed {c.failed}  rate {recent / 5.0:.1f}/s  "
                f"p99 setup {p99:.1f} ms")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.emit()

    def emit(self, end: str = "") -> None:
        text = self.line()
        self.stream.write(("\r" + text + "\x1b[K" if self.tty else text + "\n") + end)
        self.stream.flush()


async def _run(engine: NativeEngine, total: int, quiet: bool) -> tuple[float, bool]:
    """Run `engine` with progress and SIGINT handling: (duration s, stopped early)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()
        sys.stderr.write("\nstopping: ending the calls that are up, then a partial report\n")

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    prog = Progress(engine, total)
    ptask = None if quiet else asyncio.ensure_future(prog.run())
    try:
        await engine.run(stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if ptask is not None:
            ptask.cancel()
            prog.emit("\n" if prog.tty else "")
    return time.monotonic() - engine.t0, interrupted


def _loop_run(coro: Any) -> Any:
    """asyncio.run on uvloop when it is installed (a dependency on Linux): about a third
    less CPU per call for the native engine."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def _engine_run(plan: Plan, target: tuple[str, int], callee: tuple[str, int], *,
                rtp: bool, check_leaks: bool, quiet: bool, engine: str
                ) -> tuple[list[Result], float, bool, dict[str, Any]]:
    if not plan.attempts:  # messages only
        return [], 0.0, False, {}
    if engine == "sipp":
        from .sipp_engine import SippEngine

        sipp = SippEngine(plan, target, callee)
        return sipp.run(quiet=quiet)
    eng = NativeEngine(plan, target, callee, rtp=rtp, check_leaks=check_leaks)
    cpu0 = engine_cpu()
    duration, interrupted = _loop_run(_run(eng, len(plan.attempts), quiet))
    cpu = engine_cpu() - cpu0
    extra = {"engine_cpu_s": round(cpu, 3),
             "engine_cpu_ms_per_attempt": round(1000 * cpu / max(1, len(eng.results)), 3)}
    return eng.results, duration, interrupted, extra


def _direct(plan: Plan, engine: str, rtp: bool, quiet: bool) -> dict[str, Any]:
    """The same attempts straight to a SIPp UAS of ours: the anchor of this run."""
    from .sipp_engine import SippUas

    port = free_port(socket.SOCK_DGRAM)
    work = Path(tempfile.mkdtemp(prefix="loadtest-direct-"))
    uas = SippUas(work, port)
    # SIPp's UAS answers every INVITE with 200 and waits for the caller's BYE.
    direct = Plan([dataclasses.replace(a, expect_code=200, callee=None, hangup_by="caller",
                                       cancel_after=None, answer_delay=0.0)
                   for a in plan.attempts], [], [])
    try:
        res, dur, _, _ = _engine_run(direct, ("127.0.0.1", port), ("127.0.0.1",
                                     free_port(socket.SOCK_DGRAM)), rtp=False,
                                     check_leaks=False, quiet=quiet, engine=engine)
    finally:
        uas.stop()
    rep = build_report(res, duration_s=dur, meta={})
    return {"target": f"SIPp UAS 127.0.0.1:{port}", "attempted": rep["attempted"],
            "completed": rep["completed"], "failed": rep["failed"],
            "setup_ms": rep["setup_ms"], "rate": rep["rate"],
            "completed_rate": rep["completed_rate"]}


def _common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--target", type=_hostport, default=None,
                    help="the switch's SIP address (HOST:PORT, UDP)")
    ap.add_argument("--callee", type=_hostport, default=None,
                    help="where the switch sends B-legs; the tool answers there")
    ap.add_argument("--local-relay", action="store_true",
                    help="start a `relay serve` of the run's own (SQLite in a temporary "
                         "folder, recorded bindings, in-process media) and aim at it")
    ap.add_argument("--relay-arg", action="append", default=[],
                    help="with --local-relay: an extra `relay serve` argument (repeatable)")
    ap.add_argument("--api", default="", help="the relay's HTTP API for the setup step")
    ap.add_argument("--token", default=None, help="bearer token for --api (admin)")
    ap.add_argument("--no-setup", action="store_true",
                    help="the numbers and bindings exist already (or the switch is not a relay)")
    ap.add_argument("--engine", choices=("native", "sipp"), default="native")
    ap.add_argument("--rtp", action="store_true",
                    help="native engine: send and check G.711 tones on every answered call")
    ap.add_argument("--direct", action="store_true",
                    help="also run the traffic against a SIPp UAS directly (the anchor)")
    ap.add_argument("--no-leak-check", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ap.add_argument("--report", required=True, help="folder for report.json, .html, plots")


def _smpp_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--smpp", type=_hostport, default=None,
                    help="the relay's SMPP address, for SMS traffic (profile `sms`, replay "
                         "--messages)")
    ap.add_argument("--smpp-account", default="loadtest:loadtest",
                    help="SYSTEM_ID:PASSWORD the relay lets bind (relay serve --smpp-account)")


def _media_block() -> str:
    """A random 6,000-port block below Linux's ephemeral range: several runs (and other
    relays) on one machine rarely collide, and a collision shows as 503 cause 47."""
    base = random.randrange(10000, 26000, 1000)
    return f"{base}-{base + 5999}"


def _local_relay(a: argparse.Namespace, smpp: bool) -> Any:
    """--local-relay: a `relay serve` child on free ports, B-legs to --callee."""
    from .common import RelayChild

    work = tempfile.mkdtemp(prefix="loadtest-relay-")
    if a.callee is None:
        a.callee = ("127.0.0.1", free_port(socket.SOCK_DGRAM))
    extra = ["--outbound", f"{a.callee[0]}:{a.callee[1]}", "--trunk", "127.0.0.0/8",
             "--media-ports", _media_block(), "--recordings", f"{work}/recordings"]
    if smpp:
        a.smpp = ("127.0.0.1", free_port())
        extra += ["--smpp", f"127.0.0.1:{a.smpp[1]}", "--smpp-account", a.smpp_account]
    child = RelayChild(f"sqlite:///{work}/relay.db", work, [*extra, *a.relay_arg],
                       new_session=True)
    a.target = ("127.0.0.1", child.sip)
    a.api = child.base
    return child


def _check_targets(a: argparse.Namespace) -> str:
    if a.target is None or a.callee is None:
        return "give --target and --callee (or --local-relay)"
    return ""


def _finish(plan: Plan, a: argparse.Namespace, mode: str, extra_meta: dict[str, Any],
            sms: Any = None) -> int:
    setup: dict[str, Any] = {}
    later: list[tuple[float, str]] = []
    if a.api and not a.no_setup:
        try:
            setup = setup_target(plan, a.api, a.token, later)
        except (OSError, urllib.error.URLError) as exc:
            sys.stderr.write(f"setup through {a.api} failed: {exc}\n")
            return 2
        time.sleep(0.3)  # the relay's table follows the store within milliseconds
    direct = _direct(plan, a.engine, a.rtp, a.quiet) if a.direct else None
    freezer = Freezer(a.api, a.token, later) if later else None
    if sms is not None:
        sms.start()
    if freezer is not None:
        freezer.start()
    try:
        results, duration, interrupted, eng_meta = _engine_run(
            plan, a.target, a.callee, rtp=a.rtp, check_leaks=not a.no_leak_check,
            quiet=a.quiet, engine=a.engine)
    except BaseException:
        if sms is not None:
            sms.stop.set()
        if freezer is not None:
            freezer.stop.set()
        raise
    if sms is not None:
        if interrupted:
            sms.stop.set()
        try:  # the messages may go on after the last call (a replay's)
            sms.join(sms.span() + 60)
        except KeyboardInterrupt:
            sys.stderr.write("\nstopping: no more messages, then a partial report\n")
            sms.stop.set()
            sms.join(15)
            interrupted = True
    if freezer is not None:  # after the messages too: a replay of texts only has no calls
        freezer.stop.set()
        if freezer.errors:
            setup["freeze_errors"] = freezer.errors[:20]
    meta: dict[str, Any] = {"mode": mode, "engine": a.engine,
                            "target": f"{a.target[0]}:{a.target[1]}",
                            "callee": f"{a.callee[0]}:{a.callee[1]}", "setup": setup,
                            "plan": describe(plan),
                            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                            **eng_meta, **extra_meta}
    rep = build_report(results, duration_s=duration, meta=meta, partial=interrupted)
    if sms is not None:
        rep["sms"] = sms.report()
        rep["leaks"] += [{"record": "sms", "x": None, "leak": t} for t in rep["sms"]["leaks"]]
    if direct is not None:
        rep["direct"] = direct
        d, s = direct["setup_ms"], rep["setup_ms"]
        rep["ratio_vs_direct"] = {
            k: (round(s[k] / d[k], 3) if s[k] and d[k] else None) for k in ("p50", "p99")}
        rep["ratio_vs_direct"]["completed_rate"] = (
            round(rep["completed_rate"] / direct["completed_rate"], 3)
            if direct["completed_rate"] else None)
    paths = write_report(rep, Path(a.report))
    s = rep["setup_ms"]
    sys.stdout.write(
        f"{rep['attempted']} attempted, {rep['completed']} completed, refused "
        f"{rep['refused'] or 0}, {rep['failed']} failed in {rep['duration_s']:.1f} s; "
        f"setup p50/p95/p99 {s['p50']}/{s['p95']}/{s['p99']} ms; "
        f"{rep['expected_mismatches']} unexpected answers; {len(rep['leaks'])} leaks"
        f"{' (PARTIAL)' if interrupted else ''}\n"
        + (f"sms: {rep['sms']['submitted']} submitted, {rep['sms']['accepted']} accepted, "
           f"{rep['sms']['delivered']} delivered, "
           f"{rep['sms'].get('expected_mismatches', 0)} unexpected statuses\n"
           if "sms" in rep else "") + f"report: {paths[1]}\n")
    if interrupted:
        return 130
    sms_bad = rep.get("sms", {}).get("expected_mismatches", 0)
    return 0 if not rep["leaks"] and not rep["expected_mismatches"] and not sms_bad else 1


def main_replay(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default=None,
                    help="what `relay calls --json` prints, a /v1/calls answer (- : stdin), "
                         "or a /v1/calls URL (every page is read; --token)")
    ap.add_argument("--messages", default=None,
                    help="what `relay messages --json` prints, a /v1/messages answer or URL: "
                         "each message is submitted over SMPP (--smpp) at its offset")
    ap.add_argument("--speed", type=float, default=1.0, help="time scale (2: twice as fast)")
    _smpp_args(ap)
    _common_args(ap)
    a = ap.parse_args(argv)
    child = _local_relay(a, bool(a.messages)) if a.local_relay else None
    try:
        return _replay(a)
    finally:
        if child is not None:
            child.stop()


def _replay(a: argparse.Namespace) -> int:
    if err := _check_targets(a):
        sys.stderr.write(f"loadtest replay: {err}\n")
        return 2
    try:
        if not a.records and not a.messages:
            raise PlanError("give --records (calls), --messages (SMS) or both")
        text = read_source(a.records, "calls", a.token) if a.records else '{"calls": []}'
        msgs = (load_messages(read_source(a.messages, "messages", a.token))
                if a.messages else None)
        plan = from_records(load_records(text), speed=a.speed, messages=msgs)
    except (OSError, ValueError, PlanError) as exc:
        sys.stderr.write(f"loadtest replay: {exc}\n")
        return 2
    sms = None
    if plan.messages:
        if a.smpp is None:
            sys.stderr.write("loadtest replay: --messages needs --smpp HOST:PORT\n")
            return 2
        from .sms import SmsRun

        sms = SmsRun(a.smpp, a.smpp_account, plan.bindings, 0.0, 0.0, plan.messages)
    return _finish(plan, a, "replay", {"records": a.records, "messages": a.messages,
                                       "speed": a.speed}, sms)


def main_profile(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="loadtest profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="a profile file, or its clauses inline")
    _smpp_args(ap)
    _common_args(ap)
    a = ap.parse_args(argv)
    try:  # bad input is said before anything starts
        path = Path(a.profile)
        parse_profile(path.read_text() if "\n" not in a.profile and path.is_file()
                      else a.profile)
    except (OSError, ProfileError) as exc:
        sys.stderr.write(f"loadtest profile: {exc}\n")
        return 2
    child = _local_relay(a, _has_sms(a.profile)) if a.local_relay else None
    try:
        return _profile(a)
    finally:
        if child is not None:
            child.stop()


def _has_sms(profile: str) -> bool:
    try:
        path = Path(profile)
        text = path.read_text() if "\n" not in profile and path.is_file() else profile
        return parse_profile(text).sms_rate > 0
    except (OSError, ProfileError):
        return False


def _profile(a: argparse.Namespace) -> int:
    if err := _check_targets(a):
        sys.stderr.write(f"loadtest profile: {err}\n")
        return 2
    try:
        path = Path(a.profile)
        text = path.read_text() if "\n" not in a.profile and path.is_file() else a.profile
        prof = parse_profile(text)
    except (OSError, ProfileError) as exc:
        sys.stderr.write(f"loadtest profile: {exc}\n")
        return 2
    plan = generate(prof)
    sms = None
    if prof.sms_rate > 0:
        if a.smpp is None:
            sys.stderr.write("loadtest profile: the profile has `sms`: give --smpp HOST:PORT\n")
            return 2
        from .sms import SmsRun

        sms = SmsRun(a.smpp, a.smpp_account, plan.bindings, prof.sms_rate, prof.seconds)
    return _finish(plan, a, "profile", {"profile": text, "seconds": prof.seconds}, sms)
