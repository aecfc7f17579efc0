"""Tamper evidence: each call's manifest, signed and chained per day; and the check.

When a call's WAVs are finished, `seal` writes `<day>/<call_id>/manifest.json`:

    {"v": 1, "call_id", "sealed_at" (ISO ms), "seq" (1, 2, ... within the day),
     "prev" (SHA-256 of the day's previous manifest file, or 64 zeros),
     "files": {leg: {"size", "sha256", "mtime" (ISO ms)}}, "sig"}

`sig` is HMAC-SHA256(key, the manifest's canonical JSON without `sig`), and the day's
`chain.jsonl` gets one line `{"seq", "call_id", "sha256"}` (the manifest file's own
SHA-256). Changing a file changes its SHA-256; changing a manifest breaks its
signature and the next link; removing a call leaves a hole in the chain; inserting
one needs the key. `verify_day` walks a day's chain and names the first break.

What a chain cannot show on its own: the newest manifests removed together with their
chain lines (truncation at the tail). Keep the day's last `sha256` elsewhere (the
`recording.ready` event carries files' SHA-256s to the platform) when that matters.

Processes sharing a recordings folder serialise on `flock` of the day's `chain.lock`.
Blocking IO throughout: run it off the event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recordings.fileio import replace_file

__all__ = ["CHAIN", "MANIFEST", "DayReport", "file_entry", "seal", "seal_many", "verify_day"]

MANIFEST = "manifest.json"
CHAIN = "chain.jsonl"
LOCK = "chain.lock"
LEGS = ("caller", "callee", "mix")
_ZERO = "0" * 64


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "sig"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(day: Path) -> Iterator[None]:
    fd = os.open(day / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _chain(day: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The day's links, and the numbers of lines that do not parse (a torn append)."""
    try:
        text = (day / CHAIN).read_text()
    except FileNotFoundError:
        return [], []
    links: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            links.append(json.loads(line))
        except ValueError:
            torn.append(number)
    return links, torn


def _tail(day: Path) -> tuple[int, str, bool]:
    """The day's last chain link: (seq, sha256, whether the file ends a line).

    Sealing reads only the end of `chain.jsonl`: reading the whole chain for every call
    made a day's sealing quadratic (1.4 ms of CPU per call after a few thousand calls,
    growing without bound). A torn last line (a crash mid-append), or any line that is
    not a link, is skipped here and shows in `verify_day`; the next link starts on a
    line of its own.
    """
    try:
        f = open(day / CHAIN, "rb")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        return 0, _ZERO, True
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0, _ZERO, True
        window = 4096
        while True:
            start = max(0, size - window)
            f.seek(start)
            data = f.read(size - start)
            ends_line = data.endswith(b"\n")
            lines = data.split(b"\n")
            complete = lines[:-1]  # the last piece is torn, or empty after a final newline
            if start > 0:
                complete = complete[1:]  # the first piece may be a partial line
            for raw in reversed(complete):
                try:  # a line that does not parse is not a link (verify reports it)
                    link = json.loads(raw)
                    return int(link["seq"]), str(link["sha256"]), ends_line
                except (ValueError, KeyError, TypeError):
                    continue
            if start == 0:
                return 0, _ZERO, ends_line
            window *= 4


def seal(directory: Path | str, key: bytes, now: float) -> dict[str, Any]:
    """Write the call folder's manifest and chain it to its day; returns the manifest.

    A folder already sealed is left alone (sealing twice would fork the chain)."""
    result = seal_many([Path(directory)], key, now)[0]
    if isinstance(result, Exception):
        raise result
    return result


def file_entry(size: int, sha256: str, mtime: float) -> dict[str, Any]:
    """One file's entry in a manifest's `files`."""
    return {"size": size, "sha256": sha256, "mtime": _iso(mtime)}


def seal_many(directories: Sequence[Path], key: bytes, now: float,
              files: Sequence[dict[str, Any]] | None = None,
              ) -> list[dict[str, Any] | OSError | ValueError]:
    """`seal` for several folders: per folder its manifest, or the error that stopped it.

    The folders of one day share one lock, one read of the chain's tail and one fsync of
    the chain (an fsync per call was two thirds of a seal's CPU). `files`, when given,
    holds each folder's WAV entries (`file_entry`) as the caller has just written them
    (the finisher hashes while it writes): then nothing is read back."""
    out: list[dict[str, Any] | OSError | ValueError] = []
    todo: dict[Path, list[tuple[int, Path, dict[str, Any]]]] = {}
    for i, directory in enumerate(directories):
        try:
            existing = directory / MANIFEST
            if existing.exists():
                out.append(dict(json.loads(existing.read_text())))
                continue
            entries = _files(directory) if files is None else files[i]
        except (OSError, ValueError) as exc:
            out.append(exc)
            continue
        out.append(ValueError("not sealed"))  # replaced in _seal_day
        todo.setdefault(directory.parent, []).append((i, directory, entries))
    for day, calls in todo.items():
        try:
            _seal_day(day, calls, key, now, out)
        except (OSError, ValueError) as exc:
            for i, _, _ in calls:
                if not isinstance(out[i], dict):
                    out[i] = exc
    return out


