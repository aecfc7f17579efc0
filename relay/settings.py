"""Every section of relay.toml, declared once: a frozen dataclass per section whose
fields carry their type, default and documentation (`setting(...)`), as aioquic's
`QuicConfiguration` or Kamailio's module `params[]`.

`load_sections` validates a parsed TOML document against these declarations: an
unknown section or key, a value of the wrong type (an int for a string, a string for a
list, a list for a table) or out of an obvious range is a `ConfigError` whose message
names the key, e.g. ``[sip] sesion_expires: unknown key (did you mean
session_expires?)``. Checks that span several keys (a webhook URL needs its secret)
live in each section's `check()`; a subsystem reads its typed section object and never
a raw dict, so a misspelt key can no longer be silently ignored.

The `[relay]`, `[bindings]`, `[api]` and `[dialplan]` sections become flat fields of
`relay.config.Config` (flags and environment override them); the others are
`Config.sections.<name>`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from relay.media.registry import NAMES as MEDIA_BACKENDS
from relay.sms.routes import ROUTES as SMS_ROUTES

__all__ = [
    "ApiSection", "BindingsSection", "DialplanSection", "EventsSection", "GuardSection",
    "MediaSection", "RealmAuth", "RecordingsSection", "RelaySection", "Sections",
    "SipSection", "SmppSection", "SmsSection", "TrunkEntry", "UpstreamSection",
    "WorkersSection", "describe", "effective", "load_sections", "setting", "shown",
    "to_toml",
]

SECRET = "***"


def _error(msg: str) -> Exception:
    from .config import ConfigError  # config imports this module: import late

    return ConfigError(msg)


def setting(default: Any = MISSING, doc: str = "", *, secret: bool | str = False,
            lo: float | None = None, hi: float | None = None, gt: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """One key: its default (none: required), what it means, and what makes it invalid.
    `secret` keys are shown as *** by `relay config show` ("keys": a table whose keys
    are the secrets, such as API tokens)."""
    meta = {"doc": doc, "secret": secret, "lo": lo, "hi": hi, "gt": gt, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda d=default: dict(d), metadata=meta)  # type: ignore[misc]
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Base of the section dataclasses: `where` names it in errors."""

    where: ClassVar[str] = ""

    def check(self) -> None:
        """Rules across keys; ConfigError naming the key."""


# ---- [relay], [bindings], [api], [dialplan]: flat fields of Config ----------------------

@dataclass(frozen=True)
class RelaySection(_Section):
    where: ClassVar[str] = "[relay]"
    sip: str = setting("127.0.0.1:5060", "HOST:PORT for SIP over UDP and TCP (--sip)")
    sip_tls: str | None = setting(None, "HOST:PORT for SIP over TLS, off when absent "
                                  "([sip] tls_cert, tls_key; --sip-tls)")
    http: str = setting("127.0.0.1:8080", "HOST:PORT for the API and ops page (--http)")
    smpp: str | None = setting(None, "HOST:PORT for the SMPP server, off when absent")
    store: str = setting("sqlite:///var/relay.db", "sqlite:///path, redis://, "
                         "redis+sentinel:// or redis+cluster:// (--store, RELAY_STORE)")
    outbound: str = setting("127.0.0.1:5070", "where B-legs go without [[sip.trunk]]")
    trunks: tuple[str, ...] = setting(("127.0.0.0/8", "::1/128"),
                                      "CIDRs that may send INVITEs (--trunk)")
    recordings: str = setting("var/recordings", "the recordings folder (--recordings)")
    media_ports: str = setting("20000-29999", "A-B: the UDP ports media may use")
    default_cc: str = setting("", "country code national numbers are read with")
    log_level: str = setting("INFO", "DEBUG, INFO or WARNING (--log-level)",
                             choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL",
                                      "debug", "info", "warning", "error", "critical"))
    journal_dir: str | None = setting(None, "the node's local journals (default: beside "
                                      "the SQLite file, else ./var)")


