"""HTTP read access to finished recordings: `GET /v1/recordings/{call_id}/{leg}.wav`.

`add_recording_routes(app, root_dir)` adds the route to the relay's aiohttp app (the
app's own middleware does authentication); `RECORDING_PATHS` describes it for the
OpenAPI document. Files are served with aiohttp's `FileResponse`, which implements
byte ranges (RFC 9110 §14): `Range: bytes=a-b` answers 206 with `Content-Range`, an
unsatisfiable or malformed range answers 416 with `Content-Range: bytes */<size>`,
and `If-Range`/ETag let a player resume safely.

The call id comes from the URL and becomes part of a file path, so it is checked
against the same strict token the writer uses (`recordings.finish.call_dir`):
letters, digits and `._@-`, no `..`, nothing that could climb out of `root_dir`.
The file path is then resolved and must still lie under `root_dir`.

Calls live under `<root>/YYYY/MM/DD/<call_id>/`; the URL has no date, so a small
index (call id -> folder) is kept and rebuilt by scanning the dated folders on a
miss. Rebuilds are rate-limited so a stream of unknown ids cannot make every
request walk the whole tree; between rebuilds a miss looks only at today's and
yesterday's folders, where new calls land.

Signed links (`recordings.links`): `POST /v1/recordings/{call_id}/links?ttl=` hands
out one URL per finished file carrying `?expires=UNIX&sig=HEX`; a GET that carries
either parameter is judged by the signature alone (the app's middleware lets it
pass without a token) and answers 403 when it is tampered, malformed or expired.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from .links import DEFAULT_TTL, MAX_TTL, LinkSigner, LinkVerdict, load_or_create_key

__all__ = [
    "LEGS",
    "LINKS_ROUTE",
    "RECORDING_PATHS",
    "SIGNER_KEY",
    "RecordingIndex",
    "add_recording_routes",
    "is_signed_request",
    "iso_ms",
    "valid_call_id",
]

LEGS = ("caller", "callee", "mix")
#: The writer's rule (recordings.finish.call_dir): a plain token, at most 128 chars.
_CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_DATE_PART = (re.compile(r"^\d{4}$"), re.compile(r"^\d{2}$"), re.compile(r"^\d{2}$"))
ROUTE = "/v1/recordings/{call_id}/{leg}.wav"
LINKS_ROUTE = "/v1/recordings/{call_id}/links"
INDEX_KEY: web.AppKey[RecordingIndex] = web.AppKey("recordings_index")
SIGNER_KEY: web.AppKey[LinkSigner] = web.AppKey("recordings_signer")
_CLOCK_KEY: web.AppKey[Callable[[], float]] = web.AppKey("recordings_clock")
_BASE_KEY: web.AppKey[str] = web.AppKey("recordings_link_base")
_SIGNED_PATH = re.compile(r"^/v1/recordings/[^/]+/[a-z]+\.wav$")


def is_signed_request(method: str, path: str, query: Any) -> bool:
    """True for a GET of a recording file that presents a link signature (the
    middleware then skips the bearer token: the handler checks the signature)."""
    return (method in ("GET", "HEAD") and ("sig" in query or "expires" in query)
            and bool(_SIGNED_PATH.match(path)))


def iso_ms(when: float) -> str:
    """ISO 8601 UTC with milliseconds, the API's one time format."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def valid_call_id(call_id: str) -> bool:
    """True if `call_id` is a token the recordings tree can hold (no path tricks)."""
    return bool(_CALL_ID.match(call_id)) and ".." not in call_id


def _date_dirs(root: Path) -> list[Path]:
    """`root/YYYY/MM/DD` folders, newest first (names checked, symlinks not followed)."""
    return sorted(_walk_dates(root, 0), reverse=True)


def _walk_dates(base: Path, depth: int) -> list[Path]:
    if depth == 3:
        return [base]
    found: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and _DATE_PART[depth].match(entry.name):
            found.extend(_walk_dates(Path(entry.path), depth + 1))
    return found


