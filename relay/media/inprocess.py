"""The in-process media backend: port pool + sans-IO relay session + plain sockets.

Allocation is synchronous underneath (binding a socket never blocks and needs no
name lookup), so `allocate` returns without suspending its caller and without a
thread hop. All calls' sockets are read through one `RtpPoller` (relay/io/rtp.py).

Recording: the session's tap appends each accepted RTP datagram to the leg's spool
buffer; `relay.media.recorder` opens the call's one spool file (in a batch with the
other calls of the same 40 ms), frames the buffers about once a second and writes
them, all on its IO thread. Allocation does not wait for the disk: if the spool
cannot be created, the call goes on unrecorded (counted in `recording_errors`,
logged), as it does when a write fails mid-call. At release the spool is finished
into WAV files in `executor` (batched; a process pool keeps that CPU work off this
process's GIL and so off the event loop).

The relay's own voice (answer a side itself, play prompts, detect digits) lives in
`relay.media.playout`; a call gets a `CallVoice` at its first `play` or
`detect_digits`, and only then leaves the zero-copy relay (see that module).
Events go to the listener through `loop.call_soon`, never from inside the datagram
handler, in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recordings.finish import FREE_DIR, RecordingResult, call_dir, finish_pending, prefill
from recordings.spool import CallMeta, SpoolError
from relay.io.rtp import CallSockets, RelayPort, RtpPoller, open_side
from relay.media.backend import MediaCall, MediaEvent, MediaStats
from relay.media.playout import CallVoice, PlayoutClock, PromptCache
from relay.media.recorder import LEG_NAMES, CallRecording, Finisher, Recorder
from relay.rtp.ports import PortPool, PortsExhausted
from relay.rtp.session import RelaySession, Side
from relay.sdp import (
    LocalMedia,
    RelayOrigin,
    SessionDescription,
    choose_local_media,
    local_answer,
    local_offer,
    remote_media,
    rewrite_for_peer,
)
from relay.sip import system_random

if TYPE_CHECKING:
    from relay.media.registry import BackendContext

__all__ = ["InProcessBackend", "open_backend"]

#: Emptied spool files kept ready beyond twice the live recordings (recordings.finish).
SPOOL_POOL_MIN = 512

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _CallState:
    session: RelaySession
    sockets: CallSockets
    origins: dict[Side, RelayOrigin]  # the o= the relay owns toward each side
    loop_started: float  # the loop's clock at allocation (MediaCall.started_at in epoch)
    recording: CallRecording | None = None
    codecs: dict[Side, str | None] = field(default_factory=dict)
    offers: dict[Side, SessionDescription] = field(default_factory=dict)  # as received
    event_pts: dict[Side, int | None] = field(default_factory=dict)  # telephone-event PT
    settled: LocalMedia | None = None  # the format the relay answered with itself
    answered_by: Side | None = None  # whose answer (or ours) settled the codec
    voice: CallVoice | None = None  # made at the first play or detect_digits


class InProcessBackend:
    """`MediaBackend` that relays RTP itself. See `relay.media.backend.MediaBackend`."""

    def __init__(self, *, bind_host: str = "127.0.0.1", advertise_host: str | None = None,
                 port_range: tuple[int, int] = (20000, 29999),
                 recordings_dir: Path | None = None, executor: Executor | None = None,
                 latch_any_ip: bool = False, bind_attempts: int = 8,
                 manifest_key: bytes | None = None) -> None:
        """Media on `bind_host`, announced in SDP as `advertise_host` (public address).

        `recordings_dir` is required for calls allocated with record=True; `executor`
        runs the finishing step (None: the loop's default thread pool; a
        ProcessPoolExecutor keeps its CPU work off this process entirely). With
        `manifest_key` the finishing also seals each recording (recordings.manifest)
        before its spool goes: a crash in between finishes and seals it at the next start.
        """
        self.bind_host = bind_host
        self.advertise_host = advertise_host or bind_host
        self.pool = PortPool(*port_range)
        self.recordings_dir = recordings_dir
        self.executor = executor
        self.latch_any_ip = latch_any_ip
        self.bind_attempts = bind_attempts
        self.calls: dict[str, MediaCall] = {}
        free = recordings_dir / FREE_DIR if recordings_dir is not None else None
        self.recorder = Recorder(free)
        # The pool of emptied spools follows the live recordings, with room for a burst.
        self.manifest_key = manifest_key
        self.finisher = Finisher(executor, free,
                                 lambda: SPOOL_POOL_MIN + 2 * self.recorder.live, manifest_key)
        self._poller: RtpPoller | None = None  # made on the loop, at the first call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: PlayoutClock | None = None  # made at the first play
        self.prompts = PromptCache()
        self._listener: Callable[[MediaEvent], None] | None = None
        self._play_ids = 0

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # Looked up once: on Python 3.11 get_running_loop() costs a getpid() each time.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def poller(self) -> RtpPoller | None:
        """The poller reading every call's sockets (None before the first call)."""
        return self._poller

    @property
    def playout(self) -> PlayoutClock | None:
        """The one timer that paces every prompt (None before the first play)."""
        return self._clock

    @property
    def recording_errors(self) -> int:
        """Recordings stopped by a failed spool write."""
        return self.recorder.errors

    # --- allocation ---

    def _bind(self, session: RelaySession, side: Side) -> tuple[int, list[RelayPort]]:
        """Take a pair from the pool and bind it; a pair some other program holds is
        skipped (given back to the end of the pool) and the next one tried."""
        for _ in range(self.bind_attempts):
            port = self.pool.allocate()
            try:
                return port, open_side(session, self.bind_host, side, port)
            except OSError:
                self.pool.release(port)
        raise PortsExhausted(f"no bindable port pair after {self.bind_attempts} attempts")

    async def allocate(self, call_id: str, record: bool) -> MediaCall:
        """Reserve and bind both sides' port pairs; start the spools if `record`.

        Never suspends: the files are opened on the recorder's IO thread meanwhile.
        """
        if call_id in self.calls:
            raise ValueError(f"call {call_id} already has media")
        loop = self._running_loop()
        started_at = time.time()
        recording = None
        if record:
            if self.recordings_dir is None:
                raise ValueError("record=True but the backend has no recordings_dir")
            legs: dict[str, dict[str, object]] = {n: {"codec": None} for n in LEG_NAMES}
            recording = CallRecording(call_dir(self.recordings_dir, call_id, started_at),
                                      CallMeta(call_id, started_at, legs),
                                      started_at - loop.time())
        session = RelaySession(loop.time(), latch_any_ip=self.latch_any_ip)
        bound: dict[Side, int] = {}
        ports: list[RelayPort] = []
        try:
            for side in (Side.CALLER, Side.CALLEE):
                port, pair = self._bind(session, side)
                bound[side] = port
                ports += pair
        except BaseException:
            for p in ports:
                p.close()
            for port in bound.values():
                self.pool.release(port)
            raise
        sockets = CallSockets(ports)
        if self._poller is None:
            self._poller = RtpPoller(loop)
        sockets.start(self._poller)
        if recording is not None:
            session.tap = recording.tap()
            self.recorder.start(recording, lambda: setattr(session, "tap", None))
        ids = int.from_bytes(system_random(8), "big") >> 2  # both legs' o= session ids
        origins = {Side.CALLER: RelayOrigin(ids >> 31, 1),
                   Side.CALLEE: RelayOrigin(ids & 0x7FFFFFFF, 1)}
        state = _CallState(session, sockets, origins, loop.time(), recording)
        call = MediaCall(call_id, record, started_at, bound, state)
        self.calls[call_id] = call
        return call

    # --- SDP ---

    def _apply(self, call: MediaCall, from_side: Side, sdp: bytes, is_offer: bool) -> bytes:
        state = _live_state(call)
        parsed = SessionDescription.parse(sdp)
        remote = remote_media(parsed)  # NoCommonCodec (488) before any state changes
        to_side = from_side.other
        out = rewrite_for_peer(parsed, relay_address=self.advertise_host,
                               relay_port=call.local_ports[to_side],
                               origin=state.origins[to_side])
        state.session.set_remote(from_side, remote.address, remote.rtp_port,
                                 remote.rtcp_port, remote.rtcp_address)
        # Ringing is not silence: the idle clock restarts at each negotiation.
        state.session.mark_active(self._running_loop().time())
        state.codecs[from_side] = remote.codec
        # RFC 4733: the formats kept are PCMU, PCMA and telephone-event; the event PT
        # is the one this side sends its digits with.
        state.event_pts[from_side] = next(
            (pt for pt in remote.payload_types if pt not in (0, 8)), None)
        if is_offer:
            state.offers[from_side] = parsed
        else:
            state.answered_by = from_side
        if state.recording is not None:
            state.recording.set_codec(LEG_NAMES[from_side], remote.codec)
        return bytes(out)

    async def offer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """Rewrite `from_side`'s offer for the other side; learn `from_side`'s address."""
        return self._apply(call, from_side, sdp, True)

    async def answer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """Rewrite `from_side`'s answer for the other side; learn `from_side`'s address."""
        return self._apply(call, from_side, sdp, False)

    async def answer_locally(self, call: MediaCall, side: Side) -> bytes:
        """The relay's own answer to the offer `side` made (given to `offer` before):
        PCMU if offered, else PCMA (`NoCommonCodec`, 488, otherwise), telephone-event
        with the offer's payload type if offered, the port facing `side`."""
        state = _live_state(call)
        offer = state.offers.get(side)
        if offer is None:
            raise RuntimeError(f"call {call.call_id}: no offer from {side.name} to answer")
        answer, media = local_answer(offer, relay_address=self.advertise_host,
                                     relay_port=call.local_ports[side],
                                     origin=state.origins[side])
        state.settled = media
        state.answered_by = None  # the relay itself
        state.codecs[side] = media.codec
        if state.recording is not None:
            state.recording.meta.legs[LEG_NAMES[side]]["codec"] = media.codec
        # `offer` already learnt the address and started latching; the call is live now.
        state.session.mark_active(self._running_loop().time())
        return bytes(answer)

    async def local_offer(self, call: MediaCall, to_side: Side) -> bytes:
        """A fresh offer toward `to_side` with the codec settled with the other side
        (by `answer_locally`, else chosen from the other side's offer)."""
        state = _live_state(call)
        media = state.settled
        if media is None:
            other_offer = state.offers.get(to_side.other)
            if other_offer is None:
                raise RuntimeError(f"call {call.call_id}: no codec settled to offer")
            media = choose_local_media(other_offer)
        out = local_offer(media, relay_address=self.advertise_host,
                          relay_port=call.local_ports[to_side], origin=state.origins[to_side])
        return bytes(out)

    # --- the relay's own voice ---

    def set_listener(self, listener: Callable[[MediaEvent], None]) -> None:
        """Where `DigitReceived` and `PlaybackEnded` go (called on the event loop, via
        `call_soon`, outside the datagram handler; an exception in it is logged)."""
        self._listener = listener

    def _emit(self, event: MediaEvent) -> None:
        self._running_loop().call_soon(self._deliver, event)

    def _deliver(self, event: MediaEvent) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            listener(event)
        except Exception:  # the controller's bug must not break the media path
            log.exception("call %s: media event listener failed on %r", event.call_id, event)

    def _voice(self, call: MediaCall, state: _CallState) -> CallVoice:
        voice = state.voice
        if voice is None:
            loop = self._running_loop()
            if self._clock is None:
                self._clock = PlayoutClock(loop)
            voice = state.voice = CallVoice(call.call_id, state.session, state.sockets,
                                            self._clock, self._emit,
                                            call.started_at - state.loop_started)
        return voice

    def _payload_type(self, call: MediaCall, state: _CallState, side: Side) -> int:
        """The G.711 payload type `side` receives: what the relay answered with, else
        the answerer's first codec (RFC 3264 §6.1: the answer leads with the choice)."""
        if state.settled is not None:
            return state.settled.payload_type
        codec = state.codecs.get(state.answered_by) if state.answered_by is not None else None
        codec = codec or state.codecs.get(side)
        if codec is None:
            raise RuntimeError(f"call {call.call_id}: no codec negotiated with {side.name}")
        return 0 if codec == "PCMU" else 8

    async def play(self, call: MediaCall, side: Side, prompt: Path, *,
                   repeat: bool = False) -> int:
        """Play `prompt` into `side` (ending what played there). Raises `PromptError`
        for a file that is not 8 kHz mono 16-bit PCM, RuntimeError after release."""
        state = _live_state(call)
        pt = self._payload_type(call, state, side)
        audio = await self.prompts.get(prompt, pt)
        state = _live_state(call)  # released while the file was read?
        self._play_ids += 1
        self._voice(call, state).play(side, audio, pt, self._play_ids, repeat=repeat,
                                      now=self._running_loop().time())
        return self._play_ids

    async def stop_play(self, call: MediaCall, side: Side) -> None:
        """Stop what plays into `side` (PlaybackEnded, completed=False); no-op if nothing."""
        state = _state(call)
        if state.voice is not None and not call.released:
            state.voice.stop(side)

    async def detect_digits(self, call: MediaCall, side: Side, on: bool) -> None:
        """Report `side`'s RFC 4733 digits and keep them from the other side (or stop).

        With no telephone-event negotiated with `side` there is nothing to detect
        in the media (digits may still come as SIP INFO); the call is left as it is.
        """
        state = _live_state(call)
        if on:
            pt = state.event_pts.get(side)
            if pt is None:
                log.debug("call %s: no telephone-event from %s", call.call_id, side.name)
                return
            self._voice(call, state).detect(side, pt, True)
        elif state.voice is not None:
            state.voice.detect(side, None, False)

    # --- observation ---

    def stats(self, call: MediaCall) -> MediaStats:
        """Per-side counters and idle time."""
        session = _state(call).session
        now = self._running_loop().time()
        return MediaStats(call.call_id, session.stats(Side.CALLER),
                          session.stats(Side.CALLEE), session.idle_for(now))

    def idle_calls(self, timeout: float) -> list[MediaCall]:
        """Live calls with no accepted RTP/RTCP from either side for `timeout` seconds."""
        now = self._running_loop().time()
        return [c for c in self.calls.values() if _state(c).session.idle_for(now) >= timeout]

    # --- release ---

    async def release(self, call: MediaCall) -> RecordingResult | None:
        """Close the sockets, free the ports (once), and finish the recording if any."""
        if call.released:
            return None
        call.released = True
        state = _state(call)
        if state.voice is not None:
            state.voice.close()  # PlaybackEnded(completed=False) for what still played
        state.sockets.close()
        state.session.tap = None
        for port in call.local_ports.values():
            self.pool.release(port)
        self.calls.pop(call.call_id, None)
        rec = state.recording
        if rec is None:
            return None
        if not await self.recorder.stop(rec):
            return None
        # The finish is a pure function of the folder, so `executor` may be a process pool.
        try:
            return await self.finisher.finish(rec.directory)
        except (OSError, SpoolError, BrokenExecutor):
            log.warning("finishing recording of call %s failed; finish_pending will retry",
                        call.call_id, exc_info=True)
            return None

    async def finish_pending(self) -> list[RecordingResult]:
        """Finish recordings a crash left as spools (call at start-up; live calls skipped)."""
        if self.recordings_dir is None:
            return []
        loop = asyncio.get_running_loop()
        key = self.manifest_key
        done = await loop.run_in_executor(self.executor, finish_pending, self.recordings_dir,
                                          set(self.calls),
                                          None if key is None else (key, time.time()))
        if self.recorder.pool.directory is not None:
            # Before the first call: so that new calls rename spools rather than create them.
            with contextlib.suppress(OSError):
                await loop.run_in_executor(self.executor, prefill, self.recorder.pool.directory,
                                           SPOOL_POOL_MIN, SPOOL_POOL_MIN)
        return done

    async def close(self) -> None:
        """Release every live call (shutdown)."""
        for call in list(self.calls.values()):
            await self.release(call)
        await self.finisher.close()
        self.recorder.shutdown()
        if self._clock is not None:
            self._clock.close()
            self._clock = None
        if self._poller is not None:
            self._poller.close()
            self._poller = None


def _live_state(call: MediaCall) -> _CallState:
    if call.released:
        raise RuntimeError(f"call {call.call_id}: media already released")
    return _state(call)


def _state(call: MediaCall) -> _CallState:
    state = call.state
    if not isinstance(state, _CallState):
        raise TypeError(f"call {call.call_id} was not allocated by InProcessBackend")
    return state


async def open_backend(ctx: BackendContext) -> InProcessBackend:
    """`[media] backend = "inprocess"` (relay.media.registry), with its finishing
    processes (`[media] finish_workers`; 0: a thread)."""
    from relay.media.recorder import finisher_pool

    media, cfg = ctx.media, ctx.config
    # Started from this thread, once, before serving: the workers' parent-death signal
    # (PR_SET_PDEATHSIG) follows the thread that spawned them, so not a pool thread.
    pool = finisher_pool(media.finish_workers) if media.finish_workers > 0 else None
    return InProcessBackend(
        bind_host=media.bind if media.bind is not None else cfg.sip[0],
        advertise_host=media.advertise if media.advertise is not None else ctx.advertise,
        port_range=cfg.media_ports, recordings_dir=Path(cfg.recordings), executor=pool,
        manifest_key=ctx.manifest_key)
