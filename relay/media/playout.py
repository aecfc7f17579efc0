"""The asyncio side of the relay's own voice in the in-process backend.

The sans-IO pieces (`relay.rtp.player`, `relay.rtp.dtmf`) decide; this module only
feeds them and sends:

- `PlayoutClock`: ONE `loop.call_at` timer, every 20 ms, for every prompt playing in
  every call (STYLE 10: no task or timer per call, let alone per packet). It also
  runs the detectors' soft-state expiry while an event is open. It stops when
  nothing plays and nothing waits.
- `CallVoice`: one call's players, outbound streams and detectors. A side only pays
  for any of it once it is played into or listened to: then the relay port facing
  the sending side gets its own `receive` (see `_receiver`), which the shared
  poller calls instead of `RelaySession.receive`. Calls that never use the voice
  keep the zero-copy relay untouched.
- `PromptCache`: a prompt file's G.711 payload per (file, payload type), read and
  encoded in an executor, off the event loop.
"""

from __future__ import annotations

import array
import asyncio
import logging
import sys
import wave
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from recordings.g711 import encode
from relay.io.rtp import CallSockets
from relay.media.backend import DigitReceived, MediaEvent, PlaybackEnded
from relay.media.prompts import check_wav
from relay.rtp.dtmf import Digit, DigitDetector
from relay.rtp.player import OutboundStream, Pacer, Player
from relay.rtp.session import Address, RelaySession, Side
from relay.sip import system_random

__all__ = ["CallVoice", "PlayoutClock", "PromptCache", "load_prompt"]

log = logging.getLogger(__name__)

Receive = Callable[[int, bytes, Address, float], Address | None]


def load_prompt(path: Path, payload_type: int) -> bytes:
    """A WAV prompt (8 kHz mono 16-bit PCM) as a G.711 payload; `PromptError` if it is
    not that format. Blocking: run it in an executor."""
    check_wav(path)
    with wave.open(str(path), "rb") as w:
        samples = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    return encode(samples, payload_type)


class PromptCache:
    """Encoded prompts by (file, payload type); a prompt is read and encoded once."""

    def __init__(self, executor: Executor | None = None) -> None:
        """`executor` runs the file read and the encoding (None: the loop's default)."""
        self.executor = executor
        self._audio: dict[tuple[str, int], bytes] = {}

    async def get(self, path: Path, payload_type: int) -> bytes:
        """The G.711 payload of `path`; raises `PromptError` for a bad or missing file."""
        key = (str(path), payload_type)
        audio = self._audio.get(key)
        if audio is None:
            loop = asyncio.get_running_loop()
            audio = await loop.run_in_executor(self.executor, load_prompt, path, payload_type)
            self._audio[key] = audio
        return audio


class _Play:
    """A prompt playing into one side."""

    __slots__ = ("payload_type", "play_id", "player")

    def __init__(self, player: Player, payload_type: int, play_id: int) -> None:
        self.player = player
        self.payload_type = payload_type
        self.play_id = play_id