def _files(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise FileNotFoundError(f"no call folder {directory}")
    files: dict[str, Any] = {}
    for leg in LEGS:
        path = directory / f"{leg}.wav"
        if path.is_file():
            st = path.stat()
            files[leg] = file_entry(st.st_size, _sha256_file(path), st.st_mtime)
    return files


def _seal_day(day: Path, calls: list[tuple[int, Path, dict[str, Any]]], key: bytes,
              now: float, out: list[dict[str, Any] | OSError | ValueError]) -> None:
    with _locked(day):
        seq, prev, ends_line = _tail(day)
        lines = [] if ends_line else [""]
        try:
            for i, directory, files in calls:
                doc: dict[str, Any] = {
                    "v": 1, "call_id": directory.name, "sealed_at": _iso(now),
                    "seq": seq + 1, "prev": prev, "files": files}
                doc["sig"] = _mac(key, doc)
                try:
                    # The manifest file's own SHA-256 is the chain's link.
                    _, digest, _ = replace_file(directory / MANIFEST, (_canonical(doc),))
                except OSError as exc:
                    out[i] = exc
                    continue
                seq, prev = seq + 1, digest
                lines.append(json.dumps({"seq": seq, "call_id": directory.name,
                                         "sha256": prev}, separators=(",", ":")))
                out[i] = doc
        finally:
            if len(lines) > (0 if ends_line else 1):
                with open(day / CHAIN, "a") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    os.fsync(f.fileno())


@dataclass
class DayReport:
    """What `verify_day` found: `first_break` names the first call (in chain order) whose
    manifest, files or link do not hold, and why; `unsealed` lists call folders with no
    manifest (finished before sealing existed, or lost in a crash)."""

    day: str
    checked: int = 0
    first_break: dict[str, Any] | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)
    unsealed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"date": self.day, "ok": self.ok, "checked": self.checked,
                "first_break": self.first_break, "problems": self.problems,
                "unsealed": self.unsealed}


def _check_call(folder: Path, entry: dict[str, Any], prev: str,
                keys: Sequence[bytes]) -> str | None:
    """Why this chain entry does not hold, or None."""
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return "manifest missing" if folder.is_dir() else "call folder missing"
    if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
        return "manifest altered (its hash is not the chain's)"
    doc = json.loads(raw)
    if doc.get("prev") != prev or doc.get("seq") != entry.get("seq"):
        return "manifest out of its place in the chain"
    if not any(hmac.compare_digest(_mac(k, doc), str(doc.get("sig", ""))) for k in keys):
        return "manifest signature does not verify"
    for leg, f in sorted(doc.get("files", {}).items()):
        path = folder / f"{leg}.wav"
        if not path.is_file():
            return f"{leg}.wav missing"
        if path.stat().st_size != f["size"] or _sha256_file(path) != f["sha256"]:
            return f"{leg}.wav altered (size or SHA-256 differs)"
    return None


def verify_day(root: Path | str, day: str, keys: Sequence[bytes]) -> DayReport:
    """Check the chain of `day` (`YYYY-MM-DD`) under `root`: every link, manifest,
    signature and file. Blocking."""
    when = datetime.strptime(day, "%Y-%m-%d")
    folder = Path(root) / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"
    report = DayReport(day)
    prev = _ZERO
    chained: set[str] = set()
    try:
        chain, torn = _chain(folder)
    except (ValueError, OSError) as exc:
        chain, torn = [], []
        report.problems.append({"seq": None, "call_id": None,
                                "problem": f"chain unreadable: {exc}"})
    for number in torn:
        report.problems.append({"seq": None, "call_id": None,
                                "problem": f"chain line {number} is torn (not JSON)"})
    for i, entry in enumerate(chain, 1):
        call_id = str(entry.get("call_id"))
        chained.add(call_id)
        report.checked += 1
        if entry.get("seq") != i:
            why: str | None = f"chain line {i} says seq {entry.get('seq')}"
        else:
            why = _check_call(folder / call_id, entry, prev, keys)
        if why is not None:
            report.problems.append({"seq": i, "call_id": call_id, "problem": why})
        prev = str(entry.get("sha256"))
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name in chained:
                continue
            if (sub / MANIFEST).exists():
                report.problems.append({"seq": None, "call_id": sub.name,
                                        "problem": "manifest not in the day's chain"})
            elif any((sub / f"{leg}.wav").exists() for leg in LEGS):
                report.unsealed.append(sub.name)
    report.first_break = report.problems[0] if report.problems else None
    return report