class RecordingIndex:
    """call id -> call folder under `root`, rebuilt by scanning on a miss."""

    def __init__(self, root: Path, *, rescan_interval: float = 2.0) -> None:
        """`rescan_interval`: the least time between two full rescans (seconds)."""
        self.root = Path(root)
        self.rescan_interval = rescan_interval
        self._folders: dict[str, Path] = {}
        self._scanned_at = float("-inf")
        self.scans = 0

    def rebuild(self) -> None:
        """Walk every dated folder and index every call folder in it (blocking)."""
        folders: dict[str, Path] = {}
        for day in reversed(_date_dirs(self.root)):  # oldest first: the newest wins
            try:
                entries = list(os.scandir(day))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and valid_call_id(entry.name):
                    folders[entry.name] = Path(entry.path)
        self._folders = folders
        self._scanned_at = time.monotonic()
        self.scans += 1

    def _recent(self, call_id: str) -> Path | None:
        now = datetime.now(UTC)
        for day in (now, now - timedelta(days=1)):
            folder = self.root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / call_id
            if folder.is_dir():
                return folder
        return None

    def spooling(self, call_id: str) -> bool:
        """True while the relay spools the call (its spool beside the folder-to-be,
        recordings.finish.spool_path), today or yesterday (blocking)."""
        now = datetime.now(UTC)
        return any((self.root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
                    / f"{call_id}.spool").is_file()
                   for day in (now, now - timedelta(days=1)))

    def find(self, call_id: str) -> Path | None:
        """The call's folder, or None (blocking: may scan). `call_id` must be valid."""
        if not valid_call_id(call_id):
            return None
        folder = self._folders.get(call_id)
        if folder is not None and folder.is_dir():
            return folder
        if time.monotonic() - self._scanned_at >= self.rescan_interval:
            self.rebuild()
            folder = self._folders.get(call_id)
        else:
            folder = self._recent(call_id)
            if folder is not None:
                self._folders[call_id] = folder
        return folder

    def forget(self, call_id: str) -> None:
        """Drop an entry (retention removed the folder)."""
        self._folders.pop(call_id, None)


def _not_found(detail: str) -> web.Response:
    return web.json_response({"error": "not_found", "detail": detail}, status=404)


def _bad_call_id(detail: str) -> web.Response:
    return web.json_response({"error": "invalid_call_id", "detail": detail}, status=400)


async def _get_recording(request: web.Request) -> web.StreamResponse:
    index = request.app[INDEX_KEY]
    call_id = request.match_info["call_id"]
    leg = request.match_info["leg"]
    if leg not in LEGS:
        return _not_found(f"no such recording file {leg!r}.wav: caller, callee or mix")
    if not valid_call_id(call_id):
        # Not 404: a malformed id never names a call (and never reaches the disk).
        return _bad_call_id("call id must be letters, digits and ._@- (no '..')")
    q = request.query
    if "sig" in q or "expires" in q:
        verdict = request.app[SIGNER_KEY].verify(call_id, leg, q.get("expires", ""),
                                                 q.get("sig", ""), request.app[_CLOCK_KEY]())
        if verdict is not LinkVerdict.VALID:
            return web.json_response(
                {"error": f"link_{verdict.value}",
                 "detail": f"this recording link is {verdict.value}"}, status=403)
    loop = asyncio.get_running_loop()
    folder = await loop.run_in_executor(None, index.find, call_id)
    if folder is None:
        if await loop.run_in_executor(None, index.spooling, call_id):
            return _not_found(f"the recording of call {call_id} is not finished yet")
        return _not_found(f"no recording for call {call_id}")
    path = folder / f"{leg}.wav"
    root = index.root.resolve()
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        if (folder / "caller.spool").exists() or (folder / "callee.spool").exists():
            return _not_found(f"the recording of call {call_id} is not finished yet")
        return _not_found(f"no {leg} recording for call {call_id}")
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return _not_found(f"no {leg} recording for call {call_id}")
    headers = {
        "Content-Type": "audio/wav",
        # Recordings are personal data: browsers may keep them, proxies may not.
        "Cache-Control": "private, max-age=0",
        "Content-Disposition": f'inline; filename="{call_id}-{leg}.wav"',
    }
    return web.FileResponse(resolved, headers=headers)


def _finished_legs(folder: Path) -> list[str]:
    return [leg for leg in LEGS if (folder / f"{leg}.wav").is_file()]


