"""The in-process media backend: port pool + sans-IO relay session + asyncio sockets.

Recording: each accepted RTP packet is appended to the leg's spool buffer (a memory
copy); the buffer is written about once a second. At release the spools are
finished into WAV files in an executor, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from recordings.finish import RecordingResult, call_dir, finish_call, finish_pending
from recordings.spool import CallMeta, SpoolError, SpoolWriter
from relay.io.rtp import CallSockets, RtpPortProtocol, bind_side
from relay.media.backend import MediaCall, MediaStats
from relay.rtp.ports import PortPool, PortsExhausted
from relay.rtp.session import RelaySession, Side
from relay.sdp import RelayOrigin, SessionDescription, remote_media, rewrite_for_peer

__all__ = ["InProcessBackend"]

log = logging.getLogger(__name__)
_LEG_NAMES = {Side.CALLER: "caller", Side.CALLEE: "callee"}


@dataclass(eq=False)
class _Recording:
    directory: Path
    meta: CallMeta
    writers: dict[Side, SpoolWriter]
    wall_offset: float  # epoch seconds minus loop.time(), fixed at allocation
    failed: bool = False


@dataclass(eq=False)
class _CallState:
    session: RelaySession
    sockets: CallSockets
    origins: dict[Side, RelayOrigin]  # the o= the relay owns toward each side
    recording: _Recording | None = None
    codecs: dict[Side, str | None] = field(default_factory=dict)


class InProcessBackend:
    """`MediaBackend` that relays RTP itself. See `relay.media.backend.MediaBackend`."""

    def __init__(self, *, bind_host: str = "127.0.0.1", advertise_host: str | None = None,
                 port_range: tuple[int, int] = (20000, 29999),
                 recordings_dir: Path | None = None, executor: Executor | None = None,
                 latch_any_ip: bool = False, bind_attempts: int = 8) -> None:
        """Media on `bind_host`, announced in SDP as `advertise_host` (public address).

        `recordings_dir` is required for calls allocated with record=True; `executor`
        runs the finishing step (None: the loop's default thread pool; a
        ProcessPoolExecutor keeps its CPU work off this process entirely).
        """
        self.bind_host = bind_host
        self.advertise_host = advertise_host or bind_host
        self.pool = PortPool(*port_range)
        self.recordings_dir = recordings_dir
        self.executor = executor
        self.latch_any_ip = latch_any_ip
        self.bind_attempts = bind_attempts
        self.calls: dict[str, MediaCall] = {}
        self._allocating: set[str] = set()
        self.recording_errors = 0

    # --- allocation ---

    async def _bind(self, session: RelaySession, side: Side
                    ) -> tuple[int, dict[tuple[Side, bool], RtpPortProtocol]]:
        """Take a pair from the pool and bind it; a pair some other program holds is
        skipped (given back to the end of the pool) and the next one tried."""
        for _ in range(self.bind_attempts):
            port = self.pool.allocate()
            try:
                return port, await bind_side(session, self.bind_host, side, port)
            except OSError:
                self.pool.release(port)
        raise PortsExhausted(f"no bindable port pair after {self.bind_attempts} attempts")

    async def allocate(self, call_id: str, record: bool) -> MediaCall:
        """Reserve and bind both sides' port pairs; open the spools if `record`."""
        if call_id in self.calls or call_id in self._allocating:
            raise ValueError(f"call {call_id} already has media")
        self._allocating.add(call_id)  # allocation awaits: keep the id taken meanwhile
        try:
            return await self._allocate(call_id, record)
        finally:
            self._allocating.discard(call_id)

    async def _allocate(self, call_id: str, record: bool) -> MediaCall:
        loop = asyncio.get_running_loop()
        started_at = time.time()
        session = RelaySession(loop.time(), latch_any_ip=self.latch_any_ip)
        bound: dict[Side, int] = {}
        endpoints: dict[tuple[Side, bool], RtpPortProtocol] = {}
        try:
            for side in (Side.CALLER, Side.CALLEE):
                port, eps = await self._bind(session, side)
                bound[side] = port
                endpoints.update(eps)
            recording = None
            if record:
                # A thread (not `executor`, which may be a process pool): the files
                # opened here must belong to this process.
                recording = await loop.run_in_executor(
                    None, self._open_recording, call_id, started_at,
                    started_at - loop.time())
                session.tap = self._tap(recording)
        except BaseException:
            for ep in endpoints.values():
                if ep.transport is not None:
                    ep.transport.close()
            for port in bound.values():
                self.pool.release(port)
            raise
        origins = {side: RelayOrigin(secrets.randbelow(1 << 31), 1) for side in Side}
        state = _CallState(session, CallSockets(endpoints), origins, recording)
        call = MediaCall(call_id, record, started_at, bound, state)
        self.calls[call_id] = call
        return call

    def _open_recording(self, call_id: str, started_at: float, offset: float) -> _Recording:
        if self.recordings_dir is None:
            raise ValueError("record=True but the backend has no recordings_dir")
        directory = call_dir(self.recordings_dir, call_id, started_at)
        directory.mkdir(parents=True, exist_ok=True)
        legs: dict[str, dict[str, object]] = {n: {"codec": None} for n in _LEG_NAMES.values()}
        meta = CallMeta(call_id, started_at, legs)
        (directory / "meta.json").write_text(meta.to_json())
        writers = {}
        for side, name in _LEG_NAMES.items():
            f: BinaryIO = open(directory / f"{name}.spool", "wb", buffering=0)  # noqa: SIM115
            # Jittered flush points: calls that start together (a burst of INVITEs,
            # a benchmark) would otherwise all write in the same packet period every
            # second, a periodic stall of the event loop.
            spread = 0.5 + secrets.randbelow(1000) / 1000
            writers[side] = SpoolWriter(f, flush_interval=spread,
                                        flush_packets=max(1, round(50 * spread)))
        return _Recording(directory, meta, writers, offset)

    def _tap(self, rec: _Recording) -> Callable[[int, bytes, float], None]:
        writers = rec.writers
        offset = rec.wall_offset

        def tap(side: int, data: bytes, now: float) -> None:
            # Called from the hot path: a buffered append, a write about once a second.
            if rec.failed:
                return
            wall = now + offset
            try:
                writer = writers[side]  # type: ignore[index]
                if writer.append(data, wall):
                    writer.flush(wall)
            except OSError:
                # Disk full or similar: keep relaying, stop recording this call.
                rec.failed = True
                self.recording_errors += 1
                log.warning("recording stopped for call %s: write failed",
                            rec.meta.call_id, exc_info=True)

        return tap

    # --- SDP ---

    def _apply(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        if call.released:
            raise RuntimeError(f"call {call.call_id}: media already released")
        state = _state(call)
        parsed = SessionDescription.parse(sdp)
        remote = remote_media(parsed)  # NoCommonCodec (488) before any state changes
        to_side = from_side.other
        out = rewrite_for_peer(parsed, relay_address=self.advertise_host,
                               relay_port=call.local_ports[to_side],
                               origin=state.origins[to_side])
        state.session.set_remote(from_side, remote.address, remote.rtp_port,
                                 remote.rtcp_port, remote.rtcp_address)
        # Ringing is not silence: the idle clock restarts at each negotiation.
        state.session.mark_active(asyncio.get_running_loop().time())
        state.codecs[from_side] = remote.codec
        if state.recording is not None:
            state.recording.meta.legs[_LEG_NAMES[from_side]]["codec"] = remote.codec
        return bytes(out)

    async def offer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """Rewrite `from_side`'s offer for the other side; learn `from_side`'s address."""
        return self._apply(call, from_side, sdp)

    async def answer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """Rewrite `from_side`'s answer for the other side; learn `from_side`'s address."""
        return self._apply(call, from_side, sdp)

    # --- observation ---

    def stats(self, call: MediaCall) -> MediaStats:
        """Per-side counters and idle time."""
        session = _state(call).session
        now = asyncio.get_running_loop().time()
        return MediaStats(call.call_id, session.stats(Side.CALLER),
                          session.stats(Side.CALLEE), session.idle_for(now))

    def idle_calls(self, timeout: float) -> list[MediaCall]:
        """Live calls with no accepted RTP/RTCP from either side for `timeout` seconds."""
        now = asyncio.get_running_loop().time()
        return [c for c in self.calls.values() if _state(c).session.idle_for(now) >= timeout]

    # --- release ---

    async def release(self, call: MediaCall) -> RecordingResult | None:
        """Close the sockets, free the ports (once), and finish the recording if any."""
        if call.released:
            return None
        call.released = True
        state = _state(call)
        state.sockets.close()
        state.session.tap = None
        for port in call.local_ports.values():
            self.pool.release(port)
        self.calls.pop(call.call_id, None)
        rec = state.recording
        if rec is None:
            return None
        loop = asyncio.get_running_loop()
        # Closing the spools needs this process (it owns the files): a thread. The
        # finish is a pure function of the folder, so `executor` may be a process pool.
        if not await loop.run_in_executor(None, _close_spools, rec):
            return None
        try:
            return await loop.run_in_executor(self.executor, finish_call, rec.directory)
        except (OSError, SpoolError):
            log.warning("finishing recording of call %s failed; finish_pending will retry",
                        call.call_id, exc_info=True)
            return None

    async def finish_pending(self) -> list[RecordingResult]:
        """Finish recordings a crash left as spools (call at start-up; live calls skipped)."""
        if self.recordings_dir is None:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, finish_pending, self.recordings_dir,
                                          set(self.calls))

    async def close(self) -> None:
        """Release every live call (shutdown)."""
        for call in list(self.calls.values()):
            await self.release(call)


def _state(call: MediaCall) -> _CallState:
    state = call.state
    if not isinstance(state, _CallState):
        raise TypeError(f"call {call.call_id} was not allocated by InProcessBackend")
    return state


def _close_spools(rec: _Recording) -> bool:
    """Flush and close the spools and write the final meta.json; False if IO failed."""
    ok = True
    for writer in rec.writers.values():
        try:
            writer.close()
        except OSError:
            ok = False
    try:
        (rec.directory / "meta.json").write_text(rec.meta.to_json())
    except OSError:
        ok = False
    if not ok:
        log.warning("closing the spools of call %s failed", rec.meta.call_id, exc_info=True)
    return ok