@dataclass(frozen=True)
class BindingsSection(_Section):
    where: ClassVar[str] = "[bindings]"
    quarantine: float = setting(86400.0, "seconds a released number or pair waits", lo=0)
    frozen_hold: float = setting(7 * 86400.0, "seconds a frozen binding refuses calls",
                                 lo=0)
    sweep_interval: float = setting(1.0, "seconds between expiry sweeps", lo=0.01)


@dataclass(frozen=True)
class ApiSection(_Section):
    where: ClassVar[str] = "[api]"
    tokens: Any = setting({}, "token = role table, or a 'TOKEN:ROLE,...' string "  # noqa: RUF009 (a factory)
                          "(RELAY_API_TOKENS)", secret="keys")
    rate: dict[str, float] = setting({"admin": 0.0, "ops": 20.0},  # noqa: RUF009 (a factory)
                                     "requests/s per token by role (0: no limit)", lo=0)
    burst: float = setting(3.0, "a token may burst rate x burst requests", lo=0)


@dataclass(frozen=True)
class DialplanSection(_Section):
    where: ClassVar[str] = "[dialplan]"
    default_policy: str | None = setting(None, "the policy of bindings that name none")
    policy_refresh: float = setting(1.0, "seconds between re-reads of the policies",
                                    lo=0.05, hi=3600)
    counter_timeout: float = setting(0.3, "the longest a call waits for its counter",
                                     lo=0.001, hi=10)
    counter_fail: str = setting("open", "store unreachable: open admits, closed refuses",
                                choices=("open", "closed"))
    score_tz: str = setting("UTC", "the IANA zone whose night the harassment score counts")
    hook_url: str | None = setting(None, "the per-call decision hook (http:// or https://)")
    hook_secret: str = setting("", "signs the hook's requests", secret=True)
    hook_timeout: float = setting(0.3, "the longest a call waits for the hook",
                                  lo=0.001, hi=10)
    hook_fallback: str = setting("allow", "a hook that fails or is late: allow or refuse",
                                 choices=("allow", "refuse"))


# ---- [sip] and its tables ----------------------------------------------------------------

@dataclass(frozen=True)
class TrunkEntry(_Section):
    where: ClassVar[str] = "[[sip.trunk]]"
    host: str = setting(doc="an address or a DNS name (required)")
    port: int | None = setting(None, "the trunk's port (default 5060, or DNS SRV)",
                               lo=1, hi=65535)
    name: str | None = setting(None, "in call records and metrics (default HOST:PORT)")
    priority: int = setting(1, "lower first", lo=0)
    weight: int = setting(1, "shares a priority (RFC 2782)", lo=0)


@dataclass(frozen=True)
class RealmAuth(_Section):
    where: ClassVar[str] = "[sip.trunk_auth_realms]"
    user: str = setting(doc="digest user for this realm")
    password: str = setting(doc="digest password for this realm", secret=True)