async def _make_links(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    if not valid_call_id(call_id):
        return _bad_call_id("call id must be letters, digits and ._@- (no '..')")
    raw = request.query.get("ttl", str(DEFAULT_TTL))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TTL:
        return web.json_response(
            {"error": "invalid", "detail": f"ttl must be whole seconds, 1 to {MAX_TTL}"},
            status=422)
    loop = asyncio.get_running_loop()
    folder = await loop.run_in_executor(None, request.app[INDEX_KEY].find, call_id)
    legs = [] if folder is None else await loop.run_in_executor(None, _finished_legs, folder)
    if not legs:
        return _not_found(f"no finished recording for call {call_id}")
    expires = int(request.app[_CLOCK_KEY]()) + int(raw)
    base = request.app[_BASE_KEY] or f"{request.scheme}://{request.host}"
    signer = request.app[SIGNER_KEY]
    return web.json_response({
        "call_id": call_id,
        "expires": expires,
        "expires_at": iso_ms(expires),
        "links": {leg: base + signer.path(call_id, leg, expires) for leg in legs},
    }, status=201)


def add_recording_routes(app: web.Application, root_dir: Path | str,
                         *, rescan_interval: float = 2.0,
                         signer: LinkSigner | None = None, link_base: str = "",
                         clock: Callable[[], float] = time.time) -> RecordingIndex:
    """Add the recording routes (files, signed links) to `app`; returns the index.

    Call it before the app starts (aiohttp freezes the router). Authentication is
    the app's middleware's job, apart from signed links, which the handler checks.
    `signer` defaults to one keyed by the recordings folder's own key file;
    `link_base` (`https://relay.example`) replaces the request's own origin in links.
    """
    index = RecordingIndex(Path(root_dir), rescan_interval=rescan_interval)
    app[INDEX_KEY] = index
    app[SIGNER_KEY] = signer or LinkSigner((load_or_create_key(root_dir),))
    app[_CLOCK_KEY] = clock
    app[_BASE_KEY] = link_base.rstrip("/")
    # The route's canonical form is the OpenAPI path (the API test compares them).
    app.router.add_get(ROUTE, _get_recording)
    app.router.add_post(LINKS_ROUTE, _make_links)
    return index


_ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}

#: OpenAPI 3 path item for the route (merge with `relay.api.openapi.add_paths`).
RECORDING_PATHS: dict[str, dict[str, Any]] = {
    ROUTE: {
        "get": {
            "summary": "A call's recording as 16-bit 8 kHz PCM WAV (byte ranges supported)",
            "operationId": "getRecording",
            "tags": ["recordings"],
            "parameters": [
                {"name": "call_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": _CALL_ID.pattern}},
                {"name": "leg", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": list(LEGS)},
                 "description": "caller, callee, or mix (stereo: caller left, callee right)"},
                {"name": "Range", "in": "header", "required": False,
                 "schema": {"type": "string", "example": "bytes=0-1023"}},
                {"name": "expires", "in": "query", "required": False,
                 "schema": {"type": "integer"},
                 "description": "a signed link's expiry (UNIX seconds); no token needed"},
                {"name": "sig", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                 "description": "a signed link's HMAC-SHA256 (hex)"},
            ],
            "responses": {
                "200": {"description": "the whole file",
                        "content": {"audio/wav": {"schema": {"type": "string",
                                                             "format": "binary"}}}},
                "206": {"description": "the requested byte range (Content-Range)",
                        "content": {"audio/wav": {"schema": {"type": "string",
                                                             "format": "binary"}}}},
                "400": {"description": "malformed call id",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
                "404": {"description": "no such call, leg, or not finished yet",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
                "403": {"description": "a signed link that is tampered, malformed or expired",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
                "416": {"description": "range not satisfiable (Content-Range: bytes */size)"},
            },
        },
    },
    LINKS_ROUTE: {
        "post": {
            "summary": "Signed, expiring URLs for each finished file of a call's recording",
            "operationId": "createRecordingLinks",
            "tags": ["recordings"],
            "parameters": [
                {"name": "call_id", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": _CALL_ID.pattern}},
                {"name": "ttl", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TTL,
                            "default": DEFAULT_TTL}},
            ],
            "responses": {
                "201": {"description": "`{call_id, expires, expires_at, links: {leg: url}}`",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"description": "malformed call id",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
                "404": {"description": "no finished recording for the call",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
                "422": {"description": "ttl out of range",
                        "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
            },
        },
    },
}
