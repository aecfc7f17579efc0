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

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recordings.links import LinkSigner, load_or_create_key

from .config import Config
from .subsystem import Stop, Subsystem

if TYPE_CHECKING:
    from aiohttp import web

    from .app import Node

__all__ = ["RecordingsSettings", "RecordingsSubsystem", "recordings_settings"]

log = logging.getLogger("relay")


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


class RecordingsSubsystem(Subsystem):
    """Recordings over HTTP (signed links, `/v1/recordings/...`) and the retention sweep
    (`[recordings] retention_days`)."""

    name = "recordings"
    sections = ("recordings",)

    def add_routes(self, node: Node, app: web.Application) -> None:
        from recordings.api import RECORDING_PATHS, add_recording_routes

        from .api.openapi import add_paths

        add_paths(app, RECORDING_PATHS)
        rec = recordings_settings(node.config)
        add_recording_routes(app, node.config.recordings, signer=rec.signer(),
                             link_base=rec.link_base)

    async def run(self, node: Node) -> Stop | None:
        rec = recordings_settings(node.config)
        if rec.retention_days <= 0:
            return None
        task = asyncio.create_task(_retention(node, rec.retention_days,
                                              rec.retention_interval), name="retention")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop


async def _retention(node: Node, days: float, interval: float) -> None:
    """`[recordings] retention_days`: sweep now, then every `interval` seconds.

    Only files go: call records stay, and nothing is announced (a deleted
    recording is policy, not news)."""
    from recordings.retention import sweep

    loop = asyncio.get_running_loop()
    while True:
        try:
            removed = await loop.run_in_executor(None, sweep, node.config.recordings,
                                                 days, node.clock())
            if removed:
                log.info("retention: removed %d recordings older than %g days",
                         removed, days)
        except OSError:
            log.exception("retention sweep failed")
        await asyncio.sleep(interval)
