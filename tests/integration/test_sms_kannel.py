"""A real Kannel (bearerbox + smsbox) against `relay serve --smpp` (issue 17).

Kannel binds to the relay's SMPP server as one transceiver, takes sendsms over HTTP and
calls a local receiver for every MO message and delivery report. A courier's text to X
goes out of Kannel as submit_sm, comes back from the relay as deliver_sm from X to the
customer (Kannel's MO), and the relay's receipt must be matched by Kannel to the message
it sent: single and multipart, GSM and UCS-2. A frozen X is refused once (DLR 16, no
resend); messages Kannel queued while the relay restarted arrive exactly once.
Skipped when Kannel is not installed (test.sh installs Debian's `kannel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from kannel.gateway import Kannel, Receiver, kannel_binaries
from sms_helpers import A, B, X, http, make_binding, wait_messages

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(kannel_binaries() is None, reason="Kannel is not installed")]

CHINESE = "您的外卖已送达，请到北门取餐。"  # noqa: RUF001 (real Chinese punctuation)
LONG = ("Courier here: I am at the north gate with your order 1234, please come down. "
        * 5)[:380]  # 3 GSM parts
LONG_UCS2 = "您的外卖已送达北门请下楼取餐谢谢" * 6  # 96 UCS-2 units: 2 parts

# Kannel's DLR values (dlr-mask bits): 1 delivered, 2 failed, 16 rejected by the SMSC.
DELIVERED, FAILED, REJECTED = 1, 2, 16


def poll(what: Callable[[], Any], timeout: float, message: str) -> Any:
    """`what()` once it is truthy; generous: Kannel and the relay share 2 busy cores."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(message)


@pytest.fixture
def setup(relay_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, Kannel, Receiver]]:
    port = free_port()
    relay = relay_factory(f"sqlite:///{tmp_path}/relay.db",
                          ["--smpp", f"127.0.0.1:{port}", "--smpp-account", "kannel:kpw"],
                          "kannel")
    relay.smpp_port = port
    receiver = Receiver()
    receiver.start()
    kannel = Kannel(tmp_path / "kannel", port, "kannel", "kpw", receiver)
    kannel.start()
    try:
        kannel.wait_online()
        yield relay, kannel, receiver
    finally:
        kannel.stop()
        receiver.stop()


def test_kannel_texts_receipts_refusal_and_restart(setup: Any, tmp_path: Path) -> None:
    relay, kannel, receiver = setup
    binding = make_binding(relay.base)
    sent = {"single": "Hello, at the gate", "long": LONG, "zh": CHINESE, "long_zh": LONG_UCS2}
    # Kannel's own number forms: "+" goes out as TON 1, bare digits as its default TON.
    for tag, text in sent.items():
        kannel.send(A.lstrip("+") if tag in ("single", "zh") else A, X, text, tag,
                    ucs2=tag in ("zh", "long_zh"))

    # Each comes back as MO from X to B, whole and in its coding.
    poll(lambda: len(receiver.mo) >= 4, 60, f"MO: {receiver.mo}\n{kannel.log()[-3000:]}")
    got = {m.text: m for m in receiver.mo}
    assert set(got) == set(sent.values()), receiver.mo
    assert all(m.sender.lstrip("+") == X.lstrip("+") and m.to.lstrip("+") == B.lstrip("+")
               for m in receiver.mo)
    assert got[CHINESE].coding == 2 and got[LONG].coding == 0

    # Kannel matched the relay's receipt for every message (delivered), multipart included.
    def delivered() -> set[str]:
        return {d.tag for d in receiver.dlr if d.type == DELIVERED}
    poll(lambda: delivered() >= set(sent), 60,
         f"DLRs: {receiver.dlr}\n{kannel.log()[-3000:]}")
    assert "could not find" not in kannel.log()
    assert not [d for d in receiver.dlr if d.type in (FAILED, REJECTED)]
    records = wait_messages(relay.base, {"binding": binding}, 4)
    assert sorted(r["parts"] for r in records) == [1, 1, 2, 3]
    assert all(r["status"] == "delivered" for r in records)

    # A frozen X: refused once, for good (DLR 16), recorded once, never resent.
    assert http("POST", f"{relay.base}/v1/bindings/{binding}/freeze", {})[0] in (200, 204)
    kannel.send(A, X, "are you there?", "frozen")
    poll(lambda: [d for d in receiver.dlr if d.tag == "frozen"], 60,
         f"no DLR for the frozen X\n{kannel.log()[-3000:]}")
    time.sleep(6)  # three of Kannel's resend periods (sms-resend-freq = 2)
    assert [d.type for d in receiver.dlr if d.tag == "frozen"] == [REJECTED]
    refused = [r for r in wait_messages(relay.base, {"x": X}, 5) if r["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["reason"] == "frozen"
    assert not refused[0].get("retries")

    # Restart: the relay unbinds on SIGTERM; Kannel queues what it gets meanwhile and
    # delivers it once the relay is back, each message exactly once.
    x2 = "+8617000000002"
    binding2 = make_binding(relay.base, x=x2)
    relay.stop()
    assert "smpp unbound 1 of 1 gateway link(s)" in Path(relay.log).read_text()
    mo_before = len(receiver.mo)
    queued = [f"queued message {i}" for i in range(3)]
    for i, text in enumerate(queued):
        kannel.send(A, x2, text, f"q{i}")
    relay.start()
    kannel.wait_online(60)
    poll(lambda: len(receiver.mo) >= mo_before + 3, 90,
         f"queue not delivered: {receiver.mo}\n{kannel.log()[-3000:]}")
    time.sleep(5)  # anything resent twice would arrive by now
    assert sorted(m.text for m in receiver.mo[mo_before:]) == queued
    assert len(wait_messages(relay.base, {"binding": binding2}, 3)) == 3
    poll(lambda: {f"q{i}" for i in range(3)} <= delivered(), 60, f"DLRs: {receiver.dlr}")
    log = (tmp_path / "kannel" / "bearerbox.log").read_text(errors="replace")
    assert "could not find" not in log