@dataclass(frozen=True)
class SipSection(_Section):
    """`[sip]`: relay/io/voice.py (the README's Configuration lists them too)."""

    where: ClassVar[str] = "[sip]"
    advertise: str = setting("", "the address in Via and Contact (default: the SIP host)")
    t1: float = setting(0.5, "RFC 3261 T1 in seconds (T2, T4, timer D follow)", lo=0.01)
    ring_timeout: float = setting(60.0, "no answer: CANCEL the callee, 480", lo=0)
    max_call_seconds: float = setting(7200.0, "unless the binding sets its own", lo=0)
    max_calls: int = setting(5000, "beyond this: 503 with Retry-After", lo=0)
    cps: float = setting(0.0, "new calls per second (0: no limit)", lo=0)
    overload_delay_ms: float = setting(100.0, "shed new calls when SIP waits longer (0: off)",
                                       lo=0)
    overload_max_jobs: int = setting(2000, "... or with this many media jobs (0: no cap)",
                                     lo=0)
    overload_retry_after: int = setting(5, "seconds, in the 503", lo=0)
    overload_sample: int = setting(100, "one call record per this many 503s", lo=0)
    overload_force_after: int = setting(0, "test knob: admit this many, then shed all", lo=0)
    hangup_on_freeze: bool = setting(False, "end calls in progress when the binding freezes")
    drain_seconds: float = setting(10.0, "SIGTERM: BYE what is left after this", lo=0)
    gc_threshold: tuple[int, ...] = setting((2000, 1_000_000, 1_000_000),
                                            "gc thresholds ([]: Python's defaults)", lo=0)
    gc_full_seconds: float = setting(3600.0, "a full, logged collection this often (0: never)",
                                     lo=0)
    announce_refusals: bool = setting(True, "announce unknown or frozen X in early media")
    no_early_media: tuple[str, ...] = setting((), "trunks (CIDRs) refused unannounced")
    symmetric: tuple[str, ...] = setting((), "trunks (CIDRs) behind NAT: in-dialog "
                                         "requests go to their source address")
    session_expires: int = setting(1800, "RFC 4028 session timer per leg (0: off)", lo=0)
    min_se: int = setting(90, "a shorter Session-Expires gets 422", lo=0)
    min_se_floor: int = setting(90, "test knob: min_se below RFC 4028's 90 s floor", lo=1)
    probe_interval: float = setting(30.0, "OPTIONS to each [[sip.trunk]] (0: never)", lo=0)
    dns_servers: tuple[str, ...] = setting((), "HOST[:PORT] resolvers for trunk names "
                                           "(default: /etc/resolv.conf)")
    dns_timeout: float = setting(2.0, "seconds per DNS query", lo=0.01)
    dns_refresh: float = setting(30.0, "seconds between trunk lookups", lo=0)
    announce_limit: float = setting(8.0, "the longest an announcement holds a refusal",
                                    lo=0)
    ivr_tries: int = setting(3, "AXE by digits: extensions a caller may key", lo=1)
    ivr_first_digit: float = setting(10.0, "seconds after the prompt for the first digit",
                                     lo=0)
    ivr_pause: float = setting(3.0, "a pause this long ends the extension", lo=0)
    ivr_record: bool = setting(True, "record AXE calls from the prompt on")
    trunk_auth_user: str | None = setting(None, "digest user for the trunk's 401/407")
    trunk_auth_password: str | None = setting(None, "its password (never logged)",
                                              secret=True)
    trunk_auth_realms: dict[str, RealmAuth] = setting({}, "per realm: {user, password}")  # noqa: RUF009 (a factory)
    tls_cert: str = setting("", "SIP over TLS: certificate chain (PEM), with sip_tls")
    tls_key: str = setting("", "... and its key")
    tcp: bool = setting(True, "SIP over TCP beside UDP on the same port")
    tcp_max_connections: int = setting(4096, "SIP TCP + TLS connections in all", lo=0)
    tcp_max_per_source: int = setting(64, "... from one IP address", lo=0)
    tcp_idle_seconds: float = setting(120.0, "close a connection silent this long (0: never)",
                                      lo=0)
    tcp_message_seconds: float = setting(10.0, "a message must be complete this long "
                                         "after its first byte", lo=0)
    tcp_trunks_only: bool = setting(False, "refuse TCP/TLS from outside `trunks`")
    tcp_fd_reserve: int = setting(0, "descriptors SIP streams never take (0: 1/4)", lo=0)
    rate_limit: int = setting(40, "datagrams a non-trunk source may send per window (0: off)",
                              lo=0)
    rate_window: float = setting(2.0, "seconds", lo=0)
    rate_ban: float = setting(60.0, "seconds a source over it is dropped", lo=0)
    stateless_refusals: bool = setting(True, "refusals outside a dialog sent once, as `sl`")
    trunk: tuple[TrunkEntry, ...] = setting((), "[[sip.trunk]]: outbound trunks")

    def trunk_tables(self) -> list[dict[str, object]]:
        """`[[sip.trunk]]` as relay.b2bua.trunks.parse_trunks takes them."""
        return [{k: v for k, v in dataclasses.asdict(t).items() if v is not None}
                for t in self.trunk]

    def auth_table(self) -> dict[str, Any]:
        """The `trunk_auth_*` keys as relay.sip.digest.credentials_from takes them."""
        out: dict[str, Any] = {"trunk_auth_realms": {
            r: {"user": a.user, "password": a.password}
            for r, a in self.trunk_auth_realms.items()}}
        if self.trunk_auth_user is not None:
            out["trunk_auth_user"] = self.trunk_auth_user
        if self.trunk_auth_password is not None:
            out["trunk_auth_password"] = self.trunk_auth_password
        return out

    def check(self) -> None:
        from .b2bua.trunks import parse_trunks
        from .sip.digest import credentials_from

        try:
            parse_trunks(self.trunk_tables())
            credentials_from(self.auth_table())
        except ValueError as exc:
            raise _error(str(exc)) from None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise _error("[sip] tls_cert and tls_key go together")


