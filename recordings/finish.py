"""Finishing: spool files -> caller.wav, callee.wav, mix.wav (pure, blocking file work).

Run it off the event loop (a thread or process executor). The steps per leg:

1. Read the spool's records in arrival order; keep G.711 (PT 0/8) only, so
   telephone-event (RFC 4733), comfort noise and anything else are not decoded.
2. Place each packet on a sample timeline whose origin is the earliest first packet
   of the whole call (both legs share it, so the files line up on the wall clock).
   Within one SSRC a packet's position is `anchor + (ts - anchor_ts)`: the RTP
   timestamp (RFC 3550 §5.1) says where it belongs, so reordering, loss and silence
   suppression need no special case; the anchor is the arrival wall time of the
   first packet of that SSRC. An SSRC change, or a timestamp jump that disagrees with
   the wall clock by more than `MAX_SKEW`, re-anchors on arrival time.
3. Duplicates (same extended sequence number) and packets later than the reorder
   window are dropped; 16-bit sequence and 32-bit timestamp wrap-around are unwrapped.
4. Everything not covered by a packet stays zero: silence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import struct
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from recordings.fileio import read_all, replace_file
from recordings.g711 import decode
from recordings.manifest import file_entry, seal_many
from recordings.spool import CallMeta, SpoolError, SpoolRecord, read_call_spool, read_spool

__all__ = [
    "FREE_DIR",
    "LEGS",
    "RATE",
    "SPOOL_SUFFIX",
    "RecordedFile",
    "RecordingResult",
    "RenderStats",
    "call_dir",
    "finish_batch",
    "finish_call",
    "finish_pending",
    "prefill",
    "recycle",
    "render_leg",
    "spool_path",
]

RATE = 8000
LEGS = ("caller", "callee")
#: The relay's spool (version 3, both legs and the metadata) sits beside the call's
#: folder, in the day folder: starting a recording creates one file and no folder.
SPOOL_SUFFIX = ".spool"
#: Emptied spool files kept for reuse, under the recordings root. Creating a file can
#: cost far more than renaming one (0.5-1 ms of CPU on the benchmark VM's ext4, against
#: 30 us for a rename and 12 us for a create on tmpfs), so the relay takes its spools
#: from here and finishing puts them back, emptied.
FREE_DIR = ".free-spools"
#: RIFF/WAVE header of 16-bit PCM (what the `wave` module writes, built in one go).
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
#: Packets this many sequence numbers behind the newest are too late to place.
REORDER_WINDOW = 100
#: An RTP timeline this far (samples) from the arrival clock is a timestamp jump.
MAX_SKEW = 2 * RATE
_G711 = frozenset({0, 8})
SPOOLS_V2 = tuple(f"{leg}.spool" for leg in LEGS)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@dataclass(slots=True)
class RenderStats:
    """What `render_leg` did with the packets of one leg."""

    placed: int = 0
    duplicates: int = 0
    late: int = 0
    not_audio: int = 0  # telephone-event, comfort noise, unknown payload types
    reanchors: int = 0  # SSRC changes and timestamp jumps
    expected: int = 0  # audio packets the sequence numbers say were sent (RFC 3550 A.3)

    @property
    def lost(self) -> int:
        """Expected packets that never came (late ones count as lost, as for a player).
        Telephone-event packets share the stream's sequence numbers: they came."""
        return max(0, self.expected - self.placed - self.not_audio)


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """One finished WAV file."""

    name: str  # "caller", "callee" or "mix"
    path: Path
    size: int
    sha256: str
    duration_ms: int
    record_start_at: int  # epoch milliseconds (UTC) of sample 0
    mtime: float = 0.0  # as the file system recorded it when written (the manifest's)


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """The finished recording of one call."""

    call_id: str
    directory: Path
    files: dict[str, RecordedFile]
    # Per leg: (packets expected, packets lost) of the audio as it reached the relay.
    rtp: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Sealed (recordings.manifest) by the finishing itself, when it was given a key;
    # `seal_error` says why a seal failed (the WAVs are fine, the folder is unsealed).
    sealed: bool = False
    seal_error: str | None = None


