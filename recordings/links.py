"""Signed, expiring recording links (DESIGN.md HTTP API: `?expires=UNIX&sig=HEX`).

A link names one file of one call until a moment: the signature is
HMAC-SHA256(key, "v1\\n<call_id>\\n<leg>\\n<expires>") in hex. Keys rotate: the
first configured key signs, every configured key verifies, so a link made just
before a rotation keeps working until it expires (drop the old key to revoke
every link it signed). Pure: the clock is an argument, nothing here does IO apart
from `load_or_create_key`, which the adapter calls once at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "LinkSigner",
    "LinkVerdict",
    "load_or_create_key",
]

DEFAULT_TTL = 7200  # two hours, what commercial services hand out
MAX_TTL = 7 * 86400
_KEY_FILE = ".link_key"  # not a date folder: the index and retention leave it alone


class LinkVerdict(Enum):
    """What a presented link is worth; the adapter maps anything but VALID to 403."""

    VALID = "valid"
    MALFORMED = "malformed"
    TAMPERED = "tampered"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class LinkSigner:
    """Signs with `keys[0]`, verifies against every key (current, then previous ones)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys or any(len(k) < 16 for k in self.keys):
            raise ValueError("link keys: at least one, each at least 16 bytes")

    @staticmethod
    def _mac(key: bytes, call_id: str, leg: str, expires: int) -> str:
        msg = f"v1\n{call_id}\n{leg}\n{expires}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    def sign(self, call_id: str, leg: str, expires: int) -> str:
        """The hex signature of (call_id, leg, expires) with the current key."""
        return self._mac(self.keys[0], call_id, leg, expires)

    def query(self, call_id: str, leg: str, expires: int) -> str:
        """`expires=...&sig=...` for the file's URL."""
        return f"expires={expires}&sig={self.sign(call_id, leg, expires)}"

    def path(self, call_id: str, leg: str, expires: int) -> str:
        """The signed path of one file (`/v1/recordings/<id>/<leg>.wav?...`)."""
        return (f"/v1/recordings/{quote(call_id, safe='')}/{leg}.wav?"
                f"{self.query(call_id, leg, expires)}")

    def verify(self, call_id: str, leg: str, expires: str, sig: str,
               now: float) -> LinkVerdict:
        """Judge a presented link; `expires` and `sig` are the raw query values.

        The signature is checked before the expiry, so an expired link that was
        also altered reads as tampered (the stronger claim), and a timing
        difference never tells a forger whether the date or the MAC was wrong.
        """
        if not expires.isdigit() or len(expires) > 12 or len(sig) != 64:
            return LinkVerdict.MALFORMED
        when = int(expires)
        good = False
        for key in self.keys:  # every key, always: the time taken does not name the key
            good |= hmac.compare_digest(self._mac(key, call_id, leg, when), sig.lower())
        if not good:
            return LinkVerdict.TAMPERED
        if now >= when:
            return LinkVerdict.EXPIRED
        return LinkVerdict.VALID


def load_or_create_key(root: Path | str) -> bytes:
    """The key kept in `<root>/.link_key`, made once (0600) when config names none.

    Every process that shares the recordings folder (workers, the CLI) then signs
    alike, and links survive restarts. Configured keys are the way to rotate.
    """
    path = Path(root) / _KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    # Written whole under another name, then linked: a worker racing us never reads
    # a half-written file, and the first link wins.
    tmp = path.with_name(f"{_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    finally:
        tmp.unlink()
    return key