# ---- [media], [sms], [smpp], [events], [recordings], [guard], [workers] ------------------

@dataclass(frozen=True)
class MediaSection(_Section):
    where: ClassVar[str] = "[media]"
    bind: str | None = setting(None, "where RTP sockets listen (default: the SIP host)")
    advertise: str | None = setting(None, "the address in SDP (default: [sip] advertise)")
    timeout: float = setting(60.0, "no RTP either way on an answered call: BYE (0: off)",
                             lo=0)
    backend: str = setting("inprocess", "inprocess, or rtpengine over ng",
                           choices=MEDIA_BACKENDS)
    rtpengine: str = setting("127.0.0.1:2223", "rtpengine's --listen-ng")
    rtpengine_dtmf: str | None = setting(None, "where the relay hears rtpengine's "
                                         "--dtmf-log-dest (HOST:PORT)")
    language: str = setting("en", "prompts: en or cmn, or your own with `prompts`")
    prompts: str | None = setting(None, "a folder of <language>/<name>.wav overriding them")
    finish_workers: int = setting(1, "processes turning spools into WAVs (0: a thread)",
                                  lo=0)

    def check(self) -> None:
        from .config import parse_hostport

        parse_hostport(self.rtpengine, "[media] rtpengine")
        if self.rtpengine_dtmf:
            parse_hostport(self.rtpengine_dtmf, "[media] rtpengine_dtmf")


@dataclass(frozen=True)
class SmsSection(_Section):
    """`[sms]` (relay/sms/SMPP.md)."""

    where: ClassVar[str] = "[sms]"
    route: str = setting("gateway", "gateway (deliver_sm back), upstream (SMSC) or webhook",
                         choices=SMS_ROUTES)
    gateway: str | None = setting(None, "the gateway account outbound texts go to")
    webhook_url: str | None = setting(None, "with route = webhook: where texts are POSTed")
    webhook_secret: str = setting("", "signs the webhook's requests (HMAC-SHA256)",
                                  secret=True)
    webhook_retries: int = setting(5, "attempts per text", lo=0)
    webhook_backoff: float = setting(0.5, "seconds before the first retry", lo=0)
    retain_text: bool = setting(False, "keep the text (false: only its SHA-256)")
    throttle: float | None = setting(None, "texts per second toward the far side", lo=0)
    throttle_burst: int = setting(10, "burst of the throttle", lo=1)
    window: int = setting(10, "SMPP requests in flight", lo=1)
    enquire_link_interval: float = setting(30.0, "seconds between enquire_link", lo=0)
    retry_window: float = setting(3600.0, "a gateway's resend within it is one message",
                                  lo=0)

    def check(self) -> None:
        if self.route == "webhook" and not self.webhook_url:
            raise _error("[sms] route = 'webhook' needs webhook_url")
        if self.webhook_url and not self.webhook_secret:
            raise _error("[sms] webhook_url needs webhook_secret (requests are signed)")


@dataclass(frozen=True)
class UpstreamSection(_Section):
    where: ClassVar[str] = "[smpp.upstream]"
    host: str = setting(doc="the SMSC's address (required)")
    port: int = setting(doc="the SMSC's port (required)", lo=1, hi=65535)
    system_id: str = setting(doc="our system_id at the SMSC (required)")
    password: str = setting("", "our password there", secret=True)
    system_type: str = setting("", "system_type in the bind")


@dataclass(frozen=True)
class SmppSection(_Section):
    where: ClassVar[str] = "[smpp]"
    accounts: dict[str, str] = setting({}, "system_id = password of gateways that may bind "  # noqa: RUF009 (a factory)
                                       "(--smpp-account)", secret=True)
    upstream: UpstreamSection | None = setting(None, "[smpp.upstream]: bind to an SMSC "  # noqa: RUF009 (a factory)
                                               "as a transceiver")


