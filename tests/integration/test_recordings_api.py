"""GET /v1/recordings/{call_id}/{leg}.wav on real WAVs made by the finisher."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from recordings.api import RECORDING_PATHS, RecordingIndex, add_recording_routes
from recordings.finish import RecordingResult, call_dir, finish_call
from recordings.g711 import PT_PCMU, encode, tone
from recordings.spool import CallMeta, SpoolWriter
from relay.rtp.packet import RtpPacket

Client = TestClient  # type: ignore[type-arg]


def make_call(root: Path, call_id: str, started_at: float, packets: int = 50) -> RecordingResult:
    """A finished call folder: spools written like the relay does, then finished."""
    directory = call_dir(root, call_id, started_at)
    directory.mkdir(parents=True)
    meta = CallMeta(call_id, started_at, {"caller": {"codec": "PCMU"},
                                          "callee": {"codec": "PCMU"}})
    (directory / "meta.json").write_text(meta.to_json())
    for leg, ssrc, freq in (("caller", 1, 440), ("callee", 2, 1000)):
        with open(directory / f"{leg}.spool", "wb") as f:
            w = SpoolWriter(f)
            for i in range(packets):
                pkt = RtpPacket(PT_PCMU, i, 160 * i, ssrc,
                                payload=encode(tone(freq, 160, start=160 * i), PT_PCMU))
                w.append(bytes(pkt), started_at + 0.02 * i)
            w.close()
    return finish_call(directory)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    app = web.Application()
    add_recording_routes(app, tmp_path, rescan_interval=0.0)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_whole_file_and_range(client: Client, tmp_path: Path) -> None:
    result = make_call(tmp_path, "call-A1", time.time() - 86400 * 40)
    body = (result.directory / "mix.wav").read_bytes()
    r = await client.get("/v1/recordings/call-A1/mix.wav")
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert await r.read() == body
    r = await client.get("/v1/recordings/call-A1/caller.wav", headers={"Range": "bytes=0-43"})
    caller = (result.directory / "caller.wav").read_bytes()
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes 0-43/{len(caller)}"
    data = await r.read()
    assert data == caller[:44] and data.startswith(b"RIFF")
    r = await client.get("/v1/recordings/call-A1/callee.wav", headers={"Range": "bytes=-10"})
    callee = (result.directory / "callee.wav").read_bytes()
    assert r.status == 206 and await r.read() == callee[-10:]


@pytest.mark.parametrize("rng", [f"bytes={10**9}-", "bytes=abc", "bytes=9-3"])
async def test_bad_range_is_416(client: Client, tmp_path: Path, rng: str) -> None:
    result = make_call(tmp_path, "call-R", time.time())
    size = result.files["mix"].size
    r = await client.get("/v1/recordings/call-R/mix.wav", headers={"Range": rng})
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{size}"


async def test_missing_call_leg_and_unfinished(client: Client, tmp_path: Path) -> None:
    make_call(tmp_path, "call-B", time.time())
    r = await client.get("/v1/recordings/call-B/mix.mp3")
    assert r.status == 404  # not routed (the app's middleware makes it JSON)
    for url in ("/v1/recordings/nope/mix.wav", "/v1/recordings/call-B/other.wav"):
        r = await client.get(url)
        assert r.status == 404, url
        body = await r.json()
        assert body["error"] == "not_found" and body["detail"]
    live = call_dir(tmp_path, "call-live", time.time())
    live.mkdir(parents=True)
    (live / "caller.spool").write_bytes(b"RSPL\x01")
    r = await client.get("/v1/recordings/call-live/caller.wav")
    assert r.status == 404 and "not finished" in (await r.json())["detail"]


@pytest.mark.parametrize("path", [
    "/v1/recordings/..%2F..%2Fetc%2Fpasswd/mix.wav",
    "/v1/recordings/..%2F..%2F..%2Fetc/passwd.wav",
    "/v1/recordings/%2E%2E/mix.wav",
    "/v1/recordings/../../etc/passwd",
    "/v1/recordings/a..b/mix.wav",
    "/v1/recordings/.hidden/mix.wav",
    "/v1/recordings/call%00x/mix.wav",
    "/v1/recordings/%2Fetc%2Fpasswd/mix.wav",
])
async def test_traversal_is_refused(client: Client, tmp_path: Path, path: str) -> None:
    make_call(tmp_path, "call-C", time.time())
    (tmp_path.parent / "passwd").write_text("root:x:0:0")
    r = await client.get(path)
    assert r.status in (400, 404)
    body = await r.read()
    assert r.headers.get("Content-Type", "").split(";")[0] != "audio/wav"
    assert b"root:x" not in body and not body.startswith(b"RIFF")
    if r.status == 400:
        assert (await r.json())["error"] == "invalid_call_id"


async def test_symlink_out_of_root_is_not_served(client: Client, tmp_path: Path) -> None:
    result = make_call(tmp_path, "call-S", time.time())
    secret = tmp_path.parent / "secret.wav"
    secret.write_bytes(b"RIFFsecret")
    (result.directory / "mix.wav").unlink()
    (result.directory / "mix.wav").symlink_to(secret)
    r = await client.get("/v1/recordings/call-S/mix.wav")
    assert r.status == 404


def test_index_rebuilds_on_miss_and_rate_limits(tmp_path: Path) -> None:
    index = RecordingIndex(tmp_path, rescan_interval=3600)
    old = make_call(tmp_path, "call-old", time.time() - 86400 * 10)
    assert index.find("call-old") == old.directory  # first miss: full scan
    assert index.scans == 1
    new = make_call(tmp_path, "call-new", time.time())
    assert index.find("call-new") == new.directory  # today's folder, no rescan
    assert index.find("call-missing") is None and index.scans == 1
    older = make_call(tmp_path, "call-older", time.time() - 86400 * 20)
    assert index.find("call-older") is None  # rate-limited: not found until the next scan
    index.rescan_interval = 0
    assert index.find("call-older") == older.directory and index.scans == 2
    assert index.find("../etc") is None


def test_openapi_paths_describe_the_route(tmp_path: Path) -> None:
    app = web.Application()
    add_recording_routes(app, tmp_path)
    routed = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    assert routed == {(m.upper(), p) for p, item in RECORDING_PATHS.items() for m in item}
    op = RECORDING_PATHS["/v1/recordings/{call_id}/{leg}.wav"]["get"]
    assert {"200", "206", "404", "416"} <= set(op["responses"])
    legs = next(p for p in op["parameters"] if p["name"] == "leg")
    assert legs["schema"]["enum"] == ["caller", "callee", "mix"]
