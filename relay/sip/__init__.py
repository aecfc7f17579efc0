"""Sans-IO SIP core: message codec, stream framing, transactions and dialogs (RFC 3261).

No module here touches sockets, clocks, threads or asyncio: time is an argument.
An adapter's whole job, for UDP::

    layer = TransactionLayer()
    def datagram_received(data, addr):
        for event in layer.receive_datagram(data, addr, loop.time()):
            tu.handle(event)              # RequestReceived, ResponseReceived, ...
        flush_and_rearm()
    def flush_and_rearm():
        for data, addr in layer.datagrams_to_send():
            transport.sendto(data, addr)
        deadline = layer.get_timer()      # re-arm one loop.call_at(deadline, on_timer)
    def on_timer():
        for event in layer.handle_timer(loop.time()):
            tu.handle(event)
        flush_and_rearm()

On TCP, :class:`StreamFramer` cuts the byte stream into messages first.
"""

from .dialog import Dialog, DialogState, new_branch, new_call_id, new_tag, system_random
from .events import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTimeout,
    TransportError,
)
from .framing import FeedResult, StreamFramer
from .grammar import AbsoluteUri, CSeq, NameAddr, SipParseError, SipUri, Via
from .message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    stamp_via,
)
from .transaction import (
    LocalProtocolError,
    TimerConfig,
    TransactionLayer,
    TransactionStateError,
    build_ack_for_non2xx,
    build_cancel,
)

__all__ = [
    "AbsoluteUri", "AckReceived", "CSeq", "CancelReceived", "Dialog", "DialogState", "Event",
    "FeedResult", "Headers", "LocalProtocolError", "NameAddr", "RequestReceived",
    "ResponseReceived", "SipMessage", "SipParseError", "SipRequest", "SipResponse", "SipUri",
    "StrayResponse", "StreamFramer", "TimerConfig", "TransactionKey", "TransactionLayer",
    "TransactionStateError", "TransactionTimeout", "TransportError", "Via",
    "build_ack_for_non2xx", "build_cancel", "build_error_response", "build_response",
    "new_branch", "new_call_id", "new_tag", "parse_message", "stamp_via", "system_random",
]