@dataclass(frozen=True)
class EventsSection(_Section):
    """`[events]` (relay/events/service.py); off without url (or stream)."""

    where: ClassVar[str] = "[events]"
    url: str = setting("", "where events are POSTed")
    secret: str = setting("", "X-Relay-Signature: sha256=HMAC(secret, body)", secret=True)
    real_numbers: bool = setting(False, "real caller/callee numbers in events")
    link_ttl: int = setting(7200, "lifetime of recording.ready's signed links", lo=1)
    stream_maxlen: int = setting(100_000, "Redis: the capped stream {relay}:events", lo=1)
    backoff: float = setting(1.0, "first retry after this, doubling", gt=0)
    backoff_max: float = setting(300.0, "... up to this", gt=0)
    timeout: float = setting(10.0, "one POST", gt=0)
    concurrency: int = setting(64, "POSTs in flight", lo=1)
    stream: bool = setting(False, "Redis: true without url is stream-only")
    lease_ttl: float = setting(10.0, "the sender's outbox lease (and the SMS webhook's): "
                               "a killed sender holds up the next this long", gt=0)
    journal: str = setting("", "the journal's folder (default: beside the SQLite file, "
                           "or var/events-journal on Redis; a worker's name appended)")

    def check(self) -> None:
        from recordings.links import MAX_TTL

        if self.url and not self.url.startswith(("http://", "https://")):
            raise _error("[events] url: an http:// or https:// URL")
        if self.url and not self.secret:
            raise _error("[events] url needs a secret (every POST is signed)")
        if self.link_ttl > MAX_TTL:
            raise _error(f"[events] link_ttl: 1 to {MAX_TTL} seconds")
        if self.backoff_max < self.backoff:
            raise _error("[events] backoff_max: at least backoff")


@dataclass(frozen=True)
class RecordingsSection(_Section):
    """`[recordings]` (relay/recordings_config.py)."""

    where: ClassVar[str] = "[recordings]"
    link_keys: tuple[str, ...] = setting((), "the first signs links, all verify (none: a "
                                         "key made once in <recordings>/.link_key)",
                                         secret=True)
    link_base: str = setting("", "origin written into links (default: the request's)")
    retention_days: float = setting(0.0, "delete recordings older than this (0: never)",
                                    lo=0)
    retention_interval: float = setting(3600.0, "seconds between retention sweeps",
                                        gt=0)
    manifest_keys: tuple[str, ...] = setting((), "sign call manifests (default: the link "
                                             "keys)", secret=True)

    def check(self) -> None:
        for name in ("link_keys", "manifest_keys"):
            if any(len(k.encode()) < 16 for k in getattr(self, name)):
                raise _error(f"[recordings] {name}: each key needs at least 16 bytes")
        if self.link_base and not self.link_base.startswith(("http://", "https://")):
            raise _error("[recordings] link_base: an http:// or https:// origin")


@dataclass(frozen=True)
class GuardSection(_Section):
    """`[guard]`: the egress leak guard (relay/guard.py)."""

    where: ClassVar[str] = "[guard]"
    enabled: bool = setting(True, "scan every SIP message and SMS before it leaves")
    digits: int = setting(8, "needle: the last N digits of the other party's number",
                          lo=6, hi=15)


@dataclass(frozen=True)
class WorkersSection(_Section):
    """`[workers]`: relay serve --workers N (relay/cluster/)."""

    where: ClassVar[str] = "[workers]"
    ping_interval: int = setting(1, "seconds between Kamailio's probes of each worker", lo=1)
    kamailio_children: int = setting(4, "Kamailio's UDP worker processes", lo=1)
    kamailio_config: str | None = setting(None, "default: "
                                          "deploy/kamailio/relay-dispatcher.cfg")


