"""STYLE.md point 1: the protocol cores and the dialplan are sans-IO.

No module in them imports a way to do I/O or read the clock: time is an argument, and
the asyncio adapters in relay/io feed them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BANNED = {"asyncio", "socket", "time", "threading", "selectors", "multiprocessing", "uvloop",
          "aiohttp"}
PACKAGES = {"relay/sip": 7, "relay/sms": 8, "relay/b2bua": 5, "dialplan": 2}  # min files
MODULES = [
    "relay/sdp.py", "relay/rtp/packet.py", "relay/rtp/session.py", "relay/rtp/ports.py",
    "relay/rtp/dtmf.py", "relay/rtp/player.py",
    "recordings/g711.py", "recordings/spool.py", "recordings/finish.py",
    "relay/media/rtpengine_voice.py",
]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sans_io_files() -> list[str]:
    files = list(MODULES)
    for package, at_least in PACKAGES.items():
        found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / package).glob("*.py"))
        assert len(found) >= at_least, package  # the glob still sees the package
        files += found
    return files


@pytest.mark.parametrize("module", _sans_io_files())
def test_no_io_imports(module: str) -> None:
    path = ROOT / module
    assert path.exists(), module
    assert imported_modules(path) & BANNED == set()


def test_the_checker_sees_a_banned_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom asyncio import sleep\nimport time as t\n")
    assert imported_modules(bad) & BANNED == {"asyncio", "time"}
