"""Issue 13 through `relay serve`, on loopback: an unanswered INVITE flood is not
amplified (every datagram back is counted), a source over its rate limit is banned
and dropped unanswered while trunks are exempt, a stranger cannot tell a number's
state from its refusal, and RSS comes back near its baseline after a barrage of
malformed INVITEs.

127.0.0.1 is the only trunk here; 127.0.0.2-127.0.0.9 (also loopback) are strangers.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from sipp_harness import X, api, bind, media_range, udp_port, write_config

pytestmark = pytest.mark.integration

STRANGER = "127.0.0.2"


def args(tmp_path: Path, cfg: Path) -> list[str]:
    return ["--outbound", f"127.0.0.1:{udp_port()}", "--trunk", "127.0.0.1/32",
            "--media-ports", media_range(), "--recordings", str(tmp_path / "rec"),
            "--log-level", "WARNING", "--config", str(cfg)]


def invite(port: int, n: int, x: str = X, host: str = STRANGER, src_port: int = 5060,
           sdp: bool = False, tag: str = "flood", caller: str = "+8613812345678") -> bytes:
    body = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
            b"m=audio 6000 RTP/AVP 0\r\n") if sdp else b""
    head = (f"INVITE sip:{x}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{src_port};branch=z9hG4bK{tag}{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{caller}@{host}>;tag=f{n}\r\n"
            f"To: <sip:{x}@127.0.0.1>\r\n"
            f"Call-ID: {tag}{n}@{host}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:a@{host}:{src_port}>\r\n"
            + ("Content-Type: application/sdp\r\n" if sdp else "")
            + f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def options(port: int, n: int, host: str) -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bKopt{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:probe@{host}>;tag=o{n}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: opt{n}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def sock_from(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return s


def collect(s: socket.socket, quiet: float, limit: float) -> list[bytes]:
    """Every datagram until none came for `quiet` seconds (at most `limit` seconds)."""
    got: list[bytes] = []
    end = time.monotonic() + limit
    s.settimeout(quiet)
    while time.monotonic() < end:
        try:
            got.append(s.recv(65535))
        except TimeoutError:
            break
    return got


def flood(relay: Any, host: str, count: int, *, x: str = X, sdp: bool = False,
          wait: float = 3.0) -> tuple[list[bytes], int]:
    """`count` INVITEs never ACKed, each sent twice (a retransmission); every datagram
    that comes back within `wait` seconds of quiet; returns (datagrams, sent).

    The relays flooded here run with t1 = 0.1 s: a response's retransmissions come at
    most T2 = 8*T1 = 0.8 s apart until timer H, so `wait` of quiet (more than three T2)
    means no more of them is coming."""
    s = sock_from(host)
    port = s.getsockname()[1]
    sent = 0
    with s:
        for n in range(count):
            msg = invite(relay.sip_port, n, x=x, host=host, src_port=port, sdp=sdp)
            for _ in range(2):
                s.sendto(msg, ("127.0.0.1", relay.sip_port))
                sent += 1
            if n % 20 == 19:
                time.sleep(0.02)  # keep the kernel buffers from dropping the flood
        return collect(s, wait, 60.0), sent


def first_lines(datagrams: list[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in datagrams:
        line = d.split(b"\r\n", 1)[0].decode()
        out[line] = out.get(line, 0) + 1
    return out


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful(before)", "stateless"])
def test_an_unanswered_invite_flood_is_not_amplified(relay_factory: Any, tmp_path: Path,
                                                     stateless: bool) -> None:
    # t1 = 0.1 s: timer H (64*T1) ends a stateful refusal's retransmissions in 6.4 s,
    # so the test sees all of them. The stateful run is the relay as it was (issue 13
    # measured ~7x); the assertion on amplification is for the default (stateless).
    cfg = write_config(tmp_path / "cfg", {"t1": 0.1, "rate_limit": 0,
                                          "stateless_refusals": stateless})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args(tmp_path, cfg))
    back, sent = flood(relay, STRANGER, 150)
    lines = first_lines(back)
    ratio = len(back) / sent
    print(f"\nstranger flood ({'stateless' if stateless else 'stateful'}): {sent} "
          f"INVITEs in, {len(back)} datagrams back, amplification {ratio:.2f}: {lines}")
    assert set(lines) <= {"SIP/2.0 100 Trying", "SIP/2.0 403 Forbidden"}
    if not stateless:
        assert ratio > 2  # the defect the issue measured: 100s and retransmissions
        return
    assert ratio <= 1.0 and lines.get("SIP/2.0 403 Forbidden", 0) >= sent * 0.9
    # A retransmission got the same answer (the same To tag), not a new one.
    by_call: dict[bytes, set[bytes]] = {}
    for d in back:
        call = re.search(rb"Call-ID: (\S+)", d)
        tag = re.search(rb"To: [^\r]*;tag=(\S+)", d)
        assert call and tag
        by_call.setdefault(call.group(1), set()).add(tag.group(1))
    assert all(len(tags) == 1 for tags in by_call.values())


def test_a_trunks_refused_invites_are_stateless_too(relay_factory: Any,
                                                    tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", {"t1": 0.1, "announce_refusals": False})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args(tmp_path, cfg))
    back, sent = flood(relay, "127.0.0.1", 100, x="+8617000009999", sdp=True)
    lines = first_lines(back)
    print(f"\ntrunk flood to an unknown X: {sent} in, {len(back)} back: {lines}")
    assert len(back) <= sent and set(lines) == {"SIP/2.0 404 Not Found"}


def test_a_source_over_its_rate_limit_is_banned_and_trunks_are_exempt(
        relay_factory: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", {"rate_limit": 20, "rate_window": 10,
                                          "rate_ban": 4})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args(tmp_path, cfg))
    dest = ("127.0.0.1", relay.sip_port)
    with sock_from("127.0.0.3") as bad, sock_from("127.0.0.1") as trunk, \
            sock_from("127.0.0.4") as other:
        for n in range(100):
            bad.sendto(options(relay.sip_port, n, "127.0.0.3"), dest)
            trunk.sendto(options(relay.sip_port, n, "127.0.0.1"), dest)
        answered_bad = collect(bad, 1.5, 20.0)
        answered_trunk = collect(trunk, 1.5, 20.0)
        assert len(answered_bad) == 20  # the limit, then silence
        assert all(d.startswith(b"SIP/2.0 403") for d in answered_bad)
        assert len(answered_trunk) == 100  # a trunk is exempt
        assert all(d.startswith(b"SIP/2.0 200") for d in answered_trunk)
        # Banned: even one request is dropped; another stranger is still answered.
        bad.sendto(options(relay.sip_port, 500, "127.0.0.3"), dest)
        other.sendto(options(relay.sip_port, 501, "127.0.0.4"), dest)
        assert collect(bad, 1.0, 5.0) == []
        assert len(collect(other, 2.0, 5.0)) == 1
        # The ban ends (4 s), and the source is heard again.
        time.sleep(4.5)
        bad.sendto(options(relay.sip_port, 502, "127.0.0.3"), dest)
        assert len(collect(bad, 3.0, 5.0)) == 1
    metrics = _metrics(relay.base)
    assert metrics["relay_sip_rate_limited_total"] >= 81


def _metrics(base: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def _normalise(d: bytes) -> bytes:
    """A response without what differs per request (tags, branch, Call-ID, CSeq...)."""
    d = re.sub(rb";tag=[^;\r>]+", b";tag=T", d)
    d = re.sub(rb"branch=[^;\r]+", b"branch=B", d)
    d = re.sub(rb"Call-ID: [^\r]+", b"Call-ID: C", d)
    d = re.sub(rb"sip:\+?\d+@", b"sip:N@", d)
    d = re.sub(rb";received=[^;\r]+|;rport=\d+", b"", d)
    return re.sub(rb"Content-Length: \d+", b"Content-Length: L", d)


def test_a_stranger_cannot_tell_a_numbers_state(relay_factory: Any, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", {"rate_limit": 0})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args(tmp_path, cfg))
    active = bind(relay.base)
    frozen_x = "+8617055550001"
    frozen = bind(relay.base, x=frozen_x, a="+8613811110001", b="+8613911110001")
    api(relay.base, "POST", f"/v1/bindings/{frozen['id']}/freeze")
    idle_x = "+8617055550002"
    api(relay.base, "POST", "/v1/numbers", {"numbers": [idle_x]})  # in the pool, unbound
    answers: dict[str, bytes] = {}
    with sock_from(STRANGER) as s:
        port = s.getsockname()[1]
        for n, (name, x) in enumerate((("active", active["x"]), ("frozen", frozen_x),
                                       ("idle", idle_x), ("unknown", "+8617099999999"))):
            s.sendto(invite(relay.sip_port, n, x=x, src_port=port, sdp=True, tag=name),
                     ("127.0.0.1", relay.sip_port))
            [answer] = collect(s, 1.5, 10.0)
            answers[name] = _normalise(answer)
    assert answers["active"].startswith(b"SIP/2.0 403")
    assert len(set(answers.values())) == 1, answers
    # Through a trunk the contract stands: the frozen binding's own party hears 410.
    with sock_from("127.0.0.1") as t:
        port = t.getsockname()[1]
        t.sendto(invite(relay.sip_port, 9, x=frozen_x, host="127.0.0.1", src_port=port,
                        tag="trunk", caller="+8613811110001"), ("127.0.0.1", relay.sip_port))
        got = collect(t, 1.5, 10.0)
    assert any(d.startswith(b"SIP/2.0 410") for d in got), got


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_returns_near_baseline_after_malformed_invites(relay_factory: Any,
                                                           tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", {"rate_limit": 0})
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db", args(tmp_path, cfg))
    assert relay.proc is not None
    pid = relay.proc.pid

    def barrage(first: int, count: int) -> None:
        # Parsable enough to be answered 400 (or refused): every one distinct, with
        # distinct header values (the parse memo) and a bad Content-Length or CSeq.
        with sock_from("127.0.0.1") as s:
            for n in range(first, first + count):
                msg = invite(relay.sip_port, n, x=f"+86170{n:08d}", host="127.0.0.1",
                             tag=f"bad{n}-{'z' * (n % 200)}")
                if n % 2:
                    msg = msg.replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
                else:
                    msg = msg.replace(b"Content-Length: 0", b"Content-Length: 99")
                s.sendto(msg, ("127.0.0.1", relay.sip_port))
                if n % 50 == 49:
                    time.sleep(0.005)
                    while True:  # drain the answers so our buffer never blocks
                        s.setblocking(False)
                        try:
                            s.recv(65535)
                        except BlockingIOError:
                            break
                    s.setblocking(True)

    barrage(0, 2000)  # warm-up: the allocator's arenas, the memo, imports
    time.sleep(2.0)
    baseline = _rss_kb(pid)
    barrage(10_000, 20_000)
    time.sleep(3.0)
    after = _rss_kb(pid)
    print(f"\nRSS: {baseline} kB after warm-up, {after} kB after 20,000 malformed INVITEs "
          f"(+{after - baseline} kB)")
    # Before issue 13 the parse memo kept up to 20,000 values each: +3.8 MB here, for
    # good. Bounded by bytes it stays within a little of the warm baseline (measured
    # +0.6 MB; the allocator on a loaded machine is not exact).
    assert after - baseline < 2 * 1024
    with urllib_open(relay.base + "/healthz") as r:
        assert r.status == 200


def urllib_open(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=10)