@dataclass(frozen=True)
class Sections:
    """The typed sections of relay.toml (one attribute per `[name]`)."""

    relay: RelaySection = field(default_factory=RelaySection)
    bindings: BindingsSection = field(default_factory=BindingsSection)
    api: ApiSection = field(default_factory=ApiSection)
    dialplan: DialplanSection = field(default_factory=DialplanSection)
    sip: SipSection = field(default_factory=SipSection)
    media: MediaSection = field(default_factory=MediaSection)
    sms: SmsSection = field(default_factory=SmsSection)
    smpp: SmppSection = field(default_factory=SmppSection)
    events: EventsSection = field(default_factory=EventsSection)
    recordings: RecordingsSection = field(default_factory=RecordingsSection)
    guard: GuardSection = field(default_factory=GuardSection)
    workers: WorkersSection = field(default_factory=WorkersSection)


# ---- loading -----------------------------------------------------------------------------

_TOML_TYPE = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              list: "a list", dict: "a table"}


def _got(value: Any) -> str:
    for t in (bool, int, float, str, list, dict):
        if isinstance(value, t):
            return _TOML_TYPE[t].split(" ", 1)[-1] if t is not bool else "boolean"
    return type(value).__name__


def _unknown(where: str, key: str, known: list[str]) -> Exception:
    return _error(f"{where} {key}: unknown key" + _hint(key, known))


def _convert(tp: Any, value: Any, where: str, key: str, meta: dict[str, Any]) -> Any:
    """`value` as type `tp`, or a ConfigError naming `where key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, where, key, meta)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _error(f"{where} {key}: expected a table, got {_got(value)}")
        return _load(tp, value, _child(tp, where, key))  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list):
            raise _error(f"{where} {key}: expected a list, got {_got(value)}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, where, key, meta) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(f"{where} {key}: expected a table, got {_got(value)}")
        item = typing.get_args(tp)[1]
        return {str(k): _convert(item, v, where, f"{key}.{k}", meta)
                for k, v in value.items()}
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, int) and not isinstance(value, bool) if tp is int else
          isinstance(value, int | float) and not isinstance(value, bool) if tp is float else
          isinstance(value, tp))
    if not ok:
        raise _error(f"{where} {key}: expected {_TOML_TYPE.get(tp, tp.__name__)}, "
                     f"got {_got(value)}")
    if tp is float:
        value = float(value)
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if tp in (int, float) and ((lo is not None and value < lo)
                               or (hi is not None and value > hi)):
        rng = (f"{lo} to {hi}" if lo is not None and hi is not None else
               f"at least {lo}" if lo is not None else f"at most {hi}")
        raise _error(f"{where} {key}: must be {rng}, got {value}")
    gt = meta.get("gt")
    if tp in (int, float) and gt is not None and not value > gt:
        raise _error(f"{where} {key}: must be more than {gt}, got {value}")
    if choices and value not in choices:
        raise _error(f"{where} {key}: one of {', '.join(dict.fromkeys(choices))}, "
                     f"got {value!r}")
    return value


def _child(tp: type, where: str, key: str) -> str:
    own = getattr(tp, "where", "")
    return own if own and key.split(".")[0] in own else f"{where[:-1]}.{key}]"


def _load(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        f = by_name.get(key)
        if f is None:
            raise _unknown(where, key, list(by_name))
        kw[key] = _convert(hints[key], value, where, key, dict(f.metadata))
    for f in fields(cls):
        if f.name not in kw and f.default is MISSING and f.default_factory is MISSING:
            raise _error(f"{where} {f.name}: missing (required)")
    obj = cls(**kw)
    obj.check()
    return obj


def load_sections(raw: dict[str, Any]) -> Sections:
    """Every section of a parsed relay.toml, typed and checked; ConfigError names the key."""
    known = [f.name for f in fields(Sections)]
    kw: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            raise _error(f"[{name}]: unknown section" + _hint(name, known))
        if not isinstance(value, dict):
            raise _error(f"[{name}]: expected a table, got {_got(value)}")
        cls = typing.get_type_hints(Sections)[name]
        kw[name] = _load(cls, value, cls.where)
    out = Sections(**kw)
    if out.sms.route == "upstream" and out.smpp.upstream is None:
        raise _error("[sms] route = 'upstream' needs [smpp.upstream]")
    return out


def _hint(name: str, known: list[str]) -> str:
    near = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


# ---- showing -----------------------------------------------------------------------------

def shown(obj: Any) -> Any:
    """A section (or Sections) as plain JSON-able data, secrets as ***."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and value:
                value = _hidden(value, f.metadata["secret"] == "keys")
            out[f.name] = shown(value)
        return out
    if isinstance(obj, tuple | list):
        return [shown(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): shown(v) for k, v in obj.items()}
    return obj


