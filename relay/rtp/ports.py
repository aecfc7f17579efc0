"""A pool of relay port pairs: even RTP port, RTCP on the next odd port (RFC 3550 §11).

Sans-IO bookkeeping only; the adapter binds the sockets. Released pairs go to the back
of the queue so a port is not reused at once and stray packets of the last call that
used it are unlikely to reach the next one.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PortPool", "PortPoolError", "PortsExhausted"]


class PortPoolError(RuntimeError):
    """A local error: the pool was misused (a port released twice or never allocated)."""


class PortsExhausted(PortPoolError):
    """Every pair in the range is in use; the call should be refused (503)."""


class PortPool:
    """Allocate and release (rtp, rtcp) pairs from `first..last` inclusive."""

    def __init__(self, first: int, last: int) -> None:
        """Build the pool; the first RTP port is `first` rounded up to even."""
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        start = first + (first & 1)
        self._free: deque[int] = deque(range(start, last, 2))
        if not self._free:
            raise ValueError(f"port range {first}-{last} holds no even/odd pair")
        self._used: set[int] = set()
        self.size = len(self._free)

    @property
    def available(self) -> int:
        """Pairs that can still be allocated."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """Pairs currently allocated."""
        return len(self._used)

    def allocate(self) -> int:
        """Take a pair and return its even RTP port (RTCP is that + 1)."""
        if not self._free:
            raise PortsExhausted(f"all {self.size} port pairs are in use")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back; releasing one that is not allocated is a local error."""
        try:
            self._used.remove(port)
        except KeyError:
            raise PortPoolError(f"port {port} is not allocated (double release?)") from None
        self._free.append(port)
