"""Per-source request rate limit with bans (Kamailio's `pike`), sans-IO.

Each source address gets a fixed-window counter: more than ``limit`` requests in one
``window`` of seconds bans the source for ``ban`` seconds, during which everything
it sends is dropped without an answer (an answer is what a reflection attack with a
spoofed source wants, and what a scanner learns from). The table is bounded: past
``max_sources`` the oldest entries go (an evicted source starts afresh; a flood from
that many distinct addresses is the overload guard's business, not this one's).

The caller decides who is exempt (allow-listed trunks, see relay.b2bua.callmap).
"""

from __future__ import annotations

__all__ = ["Pike"]


class Pike:
    """``allow(source, now)`` is False while `source` is over its limit or banned."""

    __slots__ = ("_table", "ban", "banned", "dropped", "limit", "max_sources", "window")

    def __init__(self, limit: int, window: float = 2.0, ban: float = 60.0,
                 max_sources: int = 16384) -> None:
        self.limit = limit
        self.window = window
        self.ban = ban
        self.max_sources = max_sources
        # source -> [window start, count in window, banned until]
        self._table: dict[str, list[float]] = {}
        self.banned = 0  # bans imposed (a counter)
        self.dropped = 0  # requests dropped (a counter)

    def __len__(self) -> int:
        return len(self._table)

    def allow(self, source: str, now: float) -> bool:
        entry = self._table.get(source)
        if entry is None:
            if len(self._table) >= self.max_sources:
                self._evict(now)
            self._table[source] = [now, 1.0, 0.0]
            return True
        if entry[2] > now:
            self.dropped += 1
            return False
        if now - entry[0] >= self.window:
            entry[0] = now
            entry[1] = 0.0
        entry[1] += 1.0
        if entry[1] > self.limit:
            entry[2] = now + self.ban
            self.banned += 1
            self.dropped += 1
            return False
        return True

    def is_banned(self, source: str, now: float) -> bool:
        entry = self._table.get(source)
        return entry is not None and entry[2] > now

    def _evict(self, now: float) -> None:
        """Forget quiet, unbanned sources; if none, the oldest quarter of the table."""
        table = self._table
        stale = [s for s, e in table.items() if e[2] <= now and now - e[0] >= self.window]
        if not stale:
            stale = list(table)[: max(1, len(table) // 4)]
        for s in stale:
            del table[s]