def _hidden(value: Any, keys: bool = False) -> Any:
    if keys:  # token = role: only the roles show
        return sorted(f"{SECRET}:{v}" for v in value.values()) if isinstance(
            value, dict) else SECRET
    if isinstance(value, dict):  # keep the names (accounts, realms), hide the values
        return {k: SECRET for k in value}
    if isinstance(value, tuple | list):
        return [SECRET for _ in value]
    return SECRET


def describe() -> list[tuple[str, str, str, Any, str]]:
    """(section, key, type, default, doc) of every key, nested tables included: the
    documentation in one place."""
    rows: list[tuple[str, str, str, Any, str]] = []
    todo = [typing.get_type_hints(Sections)[s.name] for s in fields(Sections)]
    while todo:
        cls = todo.pop(0)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            default = (f.default if f.default is not MISSING else
                       f.default_factory() if f.default_factory is not MISSING else None)
            rows.append((cls.where, f.name, str(hints[f.name]), shown(default),
                         f.metadata.get("doc", "")))
            nested = [a for a in (hints[f.name], *typing.get_args(hints[f.name]))
                      if dataclasses.is_dataclass(a)]
            todo.extend(a for a in nested if a not in todo)  # type: ignore[misc]
    return rows


def effective(cfg: Any) -> dict[str, Any]:
    """`relay config show`: every section after defaults, environment and flags, as
    plain data with secrets as ***. The flat sections come from `Config` itself (flags
    override them there); the others from `cfg.sections`."""
    def hp(v: tuple[str, int] | None) -> str | None:
        return None if v is None else f"{v[0]}:{v[1]}"

    s = cfg.sections
    out: dict[str, Any] = {
        "relay": {"sip": hp(cfg.sip), "sip_tls": hp(cfg.sip_tls), "http": hp(cfg.http),
                  "smpp": hp(cfg.smpp), "store": cfg.store, "outbound": hp(cfg.outbound),
                  "trunks": list(cfg.trunks), "recordings": cfg.recordings,
                  "media_ports": f"{cfg.media_ports[0]}-{cfg.media_ports[1]}",
                  "default_cc": cfg.default_cc, "log_level": cfg.log_level,
                  "journal_dir": cfg.journal_dir},
        "bindings": {k: getattr(cfg, k) for k in ("quarantine", "frozen_hold",
                                                  "sweep_interval")},
        "api": shown(dataclasses.replace(s.api, tokens=dict(cfg.api_tokens),
                                         rate=dict(cfg.api_rates), burst=cfg.api_burst)),
        "dialplan": shown(DialplanSection(**{f.name: getattr(cfg, f.name)
                                             for f in fields(DialplanSection)})),
    }
    for f in fields(Sections):
        if f.name not in out:
            out[f.name] = shown(getattr(s, f.name))
    out["smpp"]["accounts"] = shown(dataclasses.replace(
        s.smpp, accounts=dict(cfg.smpp_accounts)))["accounts"]
    return out


def to_toml(data: dict[str, Any]) -> str:
    """`effective()` as relay.toml text (unset keys as comments)."""
    import json

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v)

    lines: list[str] = []
    for name, section in data.items():
        lines.append(f"[{name}]")
        tables: list[tuple[str, Any]] = []
        for k, v in section.items():
            if v is None:
                lines.append(f"# {k} = (unset)")
            elif k == "upstream":  # [smpp.upstream]
                tables.append((f"[{name}.{k}]", v))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                tables.extend((f"[[{name}.{k}]]", x) for x in v)
            else:
                lines.append(f"{k} = {val(v)}")
        for head, table in tables:
            lines.append(head)
            lines.extend(f"{k} = {val(v)}" for k, v in table.items() if v is not None)
        lines.append("")
    return "\n".join(lines)
