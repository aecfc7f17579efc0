"""Media backends by name: `[media] backend` chooses one (STYLE.md: implementations
from a registry, as aioquic's `congestion/base.py` does for congestion control).

Each entry names the module and the async factory that opens the backend from the
relay's configuration. The module is imported only when its backend is chosen: a relay
on the in-process media never loads rtpengine's client. `relay.settings` takes the
allowed names from `NAMES`, so a new backend is one line here and a factory there.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from relay.config import Config
    from relay.settings import MediaSection

    from .backend import MediaBackend

__all__ = ["NAMES", "BackendContext", "open_backend"]


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What a factory gets: the whole configuration, its `[media]` section, the address
    SDP advertises by default, how often to poll the backend's statistics (0: never) and
    the key that seals recordings."""

    config: Config
    media: MediaSection
    advertise: str
    poll: float
    manifest_key: bytes


Factory = Callable[[BackendContext], Awaitable["MediaBackend"]]

#: name -> "module:factory"
_BACKENDS: dict[str, str] = {
    "inprocess": "relay.media.inprocess:open_backend",
    "rtpengine": "relay.media.rtpengine:open_backend",
}
NAMES: tuple[str, ...] = tuple(_BACKENDS)


async def open_backend(name: str, ctx: BackendContext) -> MediaBackend:
    """Open the backend called `name` (ValueError if there is none by that name)."""
    target = _BACKENDS.get(name)
    if target is None:
        raise ValueError(f"[media] backend must be one of {', '.join(NAMES)}, not {name!r}")
    module, _, factory = target.partition(":")
    make = cast(Factory, getattr(importlib.import_module(module), factory))
    return await make(ctx)
