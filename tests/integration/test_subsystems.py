"""A node runs its declared subsystems (relay/subsystem.py): routes added and described
on its own app, started in order, stopped in reverse; the default parts and the
sections they read."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from relay.api.openapi import add_paths
from relay.app import Node, default_subsystems
from relay.config import Config
from relay.settings import Sections
from relay.subsystem import Stop, Subsystem


class Part(Subsystem):
    name = "part"

    def __init__(self, label: str, order: list[str]) -> None:
        super().__init__()
        self.label, self.order = label, order

    def add_routes(self, node: Node, app: web.Application) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response({"part": self.label})

        path = f"/v1/parts/{self.label}"
        app.router.add_get(path, handler)
        add_paths(app, {path: {"get": {"summary": f"part {self.label}",
                                       "responses": {"200": {"description": "ok"}}}}})

    async def run(self, node: Node) -> Stop:
        self.order.append(f"start {self.label}")

        async def stop() -> None:
            self.order.append(f"stop {self.label}")

        return stop


def test_default_parts_and_their_sections() -> None:
    parts = default_subsystems()
    assert [p.name for p in parts] == ["events", "sms", "voice", "recordings"]
    declared = {f.name for f in dataclasses.fields(Sections)}
    for p in parts:
        assert p.sections and set(p.sections) <= declared, p.name


async def test_node_starts_parts_in_order_and_stops_them_in_reverse(tmp_path: Path) -> None:
    order: list[str] = []
    cfg = Config(store=f"sqlite:///{tmp_path}/relay.db", http=("127.0.0.1", 0),
                 recordings=str(tmp_path / "rec"), journal_dir=str(tmp_path))
    node = Node(cfg)
    node.subsystems = [Part("a", order), Part("b", order)]
    other = Node(dataclasses.replace(cfg, store=f"sqlite:///{tmp_path}/other.db"))
    other.subsystems = []
    await node.start()
    await other.start()
    try:
        assert order == ["start a", "start b"]
        async with ClientSession() as http:
            base = f"http://127.0.0.1:{node.http_port}"
            async with http.get(base + "/v1/parts/b") as r:
                assert r.status == 200 and await r.json() == {"part": "b"}
            async with http.get(base + "/v1/openapi.json") as r:
                paths: dict[str, Any] = (await r.json())["paths"]
            assert {"/v1/parts/a", "/v1/parts/b"} <= set(paths)
            assert "/v1/calls" not in paths  # voice is not among this node's parts
            # Each node documents its own routes (no process-wide table).
            async with http.get(f"http://127.0.0.1:{other.http_port}/v1/openapi.json") as r:
                assert "/v1/parts/a" not in (await r.json())["paths"]
    finally:
        await other.stop()
        await node.stop()
    assert order == ["start a", "start b", "stop b", "stop a"]
    assert node.voice is None and node.sms is None and node.events_sender is None
