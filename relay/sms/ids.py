"""Message ids: one format for every id the relay hands out, part or whole message.

`m` + 8 hex digits chosen at random when the process starts + 8 hex digits of a counter:
17 characters, well under the 64 that §5.2.23 (message_id) and Kannel's DLR store allow,
unique per process run, and told apart from far-side ids at a glance. Every part of a
concatenated message gets one (in its submit_sm_resp) and every one leads to the
message record (`GET /v1/messages/{id}`); a receipt quotes the id of the part that
asked for it.
"""

from __future__ import annotations

import itertools
import re
import secrets

__all__ = ["MESSAGE_ID", "MessageIds", "is_message_id"]

MESSAGE_ID = re.compile(r"m[0-9a-f]{16}")


class MessageIds:
    """Hands out ids: a random per-process prefix and a counter."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = "m" + (prefix if prefix is not None else secrets.token_hex(4))
        self._n = itertools.count(1)

    def __call__(self) -> str:
        """The next id."""
        return f"{self.prefix}{next(self._n) & 0xFFFFFFFF:08x}"


def is_message_id(value: str) -> bool:
    """True if `value` has the relay's message id format."""
    return MESSAGE_ID.fullmatch(value) is not None