class CallVoice:
    """The relay's own voice in one call: what plays into each side, what it hears."""

    def __init__(self, call_id: str, session: RelaySession, sockets: CallSockets,
                 clock: PlayoutClock, emit: Callable[[MediaEvent], None],
                 clock_offset: float) -> None:
        """`emit` reports events; `clock_offset` is wall time minus the loop's clock."""
        self.call_id = call_id
        self.session = session
        self.sockets = sockets
        self.clock = clock
        self.emit = emit
        self.clock_offset = clock_offset
        self.streams: dict[Side, OutboundStream] = {}
        self.plays: dict[Side, _Play] = {}
        self.detectors: dict[Side, DigitDetector] = {}
        self.send_errors = 0

    # --- playing ---

    def play(self, side: Side, audio: bytes, payload_type: int, play_id: int, *,
             repeat: bool, now: float) -> None:
        """Start `audio` into `side` (ending what played there); the shared clock sends it."""
        self.stop(side)
        stream = self.streams.get(side)
        if stream is None:
            # RFC 3550 §5.1: random SSRC, first sequence number and timestamp.
            r = int.from_bytes(system_random(10), "big")
            stream = OutboundStream(r >> 48, r >> 32, r, now)
            self.streams[side] = stream
            self._install(side.other)  # from now on packets toward `side` are rewritten
        stream.start_prompt()
        self.plays[side] = _Play(Player(audio, payload_type, repeat=repeat), payload_type,
                                 play_id)
        self.clock.add_player(self, side)

    def stop(self, side: Side, completed: bool = False) -> None:
        """End what plays into `side` (PlaybackEnded); relaying toward it resumes."""
        play = self.plays.pop(side, None)
        if play is None:
            return
        self.streams[side].stop_prompt()
        self.clock.remove_player(self, side)
        self.emit(PlaybackEnded(self.call_id, side, play.play_id, completed))

    def send_frames(self, side: Side, count: int, now: float) -> None:
        """Send the `count` frames due (the clock's tick); end the play when it runs out."""
        play = self.plays[side]
        stream = self.streams[side]
        dest = self.session.destination(side)
        sendto = self.sockets.ports[(side, False)].sock.sendto
        player = play.player
        for _ in range(count):
            frame = player.next_frame()
            if frame is None:
                break
            packet = stream.frame(play.payload_type, frame, now)
            if dest is not None:
                try:
                    sendto(packet, dest)
                except OSError:
                    self.send_errors += 1
        # The relay speaking is media too: a caller who listens in silence (VAD) to a
        # prompt or to ringback is not an idle call for the media timeout.
        self.session.mark_active(now)
        if player.done:
            self.stop(side, completed=True)

    # --- listening ---

    def detect(self, side: Side, payload_type: int | None, on: bool) -> None:
        """Start or stop reporting `side`'s digits (and keeping them from the other side)."""
        if on and payload_type is not None:
            if side not in self.detectors:
                self.detectors[side] = DigitDetector(payload_type)
        else:
            self.detectors.pop(side, None)
            if not self.detectors:
                self.clock.unwatch(self)
        self._install(side)

    def expire(self, now: float) -> bool:
        """Report digits whose end packets never came (soft state); True while any waits."""
        waiting = False
        for side, detector in self.detectors.items():
            self._report(side, detector.expire(now))
            waiting = waiting or detector.deadline is not None
        return waiting

    def _report(self, side: Side, digits: list[Digit]) -> None:
        for d in digits:
            self.emit(DigitReceived(self.call_id, side, d.digit, d.at + self.clock_offset))

    # --- the receive path of a side the voice has a say in ---

    def _install(self, from_side: Side) -> None:
        """Give the port facing `from_side` the receive it needs now."""
        self.sockets.ports[(from_side, False)].receive = self._receiver(from_side)

    def _receiver(self, from_side: Side) -> Receive:
        """What to do with an RTP datagram from `from_side`.

        Plain (`RelaySession.receive`) unless `from_side`'s digits are detected or the
        relay owns the stream toward the other side. Runs in the poller's hot loop:
        everything it needs is bound here, once.
        """
        session = self.session
        detector = self.detectors.get(from_side)
        to_side = from_side.other
        stream = self.streams.get(to_side)
        if detector is None and stream is None:
            return session.receive
        accept, destination = session.accept, session.destination
        send = self.sockets.ports[(from_side, False)].send  # out of the `to_side` socket
        event_pt = detector.payload_type if detector is not None else -1
        report, watch = self._report, self.clock.watch

        def receive(side: int, data: bytes, source: Address, now: float) -> Address | None:
            if not accept(side, data, source, now):  # latching, counters, the tap
                return None
            if detector is not None and len(data) > 1 and data[1] & 0x7F == event_pt:
                # Consumed: digits never reach the other side (privacy: an extension,
                # a PIN). The tap above has recorded the packet all the same.
                report(from_side, detector.receive(data, now))
                if detector.deadline is not None:
                    watch(self)
                return None
            dest = destination(to_side)
            if dest is None:
                return None
            if stream is None:
                return dest  # the poller sends `data` itself
            out = stream.relay(data, now)
            if out is not None:
                send(out, dest)
            return None

        return receive

    def close(self) -> None:
        """The call is released: end its plays (PlaybackEnded, completed=False)."""
        for side in list(self.plays):
            self.stop(side)
        self.detectors.clear()
        self.clock.unwatch(self)


class PlayoutClock:
    """The one 20 ms timer of a backend: it drives every player and detector expiry."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Idle until the first `add_player` or `watch`."""
        self._loop = loop
        self._players: dict[tuple[CallVoice, Side], None] = {}  # insertion-ordered set
        self._watched: dict[CallVoice, None] = {}
        self._pacer: Pacer | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.ticks = 0

    def __len__(self) -> int:
        """Players running now."""
        return len(self._players)

    def add_player(self, voice: CallVoice, side: Side) -> None:
        """Send `voice`'s frames into `side` from the next tick on."""
        self._players[(voice, side)] = None
        self._arm()

    def remove_player(self, voice: CallVoice, side: Side) -> None:
        """Stop ticking for that player (idempotent)."""
        self._players.pop((voice, side), None)

    def watch(self, voice: CallVoice) -> None:
        """Check `voice`'s detectors on each tick until no event is open."""
        if voice not in self._watched:
            self._watched[voice] = None
            self._arm()

    def unwatch(self, voice: CallVoice) -> None:
        """Stop checking `voice` (idempotent)."""
        self._watched.pop(voice, None)

    def _arm(self) -> None:
        if self._handle is not None:
            return
        if self._pacer is None:
            self._pacer = Pacer(self._loop.time())  # first frames go out at once
        self._handle = self._loop.call_at(self._pacer.deadline, self._tick)

    def _tick(self) -> None:
        """Every player sends what is due; detectors expire. Never raises."""
        self._handle = None
        self.ticks += 1
        now = self._loop.time()
        pacer = self._pacer
        assert pacer is not None
        due = pacer.due(now)
        if due:
            for voice, side in list(self._players):
                try:
                    voice.send_frames(side, due, now)
                except Exception:  # a bug in one call must not stop every prompt
                    log.exception("call %s: playing into %s failed", voice.call_id,
                                  side.name)
                    voice.stop(side)
        for voice in list(self._watched):
            if not voice.expire(now):
                self._watched.pop(voice, None)
        if self._players or self._watched:
            self._handle = self._loop.call_at(pacer.deadline, self._tick)
        else:
            self._pacer = None  # idle: the next play starts a fresh schedule

    def close(self) -> None:
        """Stop the timer (shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._players.clear()
        self._watched.clear()
        self._pacer = None

