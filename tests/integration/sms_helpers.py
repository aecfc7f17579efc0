"""Helpers shared by the SMS end-to-end tests: JSON over HTTP, smpplib sessions, bindings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import smpplib.client

X = "+8617000000001"
A = "+8613800000001"  # courier
B = "+8613900000002"  # customer
STRANGER = "+8613700000003"


def digits(number: str) -> str:
    """SMPP TON 1 addresses: E.164 without the plus."""
    return number.lstrip("+")


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def make_binding(base: str, x: str = X, a: str = A, b: str = B,
                 token: str | None = None) -> str:
    """Add X to the pool and bind A and B on it (AXB); returns the binding id."""
    assert http("POST", f"{base}/v1/numbers", {"numbers": [x]}, token)[0] == 201
    status, body = http("POST", f"{base}/v1/bindings", {"mode": "AXB", "a": a, "b": b, "x": x},
                        token)
    assert status in (200, 201), body
    return str(body["id"])


def wait_messages(base: str, query: dict[str, str], count: int,
                  timeout: float = 10.0, token: str | None = None) -> list[Any]:
    """Poll GET /v1/messages until `count` records match (records are written in batches)."""
    query_s = urllib.parse.urlencode(query)
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while time.monotonic() < deadline:
        got = http("GET", f"{base}/v1/messages?{query_s}", token=token)[1]["messages"]
        if len(got) >= count:
            return got
        time.sleep(0.05)
    raise AssertionError(f"only {len(got)} message records for {query}")


def connect(port: int) -> smpplib.client.Client:
    cl = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    cl.connect()
    return cl


def close(cl: smpplib.client.Client) -> None:
    try:
        cl.unbind()
    finally:
        cl.disconnect()


def receive(cl: smpplib.client.Client, count: int) -> list[Any]:
    """Read deliver_sm PDUs (smpplib answers each) until `count` arrived."""
    got: list[Any] = []
    cl.set_message_received_handler(lambda pdu, **_: got.append(pdu))
    while len(got) < count:
        cl.read_once()
    return got


def join_parts(pdus: list[Any]) -> tuple[bytes, int]:
    """Reassemble 8-bit-ref UDH parts by hand (independently of relay.sms)."""
    if len(pdus) == 1 and not int(pdus[0].esm_class) & 0x40:
        return pdus[0].short_message, int(pdus[0].data_coding)
    parts = {}
    for p in pdus:
        sm = p.short_message
        assert int(p.esm_class) & 0x40 and sm[:3] == b"\x05\x00\x03"
        assert sm[4] == len(pdus)
        parts[sm[5]] = sm[6:]
    return b"".join(parts[i] for i in sorted(parts)), int(pdus[0].data_coding)


def tap(cl: smpplib.client.Client) -> bytearray:
    """Everything `cl` reads from the wire from now on, as raw bytes."""
    wire = bytearray()
    recv = cl._recv_exact

    def tee(size: int) -> bytes:
        data: bytes = recv(size)
        wire.extend(data)
        return data

    cl._recv_exact = tee  # type: ignore[method-assign]
    return wire
