"""STYLE point 1: the SMPP core imports no asyncio, socket, time or threading."""

from __future__ import annotations

import ast
from pathlib import Path

import relay.sms

BANNED = {"asyncio", "socket", "time", "threading", "selectors", "uvloop"}


def test_relay_sms_is_sans_io() -> None:
    root = Path(relay.sms.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in BANNED]
    assert offenders == []
