"""Randomised call flows: whatever the peers do, in whatever order, with loss, the switch
never raises, every attempt ends, and every attempt leaves exactly one record."""

from __future__ import annotations

import random

import pytest
from b2bua_harness import CALLER, Harness, X, sdp

from relay.sip import SipRequest, SipResponse


def _cancel_for(req: SipRequest) -> SipRequest:
    return SipRequest("CANCEL", req.uri, [(n, req.headers.get(n) or "") for n in
                                          ("via", "from", "to", "call-id")] +
                      [("CSeq", "1 CANCEL"), ("Max-Forwards", "70")])


def _step(h: Harness, rng: random.Random, invite: SipRequest) -> None:
    """One random move by the caller or the callee."""
    b_invites = [m for m in h.to_callee if isinstance(m, SipRequest) and m.method == "INVITE"]
    choice = rng.randrange(9)
    if choice == 0:
        h.deliver(bytes(_cancel_for(invite)), CALLER)
    elif choice in (1, 2) and b_invites:
        code = rng.choice([100, 180, 183, 200, 200, 486, 487, 503, 302, 404])
        body = sdp("bob", 32000) if code in (183, 200) and rng.random() < 0.9 else b""
        h.callee_reply(b_invites[0], code, body=body, tag=rng.choice(["t1", "t1", "t2"]))
    elif choice == 3 and any(isinstance(m, SipResponse) and m.status == 200
                             for m in h.to_caller):
        h.caller_ack()
    elif choice == 4 and any(isinstance(m, SipResponse) and m.status == 200
                             for m in h.to_caller):
        h.in_dialog("C", rng.choice(["BYE", "INVITE", "INFO", "UPDATE"]),
                    cseq=rng.randrange(2, 50), body=sdp("alice", 30100))
    elif choice == 5 and b_invites and any(isinstance(m, SipRequest) and m.method == "ACK"
                                           for m in h.to_callee):
        h.in_dialog("B", rng.choice(["BYE", "INVITE", "INFO"]), cseq=rng.randrange(2, 50),
                    body=sdp("bob", 32100) if rng.random() < 0.8 else b"")
    elif choice == 6:
        # answer whatever in-dialog request the relay last sent to either side
        for side, msgs in (("C", h.to_caller), ("B", h.to_callee)):
            reqs = [m for m in msgs if (isinstance(m, SipRequest) and m.method not in
                    ("ACK", "INVITE")) or (isinstance(m, SipRequest) and m.method == "INVITE"
                                           and m.to_tag)]
            if reqs:
                req = reqs[-1]
                status = rng.choice([200, 200, 481, 488, 491])
                body = sdp("x", 30200) if status == 200 and req.method in (
                    "INVITE", "UPDATE") else b""
                (h.caller_reply if side == "C" else
                 lambda r, s, body=b"": h.callee_reply(r, s, body=body))(req, status, body=body)
    else:
        h.advance(rng.choice([0.1, 0.6, 2.0, 5.0]))


@pytest.mark.parametrize("seed", range(400))
def test_random_flows_always_end_cleanly(seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(ring_timeout=20.0, max_call_seconds=60.0)
    h.bind()
    loss = rng.choice([0.0, 0.0, 0.1, 0.3])
    h.drop = lambda _side, _data: rng.random() < loss
    invite = h.caller_invite(x=X, call_id=f"a-call-r{seed}@caller", branch=f"z9hG4bKr{seed}")
    for _ in range(rng.randrange(3, 60)):
        _step(h, rng, invite)
    h.drop = lambda _side, _data: False
    h.advance(200.0)  # every timer (ring, duration, B, H, L, ...) has fired by now
    assert h.switch.live == 0 and not h.switch.calls
    assert len(h.records) == 1
    rec = h.records[0]
    assert rec["sip_code"] is not None and rec["released_by"] in ("caller", "callee", "relay")
    for addr, data in h.raw:  # privacy holds on every path, not only the happy one
        text = data.decode(errors="replace")
        leaks = (("11112222", "AliceSecret", "caller-secret", "atag1", "a-call", "alice")
                 if addr != CALLER else ("33334444", "BobSecret", "callee-secret", "bob"))
        assert not [w for w in leaks if w in text], text
    assert not h.switch._clients or all(leg.control is None or leg.control.ended for leg, _p in
                                        h.switch._clients.values())
