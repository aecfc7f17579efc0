"""The parse memo (relay.sip.grammar._memo) and the pooled identifier source."""

from __future__ import annotations

import pytest

from relay.sip import grammar
from relay.sip.dialog import Dialog
from relay.sip.grammar import SipParseError, parse_name_addr, parse_via
from relay.sip.message import SipRequest, parse_message

INVITE = (
    b"INVITE sip:+8617055556666@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKmemo1\r\n"
    b'From: "A" <sip:+8613811112222@192.0.2.10>;tag=memo-a\r\n'
    b"To: <sip:+8617055556666@192.0.2.1>\r\n"
    b"Call-ID: memo-1@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+8613811112222@192.0.2.10:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_the_same_text_gives_the_same_object() -> None:
    value = '"A" <sip:+8613811112222@192.0.2.10>;tag=memo-a'
    assert parse_name_addr(value) is parse_name_addr(value)
    first, second = parse_message(INVITE), parse_message(INVITE)
    assert first.from_ is second.from_ and first.vias[0] is second.vias[0]


def test_building_a_dialog_does_not_change_shared_values() -> None:
    # Dialog strips the tag from From/To for its URIs: it must copy, not mutate,
    # or every later message with this From would lose its tag.
    req = parse_message(INVITE)
    assert isinstance(req, SipRequest)
    Dialog.from_uas(req, local_tag="relay-tag", local_contact="<sip:x@192.0.2.1>",
                    sent_by="192.0.2.1:5060")
    again = parse_message(INVITE)
    assert again.from_tag == "memo-a"
    assert parse_name_addr('"A" <sip:+8613811112222@192.0.2.10>;tag=memo-a').tag == "memo-a"


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grammar, "MEMO_LIMIT", 50)
    for i in range(500):
        parse_via(f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbound{i}")
    cache = parse_via.__closure__[0].cell_contents  # type: ignore[attr-defined, index]
    assert isinstance(cache, dict) and len(cache) <= 50
    assert parse_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbound499").branch \
        == "z9hG4bKbound499"


def test_errors_are_raised_every_time_and_not_remembered() -> None:
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_via("not a via")
    cache = parse_via.__closure__[0].cell_contents  # type: ignore[attr-defined, index]
    assert "not a via" not in cache


def test_identifiers_come_from_the_pool_fresh_and_unshared_after_fork() -> None:
    import os

    from relay.sip.dialog import new_random_pool

    take = new_random_pool(block=32)
    seen = {take(8) for _ in range(100)}  # crosses many block boundaries
    assert len(seen) == 100 and all(len(v) == 8 for v in seen)
    assert len(take(100)) == 100  # larger than a block
    take(4)  # the pool now holds bytes a fork must not reuse
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it would hand out next
        os.write(w, take(8))
        os._exit(0)
    os.close(w)
    child = os.read(r, 8)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 8 and child != take(8)
