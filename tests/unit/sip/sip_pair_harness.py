"""In-memory pair harness: two TransactionLayers joined by a lossy, fake-clock link."""

from __future__ import annotations

import random
from collections.abc import Callable

from relay.sip import (
    Event,
    SipRequest,
    TimerConfig,
    TransactionLayer,
)

CLIENT = ("192.0.2.1", 5060)
SERVER = ("192.0.2.2", 5060)

Dropper = Callable[[bytes, str], bool]


def make_request(method: str = "INVITE", branch: str = "z9hG4bKtest1", cseq: int = 1,
                 call_id: str = "call-1@example.com") -> SipRequest:
    """A minimal valid request from CLIENT to SERVER."""
    return SipRequest(method, "sip:+8613800000001@192.0.2.2", [
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", "<sip:+8617000000042@192.0.2.1>;tag=caller1"),
        ("To", "<sip:+8613800000001@192.0.2.2>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:+8617000000042@192.0.2.1:5060>"),
    ])


class Pair:
    """client <-> server with optional loss, duplication and reordering.

    ``drop(data, direction)`` decides deterministic losses ("c2s" or "s2c");
    ``loss``/``dup``/``reorder`` are probabilities driven by a seeded RNG.
    """

    def __init__(self, *, reliable: bool = False, auto_trying: bool = True,
                 drop: Dropper | None = None, loss: float = 0.0, dup: float = 0.0,
                 reorder: float = 0.0, seed: int = 1) -> None:
        cfg = TimerConfig()
        self.client = TransactionLayer(cfg, reliable=reliable)
        self.server = TransactionLayer(cfg, reliable=reliable, auto_trying=auto_trying)
        self.now = 0.0
        self.drop = drop
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.rng = random.Random(seed)
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.wire: list[tuple[str, bytes]] = []  # every datagram put on the wire
        self.on_server: Callable[[Event], None] | None = None
        self.on_client: Callable[[Event], None] | None = None

    def _link(self, items: list[tuple[bytes, tuple[str, int]]], direction: str) -> list[bytes]:
        out: list[bytes] = []
        for data, _addr in items:
            self.wire.append((direction, data))
            if self.drop is not None and self.drop(data, direction):
                continue
            if self.rng.random() < self.loss:
                continue
            out.append(data)
            if self.rng.random() < self.dup:
                out.append(data)
        if len(out) > 1 and self.rng.random() < self.reorder:
            self.rng.shuffle(out)
        return out

    def flush(self) -> None:
        """Deliver queued datagrams both ways until the wire is quiet."""
        for _ in range(1000):
            c2s = self._link(self.client.datagrams_to_send(), "c2s")
            s2c = self._link(self.server.datagrams_to_send(), "s2c")
            if not c2s and not s2c:
                return
            for data in c2s:
                for ev in self.server.receive_datagram(data, CLIENT, self.now):
                    self.server_events.append(ev)
                    if self.on_server:
                        self.on_server(ev)
            for data in s2c:
                for ev in self.client.receive_datagram(data, SERVER, self.now):
                    self.client_events.append(ev)
                    if self.on_client:
                        self.on_client(ev)
        raise AssertionError("the link never went quiet")

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, firing timers in deadline order."""
        target = self.now + seconds
        while True:
            due = [t for t in (self.client.get_timer(), self.server.get_timer())
                   if t is not None and t <= target]
            if not due:
                break
            self.now = max(self.now, min(due))
            for layer, sink, hook in ((self.client, self.client_events, self.on_client),
                                      (self.server, self.server_events, self.on_server)):
                for ev in layer.handle_timer(self.now):
                    sink.append(ev)
                    if hook:
                        hook(ev)
            self.flush()
        self.now = target

    def sent(self, direction: str, start: bytes) -> int:
        """How many datagrams starting with ``start`` went ``direction``."""
        return sum(1 for d, data in self.wire if d == direction and data.startswith(start))
