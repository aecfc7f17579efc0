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

The keys are declared in relay.settings (RecordingsSection): unknown keys are an
error, a misspelt `retention_day` must not silently keep recordings forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from recordings.links import LinkSigner, load_or_create_key

from .config import Config

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
    """`[recordings]` (declared and checked in relay.settings) with the folder."""
    r = config.sections.recordings
    return RecordingsSettings(root=config.recordings, link_keys=r.link_keys,
                              link_base=r.link_base, retention_days=r.retention_days,
                              retention_interval=r.retention_interval,
                              manifest_keys=r.manifest_keys)
