"""The sans-IO media modules import no asyncio, socket, time or threading (STYLE 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SANS_IO = [
    "relay/sdp.py", "relay/rtp/packet.py", "relay/rtp/session.py", "relay/rtp/ports.py",
    "recordings/g711.py", "recordings/spool.py", "recordings/finish.py",
]
BANNED = {"asyncio", "socket", "time", "threading", "selectors", "multiprocessing"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", SANS_IO)
def test_no_io_imports(module: str) -> None:
    path = ROOT / module
    assert path.exists(), module
    assert imported_modules(path) & BANNED == set()


def test_the_checker_sees_a_banned_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom asyncio import sleep\nimport time as t\n")
    assert imported_modules(bad) & BANNED == {"asyncio", "time"}
