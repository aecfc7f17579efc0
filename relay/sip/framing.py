"""SIP message framing on a byte stream (TCP/TLS), RFC 3261 §18.3 and RFC 5626 §3.5.1.

On a stream the only delimiter is Content-Length, so it is mandatory; a message
without it, or with a header block over the size limit, is a framing error and
the adapter must close the connection (there is no way to resynchronise).
"""

from __future__ import annotations

import re

from .grammar import SipParseError

__all__ = ["FeedResult", "StreamFramer"]

# RFC 3261 §7.3.3 compact form "l" and the full name; the value is 1*DIGIT (§20.14).
_CL_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]*)[ \t]*(?=\r\n)", re.IGNORECASE)


class FeedResult(list[bytes]):
    """The complete messages from one :meth:`StreamFramer.feed` call.

    ``pong`` is True when a double-CRLF keepalive ping arrived: RFC 5626 §3.5.1 asks
    the receiver to answer with a single CRLF (the adapter writes b"\\r\\n").
    """

    pong: bool = False


class StreamFramer:
    """Split a TCP byte stream into SIP messages, strictly.

    ``feed(data)`` returns the complete messages (possibly none, possibly many);
    partial data is kept until the rest arrives.
    """

    def __init__(self, max_header_bytes: int = 16384, max_body_bytes: int = 65536) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> FeedResult:
        """Add received bytes; return every message now complete.

        Raises SipParseError on a framing error (missing or bad Content-Length,
        header block or body over the limit); the stream is unusable afterwards.
        """
        buf = self._buf
        buf += data
        out = FeedResult()
        while buf:
            # RFC 5626 §3.5.1 / RFC 3261 §7.5: CRLFs between messages are keepalives.
            if buf[0] == 0x0D or buf[0] == 0x0A:
                if buf.startswith(b"\r\n\r\n"):
                    out.pong = True
                    del buf[:4]
                    continue
                if buf.startswith(b"\r\n"):
                    if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                        break  # maybe the first half of a ping: wait for more
                    del buf[:2]
                    continue
                if len(buf) == 1 and buf[0] == 0x0D:
                    break
                raise SipParseError("stray line ending between messages")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    raise SipParseError("header block too large", 513)
                break
            if end > self.max_header_bytes:
                raise SipParseError("header block too large", 513)
            matches = _CL_RE.findall(bytes(buf[:end + 2]))
            if not matches:
                raise SipParseError("missing Content-Length on a stream")
            if len(matches) > 1 or not matches[0]:
                raise SipParseError("bad or repeated Content-Length")
            length = int(matches[0])
            if length > self.max_body_bytes:
                raise SipParseError("body too large", 513)
            total = end + 4 + length
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out
