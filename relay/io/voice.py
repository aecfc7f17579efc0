"""Wires the voice path into a Node: media backend, Switch, SIP sockets, API, stop.

Tunables live in relay.toml (see README "Configuration" and DESIGN.md):

    [sip]
    advertise = "198.51.100.7"   # address put in Via/Contact/From (default: the SIP host)
    ring_timeout = 60            # seconds before an unanswered callee is CANCELled (480)
    max_call_seconds = 7200      # when the binding sets none
    max_calls = 5000             # concurrent calls; beyond: 503 + Retry-After
    cps = 0                      # new calls per second admitted (0: no limit)
    t1 = 0.5                     # RFC 3261 T1 (T2 = 8*T1 capped at 4 s)
    drain_seconds = 10           # on SIGTERM: wait this long for live calls, then BYE
    hangup_on_freeze = false     # a call in progress when its binding freezes continues
    tcp = true                   # also listen on TCP at the SIP address
    gc_threshold = [2000, 1000000, 1000000]  # process-wide GC thresholds ([]: Python's)
    gc_full_seconds = 3600       # a full collection this often (0: never; see _tune_gc)
    announce_refusals = true     # unknown or frozen X hears why in 183 early media first
    no_early_media = []          # trunks (CIDRs) that get refusals unannounced
    symmetric = []               # trunks (CIDRs, behind NAT) sent in-dialog requests at
                                 # their source address, not their Contact / route set
    probe_interval = 30          # OPTIONS to each [[sip.trunk]] this often (0: never)
    dns_servers = []             # for trunks named by DNS name (default: resolv.conf)
    dns_refresh = 30             # seconds between lookups of those names (TTLs cached)
    session_expires = 1800       # RFC 4028 session interval per leg (0: no timers offered)
    min_se = 90                  # a caller asking for less gets 422 (RFC 4028 floor: 90)
    min_se_floor = 90            # test knob: lets min_se go below RFC 4028's 90 s floor,
                                 # so a test can watch a session expire in seconds
    ivr_tries = 3                # AXE: extensions a caller may key before the hang-up
    ivr_first_digit = 10         # seconds after the prompt for the first digit
    ivr_pause = 3                # a pause this long ends the extension
    ivr_record = true            # record AXE calls from the prompt on (binding unknown yet)
    announce_limit = 8           # the longest an announcement holds a refusal back
    # Overload control (relay/b2bua/overload.py): new INVITEs are shed with 503 and
    # Retry-After when SIP waits in the socket, or the loop lags, longer than this;
    # in-dialog requests (ACK, BYE, re-INVITE) are never shed.
    overload_delay_ms = 100      # the delay target (0: off; max_calls and cps still apply)
    overload_max_jobs = 2000     # media jobs in flight beyond which new calls are shed (0: off)
    overload_retry_after = 5     # seconds, in the 503
    overload_sample = 100        # one call record per this many 503s (the rest: a counter)
    overload_force_after = 0     # test knob: admit this many calls, then shed every new one
    # Hostile networks (issue 13; relay/io/sip.py StreamLimits, relay/sip/pike.py):
    tcp_max_connections = 4096   # SIP TCP + TLS connections in all
    tcp_max_per_source = 64      # from one IP address
    tcp_idle_seconds = 120       # a connection silent this long is closed (0: never)
    tcp_message_seconds = 10     # a message must be complete this long after its first byte
                                 # (and a new connection's first one after the connect)
    tcp_trunks_only = false      # refuse TCP/TLS connections from outside [relay] trunks
    tcp_fd_reserve = 0           # descriptors never used for SIP streams (0: 1/4 of the limit)
    rate_limit = 40              # datagrams per source (not a trunk) per rate_window (0: off)
    rate_window = 2              # seconds
    rate_ban = 60                # seconds a source over the limit is dropped unanswered
    stateless_refusals = true    # refusals outside a dialog: once, no 100 Trying, cached
    tls_cert = "/etc/relay/sip.pem"  # with --sip-tls / [relay] sip_tls: certificate chain
    tls_key = "/etc/relay/sip.key"   # and its private key (TLS 1.2 or later)

    [[sip.trunk]]                # outbound trunks (none: the one --outbound address)
    name = "carrier-a"           # in call records ("trunk") and metrics
    host = "192.0.2.50"          # an address, or a DNS name (RFC 3263: NAPTR/SRV/A)
    port = 5060                  # optional with a DNS name (SRV gives it)
    priority = 1                 # lower first; a call fails over to the next trunk on
    weight = 10                  # 408, 503 or no answer before anything rang

    [media]
    bind = "127.0.0.1"           # RTP sockets (default: the SIP host)
    advertise = "198.51.100.7"   # c= address in the SDP we send (default: [sip] advertise)
    timeout = 60                 # no RTP/RTCP either way this long on an answered call:
                                 # BYE both legs, cause 41, end_reason "media_timeout" (0: off)
    backend = "inprocess"        # or "rtpengine": media handed to rtpengine over ng
    rtpengine = "127.0.0.1:2223" # its --listen-ng (with backend = "rtpengine")
    rtpengine_dtmf = "127.0.0.1:2224"  # where we hear its --dtmf-log-dest (digits; unset: none)
    language = "en"              # the prompt set the relay speaks (shipped: en, cmn)
    prompts = "/srv/prompts"     # a folder of <language>/<name>.wav replacing the shipped set
    finish_workers = 1           # processes turning spools into WAVs (0: a thread here,
                                 # which holds the GIL against the event loop)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.b2bua.callmap import CallMap, Settings
from relay.b2bua.overload import OverloadConfig, OverloadGuard
from relay.b2bua.trunks import Trunk, parse_trunks
from relay.config import Config, ConfigError
from relay.contacts import contact_from_call
from relay.guard import for_node
from relay.media.backend import MediaBackend
from relay.media.prompts import PromptSet
from relay.settings import SipSection
from relay.sip import TimerConfig
from relay.sip.digest import credentials_from
from relay.sip.dns import A, DnsError
from relay.subsystem import Stop, Subsystem

from .hook import DecisionHook
from .sip import SipServer, StreamLimits, raise_fd_limit, tls_context

if TYPE_CHECKING:
    from aiohttp import web

    from relay.app import Node

__all__ = ["VoiceSubsystem"]

log = logging.getLogger("relay.voice")


def settings_from(config: Config, port: int) -> tuple[Settings, SipSection]:
    """Switch settings from `Config` (its typed `[sip]` section) and the bound port."""
    sip = config.sections.sip
    host = config.sip[0]
    advertise = sip.advertise or (host if host not in ("0.0.0.0", "::", "") else "127.0.0.1")
    t1 = sip.t1
    s = Settings(
        host=advertise, port=port, outbound=config.outbound, trunks=tuple(config.trunks),
        default_cc=config.default_cc,
        ring_timeout=sip.ring_timeout,
        max_call_seconds=sip.max_call_seconds,
        max_calls=sip.max_calls,
        cps=sip.cps,
        hangup_on_freeze=sip.hangup_on_freeze,
        trunk_auth=_credentials(sip),  # digest for the trunk's 401/407 (never logged)
        announce_refusals=sip.announce_refusals,
        no_early_media=sip.no_early_media,
        symmetric=sip.symmetric,
        outbound_trunks=_trunks(sip),
        probe_interval=sip.probe_interval,
        session_expires=sip.session_expires,
        min_se=sip.min_se,
        min_se_floor=sip.min_se_floor,
        ivr_tries=sip.ivr_tries,
        ivr_first_digit=sip.ivr_first_digit,
        ivr_pause=sip.ivr_pause,
        ivr_record=sip.ivr_record,
        announce_limit=sip.announce_limit,
        counter_fail_open=config.counter_fail == "open",
        hook=bool(config.hook_url),
        hook_fallback_allow=config.hook_fallback == "allow",
        timers=TimerConfig(t1=t1, t2=min(4.0, 8 * t1), t4=min(5.0, 10 * t1),
                           timer_d=max(32.0 * t1 / 0.5, 0.0)),
        stateless_refusals=sip.stateless_refusals,
        rate_limit=sip.rate_limit,
        rate_window=sip.rate_window,
        rate_ban=sip.rate_ban,
        overload=OverloadGuard(OverloadConfig(
            delay_ms=sip.overload_delay_ms,
            max_jobs=sip.overload_max_jobs,
            retry_after=sip.overload_retry_after,
            sample_every=sip.overload_sample,
            force_after=sip.overload_force_after)),
    )
    return s, sip


def _trunks(sip: SipSection) -> tuple[Trunk, ...]:
    """`[[sip.trunk]]` tables (relay.b2bua.trunks); a bad one stops the relay, named."""
    try:
        return tuple(parse_trunks(sip.trunk_tables()))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _credentials(sip: SipSection) -> Any:
    """`[sip] trunk_auth_*` as digest Credentials (None when unset); a half-set or
    malformed entry is a configuration error at start, not a surprise on a call."""
    try:
        return credentials_from(sip.auth_table())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def stream_limits(sip: SipSection) -> StreamLimits:
    """`[sip] tcp_*`: the bounds on SIP over TCP and TLS."""
    return StreamLimits(
        max_connections=sip.tcp_max_connections,
        max_per_source=sip.tcp_max_per_source,
        idle_seconds=sip.tcp_idle_seconds,
        message_seconds=sip.tcp_message_seconds,
        trunks_only=sip.tcp_trunks_only,
        fd_reserve=sip.tcp_fd_reserve)


class VoiceSubsystem(Subsystem):
    """The SIP B2BUA and its media backend; `/v1/calls` (records and live calls)."""

    name = "voice"
    sections = ("sip", "media", "guard")

    def add_routes(self, node: Node, app: web.Application) -> None:
        from relay.api.calls import add_call_routes

        add_call_routes(app)

    async def run(self, node: Node) -> Stop:
        return await _start(node)


async def _start(node: Node) -> Stop:
    """Start the SIP B2BUA and its media backend on `node`; its graceful stop."""
    cfg = node.config
    soft, hard = raise_fd_limit()
    log.info("file descriptors: soft limit %d (hard %d)", soft, hard)
    udp = SipServer.bind_udp(cfg.sip[0], cfg.sip[1])
    port = udp.getsockname()[1]
    settings, sip = settings_from(cfg, port)
    settings.guard = for_node(node)  # the egress leak guard (relay/guard.py), shared with SMS
    media_cfg = cfg.sections.media
    media_timeout = media_cfg.timeout
    from relay.recordings_config import recordings_settings

    key = recordings_settings(cfg).manifest_signing_keys()[0]
    from relay.media.registry import BackendContext, open_backend

    media = await open_backend(media_cfg.backend, BackendContext(
        cfg, media_cfg, settings.host,
        poll=min(5.0, media_timeout / 4) if media_timeout > 0 else 0, manifest_key=key))
    # Both backends seal each call folder as they finish it, before its spools go: a
    # crash's leftovers are finished and sealed here.
    with contextlib.suppress(OSError):
        await media.finish_pending()
    prompts = PromptSet(media_cfg.language,
                        Path(media_cfg.prompts) if media_cfg.prompts else None)
    prompts.check()  # a missing prompt is a start-up error, never a mid-call surprise
    switch = CallMap(settings, node.table, policies=node.policies)
    writer = node.record_writer
    hub = node.events
    contacts = node.contact_writer

    from relay.calllog import CallLog

    call_log = CallLog(node.metrics)

    from relay.api.calls import node_id

    me = node_id(node)

    def record(rec: dict[str, Any]) -> None:
        rec["node"] = me  # which node (worker) handled it: records of a cluster mix
        writer.submit("call", rec)
        call_log.submit(rec)  # one masked INFO line, refusal reasons, latency histograms
        contacts.submit(contact_from_call(rec))  # the caller's score inputs

    cfg_ = node.config
    hook = (DecisionHook(cfg_.hook_url, cfg_.hook_secret, cfg_.hook_timeout)
            if cfg_.hook_url else None)
    server = SipServer(switch, media, record, prompts=prompts.path,
                       scores=node.scores, counter_timeout=cfg_.counter_timeout, hook=hook,
                       events=node.live_calls.sink(hub.on_call_event if hub else None),
                       limits=stream_limits(sip))
    sip_tls = getattr(cfg, "sip_tls", None)
    ctx = None
    if sip_tls is not None:
        if not sip.tls_cert or not sip.tls_key:
            raise ConfigError("SIP over TLS needs [sip] tls_cert and tls_key")
        try:
            ctx = tls_context(sip.tls_cert, sip.tls_key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"[sip] tls_cert/tls_key: {exc}") from None
    await server.start(udp, tcp=sip.tcp)
    if sip_tls is not None and ctx is not None:
        tls_port = await server.start_tls(sip_tls[0], sip_tls[1], ctx)
        switch.wire.tls_port = tls_port  # Via and Contact toward callers on TLS
        log.info("SIP over TLS on %s:%s", sip_tls[0], tls_port)
    node.voice = server
    _metrics(node, switch, server, media)

    full_every = sip.gc_full_seconds
    tuned = _tune_gc(list(sip.gc_threshold))

    async def sweeper() -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            if settings.hangup_on_freeze:
                switch.sweep(time.time())
                server.flush()
            if media_timeout > 0:
                idle = media.idle_calls(media_timeout)
                if idle and switch.media_timeout(idle, time.time()):
                    server.flush()
            if tuned and full_every > 0 and time.monotonic() - last_full >= full_every:
                started = time.perf_counter()
                found = gc.collect()
                last_full = time.monotonic()
                log.info("full garbage collection: %d objects in cycles, %.0f ms",
                         found, (time.perf_counter() - started) * 1000)

    task = asyncio.create_task(sweeper(), name="voice-sweeper")
    resolving = await _resolve_trunks(switch, sip)
    drain_limit = sip.drain_seconds

    async def stop() -> None:
        # Graceful stop: refuse new INVITEs (503), let live calls end for a while,
        # then BYE what is left and let the BYEs and media releases go out.
        switch.draining = True
        deadline = time.monotonic() + drain_limit
        while switch.live and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if switch.live:
            log.info("drain limit reached: ending %d calls", switch.hangup_all(time.time()))
            server.flush()
        end = time.monotonic() + 2.0
        while (switch.calls or server.jobs) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        task.cancel()
        if resolving is not None:
            resolving.cancel()
        await server.close()
        await media.close()
        pool = getattr(media, "executor", None)  # the finishing processes, if any
        if pool is not None:
            pool.shutdown(wait=True)
        if hook is not None:
            await hook.close()

    log.info("SIP on %s:%s (advertised as %s), outbound %s:%s", cfg.sip[0], port,
             settings.host, *cfg.outbound)
    return stop


async def _resolve_trunks(switch: CallMap, sip: SipSection
                          ) -> asyncio.Task[None] | None:
    """Trunks named by DNS name get their addresses here (RFC 3263: NAPTR, SRV, A),
    once before the first call and then every `dns_refresh` s in the background; the
    call path only reads what the last lookup found. A failed refresh keeps it."""
    named = [t for t in switch.trunks.trunks if not t.numeric]
    if not named:
        return None
    from .dns import DnsUnavailable, Resolver

    servers = [_host_port(v, 53) for v in sip.dns_servers] or None
    resolver = Resolver(servers, timeout=sip.dns_timeout)
    every = sip.dns_refresh

    async def once() -> None:
        for trunk in named:
            try:
                targets = await resolver.resolve_sip(trunk.host, trunk.port, None,
                                                     transports=("UDP",), families=(A,))
            except (DnsUnavailable, DnsError, OSError) as exc:
                log.warning("trunk %s: cannot resolve %s: %s", trunk.name, trunk.host, exc)
                continue
            found = [(t.ip, t.port) for t in targets]
            if found != trunk.targets:
                log.info("trunk %s: %s is %s", trunk.name, trunk.host,
                         ", ".join(f"{ip}:{port}" for ip, port in found) or "nothing")
            switch.trunks.set_targets(trunk.name, found)

    async def refresh() -> None:
        while True:
            await asyncio.sleep(every)
            await once()

    await once()
    return asyncio.create_task(refresh(), name="trunk-dns")


def _host_port(value: str, default: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default
    try:
        return host, int(port)
    except ValueError:
        raise ConfigError(f"[sip] dns_servers: not HOST[:PORT]: {value!r}") from None


def _tune_gc(threshold: Any) -> bool:
    """Keep the cycle collector's pauses short: it stalls signalling and RTP alike.

    A collection walks every object of the generations it collects (about 0.5 us
    each here), and RFC 3261 keeps finished transactions for 32 s (Timers D, J, L, M),
    so at a few hundred calls/s there are 100,000+ live objects: with Python's
    thresholds, and with the [50000, 50, 1000] used before, pauses of 20-40 ms (young)
    and 100-550 ms (full) were most of the relay's p99 setup latency.

    The relay itself leaves no garbage cycles (a finished call's cycles are broken in
    Switch._finish, a lingering transaction drops its parsed request), so only young
    collections run (every 2,000 new objects, about 1 ms each); what survives one is
    never walked again by the automatic collector. The rare cycle of another kind
    that outlives a young collection (an exception's traceback, say) waits for the
    full collection every `gc_full_seconds` (logged with what it found and its
    duration: at 200 calls/s it found nothing and took 35-80 ms, so it runs hourly
    by default; every young pause is a pause of the RTP relay too).
    `gc.freeze()` takes the start-up objects out of every collection.
    `[sip] gc_threshold = []` keeps Python's defaults (this is process-wide)."""
    if not threshold:
        return False
    gc.freeze()
    gc.set_threshold(*(int(v) for v in threshold))
    return True


def _metrics(node: Node, switch: CallMap, server: SipServer, media: MediaBackend) -> None:
    m = node.metrics
    m.gauge("relay_calls_live", "calls in progress", lambda: float(switch.live))
    m.counter_from("relay_recording_errors_total",
                   "recordings stopped by a failed spool write (the call went on)",
                   lambda: float(getattr(media, "recording_errors", 0)))
    # The in-process backend paces every prompt on one clock; rtpengine plays its own.
    m.gauge("relay_media_playing", "prompts the relay is playing now (in-process media)",
            lambda: float(len(getattr(media, "playout", None) or ())))
    for name, what in (("invites", "INVITEs that started a call attempt"),
                       ("bridged", "attempts routed to a callee"),
                       ("answered", "calls answered"),
                       ("refused", "attempts refused by the relay"),
                       ("untrusted", "requests refused from untrusted sources (no lookup)"),
                       ("overload", "INVITEs refused with 503 (limits or drain)"),
                       ("media_errors", "media backend errors"),
                       ("counter_errors", "score or frequency lookups that failed or "
                                          "timed out ([dialplan] counter_fail applied)"),
                       ("hook_errors", "decision hook calls that failed or timed out "
                                       "([dialplan] hook_fallback applied)")):
        m.counter_from(f"relay_sip_{name}_total", what,
                       lambda n=name: float(switch.counts[n]))  # type: ignore[misc]
    guard = switch.settings.overload
    m.gauge("relay_overload_admitted_fraction", "share of new calls admitted (overload control)",
            lambda: guard.fraction)
    m.gauge("relay_overload_delay_seconds",
            "worst SIP queueing delay or loop lag in the last overload interval",
            lambda: guard.last_delay)
    layer = switch.layer
    m.counter_from("relay_sip_malformed_total",
                   "unparsable SIP messages (answered 400 if possible)",
                   lambda: float(layer.stats["malformed"]))
    m.gauge("relay_sip_transactions", "live SIP transactions", lambda: float(len(layer)))
    trunks = switch.trunks.trunks
    m.gauge("relay_trunks_up", "outbound trunks up (last OPTIONS probe or call answered)",
            lambda: float(sum(t.up for t in trunks)))
    m.gauges("relay_trunk_target_up",
             "1 while an outbound trunk's target (an address its name resolved to) is up",
             ("trunk", "target"),
             lambda: {(t.name, f"{a[0]}:{a[1]}"): float(a not in t.down)
                      for t in trunks for a in t.targets})
    m.counter_from("relay_trunk_failovers_total",
                   "calls moved to the next outbound trunk (408, 503 or silence)",
                   lambda: float(sum(t.failovers for t in trunks)))
    m.gauge("relay_sip_dialogs", "SIP dialogs the relay holds (two per answered call)",
            lambda: float(switch.dialog_count))
    m.counter_from("relay_sip_adapter_errors_total", "exceptions caught in the SIP adapter",
                   lambda: float(server.stats["errors"]))
    for name, what in (("tcp_refused_total", "TCP/TLS connections refused: the total cap"),
                       ("tcp_refused_source", "TCP/TLS connections refused: per-source cap"),
                       ("tcp_refused_fds", "TCP/TLS connections refused: descriptor reserve"),
                       ("tcp_refused_untrusted", "TCP/TLS connections refused: not a trunk"),
                       ("tcp_closed_idle", "TCP/TLS connections closed: idle timeout"),
                       ("tcp_closed_slow", "TCP/TLS connections closed: message deadline")):
        m.counter_from(f"relay_sip_{name}_total", what,
                       lambda n=name: float(server.stats[n]))  # type: ignore[misc]
    m.gauge("relay_sip_tcp_connections", "SIP TCP and TLS connections open",
            lambda: float(len(server.streams)))
    m.counter_from("relay_sip_rate_limited_total",
                   "datagrams dropped unanswered: source over its rate limit or banned",
                   lambda: float(switch.counts["rate_limited"]))
    m.counter_from("relay_sip_stateless_replies_total",
                   "refusals sent statelessly (once, no 100 Trying)",
                   lambda: float(layer.stats["stateless_replies"]))
    m.counter_from("relay_sip_replies_resent_total",
                   "stateless refusals sent again for a retransmitted request",
                   lambda: float(layer.stats["replies_resent"]))
    m.counter_from("relay_sip_udp_send_errors_total",
                   "SIP datagrams not sent (send buffer full or address unreachable)",
                   lambda: float(server.stats["udp_send_errors"]))
