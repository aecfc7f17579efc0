"""RFC 4733 telephone-event codec and digit detector (relay/rtp/dtmf.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rtp.dtmf import DIGITS, DigitDetector, TelephoneEvent, TelephoneEventError
from relay.rtp.packet import RtpPacket

PT = 101

# --- the payload codec (RFC 4733 §2.3) ---

# Byte vectors as they appear on the wire (checked against Wireshark's RTP-event
# dissector field layout): event, E|R|volume, duration.
VECTORS = [
    ("05 0a 00 00", TelephoneEvent(5, False, 10, 0)),  # "5" starts
    ("05 0a 01 90", TelephoneEvent(5, False, 10, 400)),  # 50 ms in
    ("05 8a 03 20", TelephoneEvent(5, True, 10, 800)),  # "5" ends after 100 ms
    ("0b 80 ff ff", TelephoneEvent(11, True, 0, 0xFFFF)),  # "#", loudest, longest
    ("0a 3f 00 a0", TelephoneEvent(10, False, 63, 160)),  # "*", quietest
    ("10 07 00 a0", TelephoneEvent(16, False, 7, 160)),  # flash: an event, not a digit
]


@pytest.mark.parametrize(("hexbytes", "event"), VECTORS)
def test_vectors_round_trip(hexbytes: str, event: TelephoneEvent) -> None:
    data = bytes.fromhex(hexbytes)
    assert TelephoneEvent.parse(data) == event
    assert bytes(event) == data


def test_every_dtmf_event_maps_to_its_digit() -> None:
    assert [TelephoneEvent(n).digit for n in range(16)] == list("0123456789*#ABCD")
    assert TelephoneEvent(16).digit is None and TelephoneEvent(255).digit is None
    assert DIGITS == "0123456789*#ABCD"


def test_reserved_bit_is_ignored_on_receive_and_never_sent() -> None:
    ev = TelephoneEvent.parse(bytes.fromhex("05 4a 00 a0"))  # R set (§2.3.3)
    assert ev == TelephoneEvent(5, False, 10, 160)
    assert bytes(ev) == bytes.fromhex("05 0a 00 a0")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated telephone-event payload: 0 bytes, need 4 (RFC 4733 §2.3)"),
    (b"\x05\x8a\x03", "truncated telephone-event payload: 3 bytes, need 4 (RFC 4733 §2.3)"),
    (b"\x05\x8a\x03\x20\x05\x8a\x03\x20",
     "oversized telephone-event payload: 8 bytes, need 4 (RFC 4733 §2.3)"),
])
def test_invalid_payloads_name_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(TelephoneEventError) as exc:
        TelephoneEvent.parse(data)
    assert str(exc.value) == message


@pytest.mark.parametrize(("event", "message"), [
    (TelephoneEvent(256), "event 256 out of range 0-255"),
    (TelephoneEvent(1, volume=64), "volume 64 out of range 0-63"),
    (TelephoneEvent(1, duration=0x10000), "duration 65536 out of range 0-65535"),
])
def test_encoding_out_of_range_is_a_local_error(event: TelephoneEvent, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        bytes(event)
    assert str(exc.value) == message
    assert not isinstance(exc.value, TelephoneEventError)


# --- the detector ---


class Sender:
    """Builds what an RFC 4733 sender puts on the wire for key presses (§2.5.1)."""

    def __init__(self, ssrc: int = 0x1234, seq: int = 100, ts: int = 8000) -> None:
        self.ssrc, self.seq, self.ts = ssrc, seq, ts

    def packet(self, ts: int, ev: TelephoneEvent, marker: bool = False) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        return bytes(RtpPacket(PT, self.seq, ts, self.ssrc, marker, payload=bytes(ev)))

    def press(self, digit: str, updates: int = 3, ts: int | None = None) -> list[bytes]:
        """Start (marker), updates every 50 ms (400 units), the end three times."""
        ts = self.ts if ts is None else ts
        event = DIGITS.index(digit)
        out = [self.packet(ts, TelephoneEvent(event, duration=0), marker=True)]
        out += [self.packet(ts, TelephoneEvent(event, duration=400 * k))
                for k in range(1, updates + 1)]
        end = TelephoneEvent(event, True, duration=400 * (updates + 1))
        out += [self.packet(ts, end) for _ in range(3)]  # §2.5.1.4
        self.ts = (ts + 400 * (updates + 1) + 800) & 0xFFFFFFFF
        return out


def feed(det: DigitDetector, packets: list[bytes], now: float = 1.0) -> list[str]:
    digits: list[str] = []
    for i, p in enumerate(packets):
        digits += [d.digit for d in det.receive(p, now + 0.05 * i)]
    return digits


def test_one_digit_per_event_despite_three_end_packets() -> None:
    det, tx = DigitDetector(PT), Sender()
    packets = tx.press("1")
    got = [det.receive(p, 1.0 + i * 0.05) for i, p in enumerate(packets)]
    ends = [i for i, d in enumerate(got) if d]
    assert ends == [4]  # the first end packet; the two retransmissions say nothing
    (digit,) = got[4]
    assert digit.digit == "1" and digit.timestamp == 8000 and digit.at == pytest.approx(1.2)
    assert det.deadline is None


def test_the_same_key_twice_is_two_digits() -> None:
    det, tx = DigitDetector(PT), Sender()
    assert feed(det, tx.press("1") + tx.press("1") + tx.press("#")) == ["1", "1", "#"]


def test_lost_end_packets_end_the_event_at_the_next_one() -> None:
    det, tx = DigitDetector(PT), Sender()
    first = tx.press("4")[:-3]  # all three end packets lost (§2.6)
    second = tx.press("2")
    got = feed(det, first)
    assert got == [] and det.deadline is not None
    # The new event's first packet (new timestamp) ends "4"; "2" ends normally.
    assert feed(det, second[:1]) == ["4"]
    assert feed(det, second[1:]) == ["2"]


def test_lost_start_and_updates_still_report_at_the_end() -> None:
    det, tx = DigitDetector(PT), Sender()
    packets = tx.press("7")
    assert feed(det, packets[-2:]) == ["7"]  # only two of the end packets arrive


def test_reordered_packets_neither_repeat_nor_lose_a_digit() -> None:
    det, tx = DigitDetector(PT), Sender()
    a, b = tx.press("3"), tx.press("9")
    # The end of "3" overtakes its updates; a late update of "3" arrives inside "9".
    order = [a[0], a[4], a[1], a[2], b[0], a[3], b[1], b[4], b[2], a[5], b[5], b[6]]
    assert feed(det, order) == ["3", "9"]


def test_an_older_event_arriving_after_a_newer_one_is_ignored() -> None:
    det, tx = DigitDetector(PT), Sender()
    a, b = tx.press("5"), tx.press("6")
    assert feed(det, b[:2] + a[:2] + b[2:]) == ["6"]


def test_soft_state_ends_an_event_whose_end_never_comes() -> None:
    det, tx = DigitDetector(PT, soft_timeout=0.25), Sender()
    packets = tx.press("#")[:-3]
    feed(det, packets, now=10.0)  # the last at 10.15
    assert det.deadline == pytest.approx(10.4)
    assert det.expire(10.3) == []
    (digit,) = det.expire(10.4)
    assert digit.digit == "#" and digit.at == 10.4
    assert det.expire(11.0) == [] and det.deadline is None
    assert feed(det, tx.press("#")[-3:]) == ["#"]  # the next press is a new event


def test_a_long_event_continues_in_segments_without_a_new_digit() -> None:
    det, tx = DigitDetector(PT), Sender()
    ts = 1000
    seg1 = [tx.packet(ts, TelephoneEvent(0, duration=0), marker=True),
            tx.packet(ts, TelephoneEvent(0, duration=0xFFFF))]
    ts2 = ts + 0xFFFF  # §2.5.1.3: the next segment starts where the last one stopped
    seg2 = [tx.packet(ts2, TelephoneEvent(0, duration=400)),
            *[tx.packet(ts2, TelephoneEvent(0, True, duration=800)) for _ in range(3)]]
    assert feed(det, seg1 + seg2) == ["0"]


def test_timestamps_wrap_around() -> None:
    det, tx = DigitDetector(PT), Sender(ts=0xFFFFFA00)
    a = tx.press("1")
    b = tx.press("2")  # its timestamp has wrapped past 2**32
    assert int.from_bytes(b[0][4:8], "big") < 0x10000
    assert feed(det, a[:-3] + b) == ["1", "2"]
    assert feed(det, a[-3:]) == []  # late ends of "1": older, ignored


def test_a_new_ssrc_is_a_new_stream() -> None:
    det = DigitDetector(PT)
    one, two = Sender(ssrc=1), Sender(ssrc=2)
    assert feed(det, one.press("8")[:-3]) == []
    assert feed(det, two.press("8")) == ["8", "8"]  # the open "8" of ssrc 1, then ssrc 2's


def test_non_dtmf_events_are_consumed_but_not_reported() -> None:
    det, tx = DigitDetector(PT), Sender()
    flash = [tx.packet(500, TelephoneEvent(16, True, duration=800), True)]
    assert feed(det, flash + tx.press("A")) == ["A"]


def test_bad_packets_are_counted_and_dropped() -> None:
    det, tx = DigitDetector(PT), Sender()
    short_payload = bytes(RtpPacket(PT, 1, 5, 0x1234, payload=b"\x01\x8a\x00"))
    audio = bytes(RtpPacket(0, 2, 5, 0x1234, payload=bytes(160)))
    assert feed(det, [b"\x80\x65\x00", short_payload, b"\x00" * 16, audio]) == []
    assert det.invalid == 3  # truncated RTP, truncated payload, RTP version 0
    assert feed(det, tx.press("D")) == ["D"]


# --- properties: the only failure a peer can cause is the remote-error type ---


@given(st.binary(max_size=12))
def test_parse_fails_only_with_the_remote_error(data: bytes) -> None:
    try:
        ev = TelephoneEvent.parse(data)
    except TelephoneEventError:
        assert len(data) != 4
    else:
        assert bytes(ev) == data[:1] + bytes([data[1] & 0xBF]) + data[2:]


@settings(max_examples=300)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda seq, ts, m, ev, end, dur: bytes(RtpPacket(
        PT, seq, ts, 0x1234, m, payload=bytes(TelephoneEvent(ev, end, 10, dur)))),
        st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans(),
        st.integers(0, 20), st.booleans(), st.integers(0, 0xFFFF))), max_size=30))
def test_the_detector_never_raises_and_reports_each_timestamp_once(
        packets: list[bytes]) -> None:
    det = DigitDetector(PT)
    seen: list[int] = []
    for k, p in enumerate(packets):
        seen += [d.timestamp for d in det.receive(p, float(k))]
    seen += [d.timestamp for d in det.expire(1e9)]
    assert det.deadline is None
    assert all(isinstance(t, int) for t in seen)