def call_dir(root: Path, call_id: str, started_at: float) -> Path:
    """`<root>/YYYY/MM/DD/<call_id>` for a call that started at `started_at` (epoch s, UTC).

    The call id becomes a folder name, so it must be a plain token.
    """
    if not _SAFE_ID.match(call_id) or ".." in call_id:
        raise ValueError(f"call id {call_id!r} is not safe as a folder name")
    return _day_dir(root, int(started_at // 86400)) / call_id


@functools.lru_cache(maxsize=16)
def _day_dir(root: Path | str, day: int) -> Path:
    # Made once per day and root: the date formatting and path joins were a
    # measurable part of a recorded call's set-up on the event loop.
    when = datetime.fromtimestamp(day * 86400, UTC)
    return Path(root) / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"


def spool_path(directory: Path) -> Path:
    """Where the relay spools the call that `directory` (its folder) will hold."""
    return directory.with_name(directory.name + SPOOL_SUFFIX)


def _unwrap(value: int, previous: int | None, bits: int) -> int:
    # RFC 3550 §A.1: the nearer lap wins (same rule as relay.rtp.packet.unwrap).
    if previous is None:
        return value
    half = 1 << (bits - 1)
    diff = ((value - (previous & ((1 << bits) - 1)) + half) & ((1 << bits) - 1)) - half
    return previous + diff


def render_leg(records: Iterable[SpoolRecord], origin: float,
               stats: RenderStats | None = None) -> bytearray:
    """16-bit little-endian mono PCM for one leg, sample 0 at wall time `origin`.

    `stats`, when given, is filled with what happened to the packets.
    """
    st = stats if stats is not None else RenderStats()
    buf = bytearray()
    ssrc: int | None = None
    anchor_pos = anchor_ts = 0
    last_ts: int | None = None
    last_seq: int | None = None
    max_seq = 0
    seen: set[int] = set()
    first_seq: int | None = None  # of the current source, for `expected`
    for rec in records:
        if rec.pt not in _G711:
            st.not_audio += 1
            continue
        arrival = round((rec.wall - origin) * RATE)
        if rec.ssrc != ssrc:
            # A new source (RFC 3550 §8.2 SSRC change): its timeline starts afresh.
            st.reanchors += ssrc is not None
            if first_seq is not None:
                st.expected += max_seq - first_seq + 1
            ssrc = rec.ssrc
            anchor_pos, anchor_ts = arrival, rec.ts
            last_ts = last_seq = first_seq = None
            seen = set()
        ext_seq = _unwrap(rec.seq, last_seq, 16)
        ext_ts = _unwrap(rec.ts, last_ts, 32)
        if ext_seq in seen:
            st.duplicates += 1
            continue
        if last_seq is not None and ext_seq < max_seq - REORDER_WINDOW:
            st.late += 1  # too late to belong to this part of the call
            continue
        last_seq, last_ts = ext_seq, ext_ts
        max_seq = ext_seq if len(seen) == 0 else max(max_seq, ext_seq)
        if first_seq is None or ext_seq < first_seq:
            first_seq = ext_seq
        seen.add(ext_seq)
        pos = anchor_pos + (ext_ts - anchor_ts)
        if abs(pos - arrival) > MAX_SKEW:
            # The sender restarted its timestamps without a new SSRC: trust the clock.
            anchor_pos, anchor_ts, pos = arrival, ext_ts, arrival
            st.reanchors += 1
        pcm = decode(rec.payload, rec.pt)
        if pos < 0:
            pcm = pcm[-2 * pos :]
            pos = 0
        start = 2 * pos
        end = start + len(pcm)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[start:end] = pcm
        st.placed += 1
    if first_seq is not None:
        st.expected += max_seq - first_seq + 1
    return buf


def _wav_header(data_bytes: int, channels: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV at RATE holding `data_bytes` of samples."""
    return _WAV_HEADER.pack(b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
                            RATE, RATE * 2 * channels, 2 * channels, 16, b"data", data_bytes)


def _write_wav(name: str, path: Path, pcm: bytes | bytearray, start_ms: int) -> RecordedFile:
    size, digest, mtime = replace_file(path, (_wav_header(len(pcm), 1), pcm))
    return RecordedFile(name, path, size, digest, len(pcm) // 2 * 1000 // RATE, start_ms,
                        mtime)


def _mix_blocks(left: bytearray, right: bytearray) -> Iterable[bytes | bytearray]:
    """The stereo mix (caller left, callee right), padded to the longer leg, one
    second at a time so a long call does not hold a second, twice-as-large copy."""
    n = max(len(left), len(right))
    yield _wav_header(2 * n, 2)
    block = 2 * RATE
    for start in range(0, n, block):
        end = min(n, start + block)
        lpart = left[start:end].ljust(end - start, b"\0")
        rpart = right[start:end].ljust(end - start, b"\0")
        out = bytearray(2 * (end - start))
        out[0::4] = lpart[0::2]
        out[1::4] = lpart[1::2]
        out[2::4] = rpart[0::2]
        out[3::4] = rpart[1::2]
        yield out


def _write_mix(path: Path, left: bytearray, right: bytearray, start_ms: int) -> RecordedFile:
    frames = max(len(left), len(right)) // 2
    size, digest, mtime = replace_file(path, _mix_blocks(left, right))
    return RecordedFile("mix", path, size, digest, frames * 1000 // RATE, start_ms, mtime)


def _load(directory: Path) -> tuple[CallMeta, dict[str, list[SpoolRecord]], list[Path]]:
    """The call's metadata, each leg's records and the spool files to remove after.

    The relay's `<call_id>.spool` (version 3) beside the folder when there is one (the
    folder is made now), else the older layout: meta.json beside one spool per leg
    (versions 1 and 2) in the folder.
    """
    spool = spool_path(directory)
    try:
        data = read_all(spool)
    except FileNotFoundError:
        data = None
    if data is not None:
        meta, (caller, callee) = read_call_spool(data)
        if meta is None:
            raise SpoolError(f"{spool}: no metadata (the call ended before its first write)")
        directory.mkdir(exist_ok=True)
        return meta, {"caller": caller, "callee": callee}, [spool]
    try:
        meta = CallMeta.from_json((directory / "meta.json").read_bytes())
    except FileNotFoundError:
        raise SpoolError(f"{directory}: no meta.json") from None
    legs: dict[str, list[SpoolRecord]] = {}
    spools = []
    for leg in LEGS:
        path = directory / f"{leg}.spool"
        spools.append(path)
        legs[leg] = list(read_spool(path.read_bytes())) if path.exists() else []
    return meta, legs, spools


def recycle(spool: Path, free: Path | None) -> None:
    """Empty `spool` and move it into the free pool `free` (or remove it)."""
    if free is not None:
        try:
            os.truncate(spool, 0)
            os.rename(spool, free / f"{os.urandom(8).hex()}{SPOOL_SUFFIX}")
            return
        except OSError:
            pass  # no pool (yet), or another device: remove it instead
    spool.unlink(missing_ok=True)


def prefill(free: Path, count: int, most: int = 256) -> int:
    """Create empty spool files in `free` until it holds `count` (at most `most` now).

    Returns how many it holds. Run by the finisher, in its own process, so that the
    relay rarely has to create a file for a new call.
    """
    free.mkdir(parents=True, exist_ok=True)
    have = sum(1 for _ in os.scandir(free))
    for _ in range(max(0, min(most, count - have))):
        fd = os.open(free / f"{os.urandom(8).hex()}{SPOOL_SUFFIX}",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        have += 1
    return have


def finish_call(directory: Path, free: Path | None = None,
                seal: tuple[bytes, float] | None = None) -> RecordingResult:
    """Turn the spools in `directory` into WAV files; with `seal` (a key, the time now),
    seal the folder (recordings.manifest); remove the spools when done.

    Idempotent after a crash: WAVs are written to temporary names and renamed, and
    the spools go only once every WAV, meta.json and the seal are in place (a version 3
    spool into the free pool `free`, when given): a crash before then finishes and seals
    again at the next start. Raises `SpoolError` when the metadata is missing or corrupt.
    """
    return finish_batch([directory], free, seal=seal, errors=False)[0]  # type: ignore[return-value]


def _render(directory: Path) -> tuple[RecordingResult, list[Path]]:
    """The WAVs and meta.json of `directory`; the spools it came from (still there)."""
    directory = Path(directory)
    meta, legs, spools = _load(directory)
    firsts = [recs[0].wall for recs in legs.values() if recs]
    origin = min(firsts) if firsts else meta.started_at
    start_ms = round(origin * 1000)
    stats = {leg: RenderStats() for leg in legs}
    pcm = {leg: render_leg(recs, origin, stats[leg]) for leg, recs in legs.items()}
    files: dict[str, RecordedFile] = {}
    for leg in LEGS:
        files[leg] = _write_wav(leg, directory / f"{leg}.wav", pcm[leg], start_ms)
    files["mix"] = _write_mix(directory / "mix.wav", pcm["caller"], pcm["callee"], start_ms)
    meta.files = {name: {"size": f.size, "sha256": f.sha256, "duration_ms": f.duration_ms,
                         "record_start_at": f.record_start_at} for name, f in files.items()}
    replace_file(directory / "meta.json", (meta.to_json().encode(),))
    return (RecordingResult(meta.call_id, directory, files,
                            {leg: (st.expected, st.lost) for leg, st in stats.items()}),
            spools)


def _drop_spools(directory: Path, spools: list[Path], free: Path | None) -> None:
    for path in spools:
        if path.name.endswith(SPOOL_SUFFIX) and path.parent != directory:
            recycle(path, free)
        else:
            path.unlink(missing_ok=True)


def finish_batch(directories: Sequence[Path], free: Path | None = None,
                 fill: int = 0, seal: tuple[bytes, float] | None = None,
                 errors: bool = True) -> list[RecordingResult | Exception]:
    """`finish_call` for each folder, in order: its result or its error (OSError,
    SpoolError; with `errors` False they are raised). One executor job (and, in a process
    pool, one round trip) for many; with `seal` (key, now) they are sealed together (one
    lock, one fsync of the day's chain). Then, with `free`, top the free spool pool up towards
    `fill` files."""
    out: list[RecordingResult | Exception] = []
    done: list[tuple[int, RecordingResult, list[Path]]] = []
    for directory in directories:
        try:
            result, spools = _render(directory)
        except (OSError, SpoolError) as exc:
            if not errors:
                raise
            out.append(exc)
            continue
        done.append((len(out), result, spools))
        out.append(result)
    if seal is not None and done:
        # What was just written, as written: sealing need not read the WAVs back.
        sealed = seal_many([r.directory for _, r, _ in done], *seal,
                           files=[{name: file_entry(f.size, f.sha256, f.mtime)
                                   for name, f in r.files.items()} for _, r, _ in done])
        for (i, result, _), outcome in zip(done, sealed, strict=True):
            out[i] = (dataclasses.replace(result, seal_error=f"{type(outcome).__name__}: "
                                                            f"{outcome}")
                      if isinstance(outcome, Exception)
                      else dataclasses.replace(result, sealed=True))
    for _, result, spools in done:
        _drop_spools(result.directory, spools, free)
    if free is not None and fill:
        # The pool only saves work: without it the relay creates its spools itself.
        with contextlib.suppress(OSError):
            prefill(free, fill)
    return out


def finish_pending(root: Path, skip: Container[str] = (),
                   seal: tuple[bytes, float] | None = None) -> list[RecordingResult]:
    """Finish (and with `seal`, a key and the time now, seal) every call folder under
    `root` that still holds spools (a crash left them).

    Run it at start-up, before new calls spool; `skip` names call ids that are live.
    A folder whose meta.json is unreadable is left alone for an operator.
    """
    results = []
    folders = {p.with_suffix("") for p in Path(root).glob(f"*/*/*/*{SPOOL_SUFFIX}")
               if p.is_file()}
    folders.update(p.parent for p in Path(root).glob("*/*/*/*/meta.json"))
    for directory in sorted(folders):
        if directory.name in skip:
            continue
        if not (spool_path(directory).exists()
                or any((directory / name).exists() for name in SPOOLS_V2)):
            continue
        try:
            results.append(finish_call(directory, seal=seal))
        except SpoolError:
            spool = spool_path(directory)
            with contextlib.suppress(OSError, SpoolError):
                if read_call_spool(spool.read_bytes())[0] is None:
                    spool.unlink()  # taken from the pool, then the crash: nothing in it
            continue
    return results
