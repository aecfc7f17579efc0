"""The ops page in a real browser (headless Chromium): bindings render, masked for ops."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def api(base: str, path: str, body: Any = None, token: str = "adm") -> Any:
    req = urllib.request.Request(base + path, method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def rendered_dom(url: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=8000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=90)
    return out.stdout


def test_ops_page_lists_bindings_masked(tmp_path: Any, relay_factory: Any) -> None:
    node = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                         env={"RELAY_API_TOKENS": "adm:admin,opstok:ops"})
    api(node.base, "/v1/numbers", {"numbers": ["+8617000000001"]})
    b = api(node.base, "/v1/bindings", {"mode": "AXB", "a": "+8613800000001",
                                        "b": "+8613900000001", "out_id": "order-42"})
    dom = rendered_dom(node.base + "/#token=opstok")
    assert b["id"] in dom and "order-42" in dom
    assert "+86138****0001" in dom
    assert "13800000001" not in dom and "13900000001" not in dom
    assert "1 numbers: 1 in use" in dom
