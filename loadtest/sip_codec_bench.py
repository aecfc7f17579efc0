"""SIP core micro-benchmark: codec cost per message and calls/s through two transaction layers.

    python -m loadtest.sip_codec_bench [--calls 2000]

Prints CPU microseconds (process time, best of several runs, so other load on the
machine counts less) for parsing and serialising a typical ~900-byte INVITE, and the
rate of complete calls (INVITE, 100, 180, 200, ACK, BYE, 200: seven datagrams, each
serialised and parsed once) that one process drives through a UAC and a UAS
TransactionLayer in memory. ``sum(range(1000))`` is printed as the machine anchor.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable

from relay.sip import (
    AckReceived,
    Dialog,
    RequestReceived,
    ResponseReceived,
    SipRequest,
    TransactionLayer,
    build_response,
    parse_message,
)

SDP = (
    b"v=0\r\no=gw 2890844526 2890844526 IN IP4 198.51.100.7\r\ns=-\r\n"
    b"c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def invite_bytes(call: int = 0) -> bytes:
    """A typical trunk INVITE of about 900 bytes (headers + SDP)."""
    head = (
        "INVITE sip:+8613800000001@192.0.2.10:5060;user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asd{call:08d};rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:+8613800000001@192.0.2.10;user=phone>\r\n"
        f'From: "Seller 42" <sip:+8617000000042@198.51.100.7;user=phone>;tag=19283{call}\r\n'
        f"Call-ID: a84b4c76e667{call:08d}@198.51.100.7\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:+8617000000042@198.51.100.7:5060;transport=udp>\r\n"
        "P-Asserted-Identity: <sip:+8617000000042@198.51.100.7;user=phone>\r\n"
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE, INFO\r\n"
        "Supported: timer, 100rel\r\nSession-Expires: 1800;refresher=uac\r\n"
        "User-Agent: TrunkGW/1.0\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    )
    return head.encode() + SDP


def cpu_us(fn: Callable[[], object], number: int = 2000, repeat: int = 15) -> float:
    """Best process-time microseconds per call of ``fn``."""
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(number=number, repeat=repeat)) / number * 1e6


def run_calls(calls: int) -> tuple[float, int]:
    """Drive ``calls`` complete calls through a UAC and a UAS layer; (seconds, datagrams)."""
    uac, uas = TransactionLayer(), TransactionLayer(auto_trying=True)
    a, b = ("198.51.100.7", 5060), ("192.0.2.10", 5060)
    datagrams = 0
    now = 0.0
    start = time.process_time()
    for i in range(calls):
        invite = parse_message(invite_bytes(i))
        assert isinstance(invite, SipRequest)
        uac.send_request(invite, b, now)
        pending = True
        while pending:
            pending = False
            for data, _ in uac.datagrams_to_send():
                datagrams += 1
                pending = True
                for ev in uas.receive_datagram(data, a, now):
                    if isinstance(ev, RequestReceived):
                        req = ev.request
                        if req.method == "INVITE":
                            uas.send_response(build_response(req, 180, to_tag="uas1"), now)
                            uas.send_response(build_response(
                                req, 200, to_tag="uas1",
                                extra_headers=[("Contact", "<sip:x@192.0.2.10>")]), now)
                        else:
                            uas.send_response(build_response(req, 200), now)
                    elif isinstance(ev, AckReceived):
                        pass
            for data, _ in uas.datagrams_to_send():
                datagrams += 1
                pending = True
                for ev in uac.receive_datagram(data, b, now):
                    if (isinstance(ev, ResponseReceived) and ev.response.status == 200
                            and ev.key.method == "INVITE"):
                        dialog = Dialog.from_uac(invite, ev.response, sent_by="198.51.100.7:5060")
                        uac.send_stateless(dialog.create_ack(invite.cseq.number), b)
                        uac.send_request(dialog.create_request("BYE"), b, now)
        now += 0.001
    elapsed = time.process_time() - start
    now += 100.0
    uac.handle_timer(now)
    uas.handle_timer(now)
    assert len(uac) == 0 and len(uas) == 0, (len(uac), len(uas))
    return elapsed, datagrams


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per figure."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)
    data = invite_bytes()
    msg = parse_message(data)
    assert bytes(msg) == data
    anchor = cpu_us(lambda: sum(range(1000)))
    # Each a new branch, From tag and Call-ID, never seen before by the parse memo.
    it = iter([invite_bytes(i) for i in range(1, 20_001)])
    parse_new = cpu_us(lambda: parse_message(next(it)), number=2000, repeat=10)
    parse = cpu_us(lambda: parse_message(data))
    ser = cpu_us(lambda: bytes(msg))
    elapsed, datagrams = run_calls(args.calls)
    lines = [
        f"anchor sum(range(1000)): {anchor:.1f} us",
        f"INVITE size: {len(data)} bytes",
        f"parse (incl. validation of Via/From/To/CSeq/R-URI/Contact): {parse_new:.1f} us "
        f"a new call's INVITE, {parse:.1f} us a retransmission (header values remembered)",
        f"serialise: {ser:.1f} us",
        f"calls through UAC+UAS layers: {args.calls / elapsed:.0f} calls/s "
        f"({datagrams / args.calls:.0f} datagrams per call, "
        f"{elapsed / datagrams * 1e6:.1f} us per datagram end to end)",
    ]
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
