"""Configuration: a TOML file (`relay.toml`), then environment, then command-line flags.

Everything has a default that runs on one machine: SQLite under ./var, every listener on
127.0.0.1. See README "Configuration" for the file format.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .settings import Sections

__all__ = ["Config", "ConfigError", "HostPort", "load_config", "parse_hostport"]

HostPort = tuple[str, int]
ROLES = ("admin", "ops")


class ConfigError(ValueError):
    """A setting that cannot work; the message names it."""


def parse_hostport(text: str, what: str) -> HostPort:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def parse_port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise ConfigError(f"media_ports: expected A-B, got {text!r}")
    a, b = int(lo), int(hi)
    if not 1024 <= a < b <= 65535 or b - a < 3:
        raise ConfigError("media_ports: need 1024 <= A < B <= 65535 with room for a pair")
    return a, b


@dataclass(frozen=True)
class Config:
    """All settings of one relay process."""

    sip: HostPort = ("127.0.0.1", 5060)
    sip_tls: HostPort | None = None  # SIP over TLS ([sip] tls_cert and tls_key)
    http: HostPort = ("127.0.0.1", 8080)
    smpp: HostPort | None = None
    store: str = "sqlite:///var/relay.db"
    outbound: HostPort = ("127.0.0.1", 5070)
    trunks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    recordings: str = "var/recordings"
    media_ports: tuple[int, int] = (20000, 29999)
    smpp_accounts: dict[str, str] = field(default_factory=dict)
    api_tokens: dict[str, str] = field(default_factory=dict)  # token -> role
    # [api] rate: requests/s per token, by role (0: unlimited); burst: that many seconds
    api_rates: dict[str, float] = field(default_factory=lambda: {"admin": 0.0, "ops": 20.0})
    api_burst: float = 3.0
    # [relay] journal_dir: the node's local journals (freezes waiting for the store, live
    # calls); default beside the SQLite file, else ./var
    journal_dir: str | None = None
    default_cc: str = ""
    quarantine: float = 86400.0
    frozen_hold: float = 7 * 86400.0
    sweep_interval: float = 1.0
    log_level: str = "INFO"
    default_policy: str | None = None  # [dialplan]: the policy of bindings that name none
    policy_refresh: float = 1.0  # [dialplan]: seconds between re-reads of the policies
    counter_timeout: float = 0.3  # [dialplan]: the longest a call waits for its counter
    counter_fail: str = "open"  # [dialplan]: a counter that cannot answer admits ("open")
    score_tz: str = "UTC"  # [dialplan]: the zone whose night the harassment score counts
    hook_url: str | None = None  # [dialplan]: the per-call decision hook (relay.io.hook)
    hook_secret: str = ""  # [dialplan]: signs the hook's requests (X-Relay-Signature)
    hook_timeout: float = 0.3  # [dialplan]: the longest a call waits for the hook
    hook_fallback: str = "allow"  # [dialplan]: a hook that fails or is late: allow|refuse
    # Every section as declared in relay.settings (typed, defaults filled in): the
    # subsystems read theirs here ([sip], [media], [sms], [smpp], [events], ...).
    sections: Sections = field(default_factory=Sections)

    def journal_path(self) -> Path:
        """This node's local journal file (one per SIP port: workers share a folder)."""
        if self.journal_dir:
            base = Path(self.journal_dir)
        elif self.store.startswith("sqlite://"):
            from .bindings.sqlite_store import SqliteStore

            base = SqliteStore(self.store).path.parent
        else:
            base = Path("var")
        return base / f"journal-sip{self.sip[1]}.db"

    def check(self) -> None:
        """Refuse settings that are unsafe or cannot work (DESIGN.md: no token, no
        non-loopback API)."""
        for role in self.api_tokens.values():
            if role not in ROLES:
                raise ConfigError(f"api token role must be one of {ROLES}, got {role!r}")
        if not self.api_tokens and not _is_loopback(self.http[0]):
            raise ConfigError(
                f"the HTTP API would listen on {self.http[0]} without tokens; configure "
                "[api] tokens (or RELAY_API_TOKENS) or listen on 127.0.0.1")
        for net in self.trunks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"trunk: not an address or CIDR: {net!r}") from None
        if self.default_cc and (not self.default_cc.isdigit() or len(self.default_cc) > 3):
            raise ConfigError("default_cc must be 1 to 3 digits (a country code)")
        if self.quarantine < 0 or self.frozen_hold < 0:
            raise ConfigError("quarantine and frozen_hold must not be negative")
        if not 0.05 <= self.policy_refresh <= 3600:
            raise ConfigError("dialplan.policy_refresh must be 0.05 to 3600 seconds")
        if not 0.001 <= self.counter_timeout <= 10:
            raise ConfigError("dialplan.counter_timeout must be 0.001 to 10 seconds")
        if self.counter_fail not in ("open", "closed"):
            raise ConfigError("dialplan.counter_fail must be open or closed")
        if not 0.001 <= self.hook_timeout <= 10:
            raise ConfigError("dialplan.hook_timeout must be 0.001 to 10 seconds")
        if self.hook_fallback not in ("allow", "refuse"):
            raise ConfigError("dialplan.hook_fallback must be allow or refuse")
        if self.hook_url is not None and not self.hook_url.startswith(("http://", "https://")):
            raise ConfigError("dialplan.hook_url must be an http:// or https:// URL")
        try:
            ZoneInfo(self.score_tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"dialplan.score_tz: unknown IANA zone {self.score_tz!r}"
                              ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tokens(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):  # "token:role,token:role"
        out = {}
        for item in filter(None, (s.strip() for s in value.split(","))):
            tok, sep, role = item.rpartition(":")
            if not sep or not tok:
                raise ConfigError(f"{what}: expected TOKEN:ROLE, got {item!r}")
            out[tok] = role
        return out
    raise ConfigError(f"{what}: expected a table or TOKEN:ROLE list")


def load_config(path: str | None, overrides: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> Config:
    """File, then `RELAY_*` environment, then `overrides` (from flags); checked. Every
    section is validated against relay.settings: an unknown key or a wrong type is a
    ConfigError naming it."""
    from .settings import load_sections

    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    sections = load_sections(raw)
    relay, api, dialplan = sections.relay, sections.api, sections.dialplan
    kw: dict[str, Any] = {"sections": sections}
    for name in ("sip", "http", "outbound"):
        kw[name] = parse_hostport(getattr(relay, name), f"[relay] {name}")
    for name in ("sip_tls", "smpp"):
        value = getattr(relay, name)
        kw[name] = None if value is None else parse_hostport(value, f"[relay] {name}")
    for name in ("store", "recordings", "default_cc", "log_level", "journal_dir",
                 "trunks"):
        kw[name] = getattr(relay, name)
    kw["media_ports"] = parse_port_range(relay.media_ports)
    for name in ("quarantine", "frozen_hold", "sweep_interval"):
        kw[name] = getattr(sections.bindings, name)
    kw["api_tokens"] = _tokens(api.tokens, "[api] tokens")
    kw["api_rates"] = {"admin": 0.0, "ops": 20.0, **api.rate}
    kw["api_burst"] = api.burst
    kw["smpp_accounts"] = dict(sections.smpp.accounts)
    kw["default_policy"] = dialplan.default_policy or None
    for name in ("policy_refresh", "counter_timeout", "hook_timeout", "counter_fail",
                 "score_tz", "hook_url", "hook_secret", "hook_fallback"):
        kw[name] = getattr(dialplan, name)
    if "RELAY_API_TOKENS" in env:
        kw["api_tokens"] = _tokens(env["RELAY_API_TOKENS"], "RELAY_API_TOKENS")
    if "RELAY_STORE" in env:
        kw["store"] = env["RELAY_STORE"]
    known = {f.name for f in fields(Config)}
    for k, v in (overrides or {}).items():
        if v is not None and k in known:
            kw[k] = v
    cfg = replace(Config(), **kw)
    cfg.check()
    return cfg
