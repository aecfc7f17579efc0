"""Signed recording links over real HTTP, through the API's own middleware (tokens on)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from test_recordings_api import make_call

from recordings.api import add_recording_routes
from recordings.links import LinkSigner
from relay.api.app import build_api
from relay.app import Node
from relay.config import Config

ADMIN = {"Authorization": "Bearer adm-token"}
OPS = {"Authorization": "Bearer ops-token"}
KEY_OLD, KEY_NEW = b"previous-key-0123456789", b"current-key-0123456789"


class Api:
    def __init__(self, server: TestServer, session: ClientSession) -> None:
        self.server, self.http = server, session

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    cfg = Config(store=f"sqlite:///{tmp_path}/relay.db", recordings=str(tmp_path / "rec"),
                 api_tokens={"adm-token": "admin", "ops-token": "ops"})
    node = Node(cfg)
    await node.store.open()
    app = build_api(node)
    add_recording_routes(app, cfg.recordings, rescan_interval=0.0,
                         signer=LinkSigner((KEY_NEW, KEY_OLD)))
    server = TestServer(app)
    await server.start_server()
    async with ClientSession() as session:
        yield Api(server, session)
    await server.close()
    await node.store.close()


async def test_links_play_without_a_token_and_with_ranges(api: Api, tmp_path: Path) -> None:
    result = make_call(tmp_path / "rec", "call-L1", time.time())
    r = await api.http.get(api.url("/v1/recordings/call-L1/mix.wav"))
    assert r.status == 401  # no token, no signature
    before = time.time()
    r = await api.http.post(api.url("/v1/recordings/call-L1/links?ttl=600"), headers=OPS)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert set(body["links"]) == {"caller", "callee", "mix"}
    assert before + 600 - 1 <= body["expires"] <= time.time() + 600
    assert body["expires_at"].endswith("Z") and "." in body["expires_at"]
    for leg, url in body["links"].items():
        q = parse_qs(urlsplit(url).query)
        assert q["expires"] == [str(body["expires"])] and len(q["sig"][0]) == 64
        r = await api.http.get(url)  # no Authorization header at all
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        assert await r.read() == (result.directory / f"{leg}.wav").read_bytes()
    mix = (result.directory / "mix.wav").read_bytes()
    r = await api.http.get(body["links"]["mix"], headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-199/{len(mix)}"
    assert await r.read() == mix[100:200]


async def test_tampered_expired_and_rotated_links(api: Api, tmp_path: Path) -> None:
    make_call(tmp_path / "rec", "call-L2", time.time())
    make_call(tmp_path / "rec", "call-L3", time.time())
    r = await api.http.post(api.url("/v1/recordings/call-L2/links"), headers=ADMIN)
    links = (await r.json())["links"]
    assert (await r.json())["expires"] >= time.time() + 7200 - 2  # the default ttl
    mix = links["mix"]
    q = parse_qs(urlsplit(mix).query)
    sig, exp = q["sig"][0], q["expires"][0]
    tampered = [
        mix.replace("call-L2", "call-L3"),                          # another call
        mix.replace("/mix.wav", "/caller.wav"),                     # another leg
        mix.replace(f"expires={exp}", f"expires={int(exp) + 3600}"),  # a longer life
        mix.replace(sig, sig[::-1]),                                # another signature
        mix.replace(f"sig={sig}", "sig="),                          # none
        mix.split("&sig=")[0],                                      # expires only
    ]
    for url in tampered:
        r = await api.http.get(url)
        assert r.status == 403, url
        assert (await r.json())["error"] in ("link_tampered", "link_malformed")
        assert not (await r.read()).startswith(b"RIFF")
    # A token does not rescue a bad signature: the signature decides.
    r = await api.http.get(tampered[0], headers=ADMIN)
    assert r.status == 403
    # Expired: signed with the current key, a second ago.
    past = int(time.time()) - 1
    old = api.url("/v1/recordings/call-L2/mix.wav?"
                  + LinkSigner((KEY_NEW,)).query("call-L2", "mix", past))
    r = await api.http.get(old)
    assert r.status == 403 and (await r.json())["error"] == "link_expired"
    # Signed with the previous key (before a rotation): still good.
    later = int(time.time()) + 60
    prev = api.url("/v1/recordings/call-L2/mix.wav?"
                   + LinkSigner((KEY_OLD,)).query("call-L2", "mix", later))
    assert (await api.http.get(prev)).status == 200
    # A key nobody configured: tampered.
    other = api.url("/v1/recordings/call-L2/mix.wav?"
                    + LinkSigner((b"stranger-key-0123456789",)).query("call-L2", "mix", later))
    assert (await api.http.get(other)).status == 403


async def test_link_requests_checked(api: Api, tmp_path: Path) -> None:
    make_call(tmp_path / "rec", "call-L4", time.time())
    for ttl in ("0", "-1", "abc", str(7 * 86400 + 1)):
        r = await api.http.post(api.url(f"/v1/recordings/call-L4/links?ttl={ttl}"),
                                headers=ADMIN)
        assert r.status == 422, ttl
    r = await api.http.post(api.url("/v1/recordings/nope/links"), headers=ADMIN)
    assert r.status == 404
    r = await api.http.post(api.url("/v1/recordings/a..b/links"), headers=ADMIN)
    assert r.status == 400
    r = await api.http.post(api.url("/v1/recordings/call-L4/links"))
    assert r.status == 401  # making links needs a token (admin or ops)
    # Ops may make links, but no other write.
    r = await api.http.post(api.url("/v1/bindings"), headers=OPS, json={})
    assert r.status == 403


@pytest.mark.integration
def test_relay_serve_signs_with_configured_keys(tmp_path: Path, relay_factory: Any) -> None:
    """`relay serve` reads [recordings] link_keys; links from it play without a token."""
    rec = tmp_path / "rec"
    conf = tmp_path / "relay.toml"
    conf.write_text('[api]\ntokens = { "adm-token" = "admin", "ops-token" = "ops" }\n'
                    '[recordings]\nlink_keys = ["current-key-0123456789", '
                    '"previous-key-0123456789"]\n')
    make_call(rec, "call-S1", time.time())
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          ["--config", str(conf), "--recordings", str(rec)])
    req = urllib.request.Request(relay.base + "/v1/recordings/call-S1/links?ttl=60",
                                 method="POST", headers=OPS)
    with urllib.request.urlopen(req) as r:
        body = json.loads(r.read())
    url = body["links"]["caller"]
    with urllib.request.urlopen(url) as r:
        assert r.read() == (rec / call_dir_of(rec, "call-S1") / "caller.wav").read_bytes()
    # The link verifies under the configured key (not a key file the relay made up).
    q = parse_qs(urlsplit(url).query)
    assert LinkSigner((KEY_NEW,)).sign("call-S1", "caller", int(q["expires"][0])) \
        == q["sig"][0]
    assert not (rec / ".link_key").exists()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.replace("caller.wav", "callee.wav"))
    assert err.value.code == 403


def call_dir_of(root: Path, call_id: str) -> Path:
    return next(root.glob(f"*/*/*/{call_id}")).relative_to(root)
