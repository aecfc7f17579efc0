"""The parts of a node, declared: each names the relay.toml sections it reads (declared
in relay.settings), adds its HTTP routes (and their OpenAPI description) to the app,
and has a `start` and a `stop`. `relay.app.Node` runs them in order and stops them in
reverse, so nothing patches attributes onto the node from outside (Kamailio's module
`exports`: params, init, destroy, the commands it adds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from aiohttp import web

    from .app import Node

__all__ = ["Stop", "Subsystem"]

# What a started subsystem hands back: the coroutine that stops it.
Stop = Callable[[], Awaitable[None]]


class Subsystem:
    """One part of a node. Subclasses set `name` and `sections`, override `add_routes`
    when they serve HTTP, and `run`, which starts the part and returns its stop."""

    name: ClassVar[str] = ""
    sections: ClassVar[tuple[str, ...]] = ()  # relay.toml sections it reads

    def __init__(self) -> None:
        self._stop: Stop | None = None

    def add_routes(self, node: Node, app: web.Application) -> None:
        """Add this part's routes to `app` and describe them (relay.api.openapi)."""

    async def run(self, node: Node) -> Stop | None:
        """Start; the coroutine function that stops what was started (None: nothing)."""
        raise NotImplementedError

    async def start(self, node: Node) -> None:
        self._stop = await self.run(node)

    async def stop(self, node: Node) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            await stop()
