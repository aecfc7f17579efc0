"""Recognising a gateway's resend of a message the relay already answered.

Two cases, one book, keyed by (gateway, source, destination, SHA-256 of the text):
- the message was *refused*: a gateway that read the status as temporary (or simply
  retries everything) sends it again; the relay answers the same refusal and counts the
  try on the first attempt's record instead of writing a record per try;
- the message was *forwarded* but the answer never reached the gateway (the link went
  down, or the relay stopped, between forwarding and answering): the gateway resends on
  its next link, with a new sequence number; the relay answers ESME_ROK with the id it
  gave the first time and does not forward it again (no duplicate for the recipient).

A forwarded message whose answer was sent is not entered: people do text "ok" twice.
Entries live `window` seconds after the last try (a gateway resends within minutes);
the book is bounded. Pure: time is an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RetryBook", "RetryKey", "Seen"]

RetryKey = tuple[str, str, str, str]  # (gateway, source, destination, text_sha256)


@dataclass(slots=True)
class Seen:
    """The first attempt of a message: its record id and how it was answered."""

    record_id: str
    command_status: int  # 0: forwarded (answer lost); else the refusal's status
    reason: str | None
    last_at: float
    retries: int = 0


class RetryBook:
    """Key -> first attempt, bounded in size and age."""

    def __init__(self, window: float = 3600.0, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[RetryKey, Seen] = OrderedDict()

    def note(self, key: RetryKey, record_id: str, command_status: int, reason: str | None,
             now: float) -> None:
        """Remember an attempt (a refusal, or a forward whose answer was lost)."""
        self._seen[key] = Seen(record_id, command_status, reason, now)
        self._seen.move_to_end(key)
        # Oldest first (every touch moves an entry to the end): drop the expired ones.
        while self._seen and (len(self._seen) > self.max_entries
                              or now - next(iter(self._seen.values())).last_at > self.window):
            self._seen.popitem(last=False)

    def retry(self, key: RetryKey, now: float) -> Seen | None:
        """The first attempt if `key` is a resend within the window (counted), else None."""
        seen = self._seen.get(key)
        if seen is None:
            return None
        if now - seen.last_at > self.window:
            del self._seen[key]
            return None
        seen.retries += 1
        seen.last_at = now
        self._seen.move_to_end(key)
        return seen

    def forget(self, key: RetryKey) -> None:
        """Drop `key` (the message went through after all)."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)
