"""The `[recordings]` section: signed links and retention, typed and checked.

    [recordings]
    link_keys = ["new-secret-at-least-16-bytes", "previous-secret-..."]
                          # the first signs, all verify (rotate by prepending);
                          # none: a key made once in <recordings>/.link_key
    link_base = "https://relay.example.com"   # origin written into links (default:
                          # the origin the request came to)
    retention_days = 0    # delete recordings older than this (0: keep forever)
    retention_interval = 3600   # seconds between the relay's own sweeps
    manifest_keys = ["..."]     # sign call manifests (first signs, all verify);
                          # default: the link keys. Keep them off the recordings disk
                          # for the signatures to mean something against its owner.

Unknown keys are an error: a misspelt `retention_day` must not silently keep
recordings forever.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from recordings.links import LinkSigner, load_or_create_key

from .config import Config, ConfigError

__all__ = ["RecordingsSettings", "recordings_settings"]


@dataclass(frozen=True, slots=True)
class RecordingsSettings:
    """What `[recordings]` says, validated."""

    root: str
    link_keys: tuple[str, ...] = ()
    link_base: str = ""
    retention_days: float = 0.0
    retention_interval: float = 3600.0
    manifest_keys: tuple[str, ...] = ()

    def signer(self) -> LinkSigner:
        """The link signer: configured keys, else the folder's own key file."""
        if self.link_keys:
            return LinkSigner(tuple(k.encode() for k in self.link_keys))
        return LinkSigner((load_or_create_key(self.root),))

    def manifest_signing_keys(self) -> tuple[bytes, ...]:
        """Keys for manifests: their own, else the link keys (configured or the file)."""
        if self.manifest_keys:
            return tuple(k.encode() for k in self.manifest_keys)
        return self.signer().keys


def recordings_settings(config: Config) -> RecordingsSettings:
    """Read and check `[recordings]` from `config.extra`."""
    raw = dict(config.extra.get("recordings", {}) or {})
    known = {f.name for f in fields(RecordingsSettings)} - {"root"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[recordings]: unknown keys {unknown}; known: {sorted(known)}")
    keys = _keys(raw, "link_keys")
    manifest_keys = _keys(raw, "manifest_keys")
    base = str(raw.get("link_base", ""))
    if base and not base.startswith(("http://", "https://")):
        raise ConfigError("[recordings] link_base: an http:// or https:// origin")
    days = _number(raw, "retention_days", 0.0)
    interval = _number(raw, "retention_interval", 3600.0)
    if interval <= 0:
        raise ConfigError("[recordings] retention_interval must be positive")
    return RecordingsSettings(root=config.recordings, link_keys=keys,
                              link_base=base, retention_days=days,
                              retention_interval=interval, manifest_keys=manifest_keys)


def _keys(raw: dict[str, Any], name: str) -> tuple[str, ...]:
    keys = raw.get(name, [])
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"[recordings] {name}: a list of strings")
    if any(len(k.encode()) < 16 for k in keys):
        raise ConfigError(f"[recordings] {name}: each key needs at least 16 bytes")
    return tuple(keys)


def _number(raw: dict[str, Any], name: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"[recordings] {name}: a number, not negative")
    return float(value)
