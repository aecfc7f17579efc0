"""`MediaBackend` over rtpengine's ng control protocol (for scale: rtpengine relays).

The ng transport (one UDP socket, cookies, resends) is `relay.media.ng`.

Commands used: `ping`, `offer`, `answer`, `delete`, `query`, and for the relay's own
voice `play media`, `stop media`, `play DTMF`, `block`/`unblock media`, `block`/`unblock
DTMF` (below). Sides map onto ng tags:
the caller's tag is `caller`, the callee's `callee`; `from-tag` always names the
side that sent the SDP offer (rtpengine's rule), so an offer from the callee (a
re-INVITE from B, RFC 3261 §14) swaps them.

SDP: rtpengine rewrites addresses and ports (`replace: [origin,
session-connection]`, `ICE: remove`, plain RTCP with `rtcp-mux: [demux]`), then the
result goes through the same whitelist as the in-process relay
(`relay.sdp.rewrite_for_peer`): rtpengine 10.5 keeps the peer's o= user name,
session id and s= text, which would leak the other party's software and identity.

Recording: with `record call: yes` and rtpengine started with
`--recording-method=pcap`, rtpengine writes one pcap per call on *its* disk; the
offer reply names it. At release the pcap is converted into our call folder and
finished by `recordings.finish` (`recordings.pcap.finish_from_pcap`), so the call
record is the same as in-process. This needs rtpengine's recording dir readable by
this process (same host or a shared mount).

`stats`/`idle_calls` are synchronous in the protocol; rtpengine's counters are
remote. They answer from the last `query` of each call, refreshed by `refresh()`
(call it periodically, or pass `poll_interval` to `start`).

The relay's own voice (issue 9), checked against rtpengine 10.5 on the wire:

- `answer_locally(call, side)`: rtpengine anchors media only between two tags that
  both gave SDP, so the relay answers for the missing party: ng `answer` (from-tag
  the offerer, to-tag the other side) with a placeholder SDP
  (`relay.media.rtpengine_voice.placeholder_answer`: the one settled codec and
  telephone-event, at rtpengine's own address, port 9). rtpengine's reply toward
  `side` is the local answer. `block media` from `side` until the real party
  answers, so nothing is sent toward the placeholder.
- `local_offer(call, to_side)`: a re-`offer` with the offerer's own SDP and a `codec`
  dictionary whose `strip` is `[all]` and whose `except` list is `[<codec>,
  telephone-event]`: the callee is offered
  only what the caller settled on, at the same rtpengine port as the first offer.
  The callee's answer then goes through `answer` with the `port latching` flag:
  rtpengine keys the ports it shows the caller on the *other* party's SDP address,
  and without the flag the placeholder's replacement moves the caller to new ports
  (seen on 10.5: the caller kept sending to the old port and received from a new one).
- `play`: ng `play media` (`file`, `repeat-times`) selects the party that *hears* it
  (10.5 `media_player`: the player's sink is the selected tag's own stream). ng has
  no end-of-playback notice, so `PlaybackEnded` comes from a timer set to the WAV's
  length (from its header); `stop_play` sends `stop media`. While a prompt plays into
  a side, `block media` from the other side keeps it out (rtpengine still records
  what it receives: the pcap dump runs before blocking).
- `detect_digits`: ng `block DTMF` from that side (its RFC 4733 packets are not
  forwarded); rtpengine, started with `--dtmf-log-dest` at this backend's
  `dtmf_addr`, sends one JSON datagram per digit at the event's end, which becomes
  `DigitReceived` (only while detection is on for that side).
- `play_dtmf` (rtpengine only, not in `MediaBackend`): ng `play DTMF`. rtpengine
  injects into a stream that already flows from the other party and only with the
  `inject DTMF` flag on offer and answer (`inject_dtmf=True`), which sends all audio
  through its transcoder.

Listener contract: `set_listener` takes a plain callable, called on the event loop
(from the DTMF log socket's `datagram_received` and from playback timers), never from
another thread; an exception it raises is logged and swallowed. Events are not
reported for a call after `release`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from recordings.finish import RecordingResult, call_dir, finish_pending
from recordings.pcap import finish_from_pcap
from recordings.spool import CallMeta, SpoolError
from relay.media.backend import DigitReceived, MediaCall, MediaEvent, MediaStats, PlaybackEnded
from relay.media.bencode import Value
from relay.media.ng import NgClient, NgError, NgTimeout, text
from relay.media.rtpengine_voice import (
    DtmfLogError,
    dtmf_digit,
    parse_dtmf_log,
    placeholder_answer,
    wav_seconds,
)
from relay.rtp.ports import PortsExhausted
from relay.rtp.session import Address, LegStats, Side
from relay.sdp import RelayOrigin, SdpError, SessionDescription, remote_media, rewrite_for_peer

if TYPE_CHECKING:
    from relay.media.registry import BackendContext

__all__ = ["NgClient", "NgError", "NgTimeout", "RtpengineBackend", "open_backend"]

log = logging.getLogger(__name__)
_TAGS = {Side.CALLER: "caller", Side.CALLEE: "callee"}
_SIDES = {tag: side for side, tag in _TAGS.items()}
#: `repeat-times` for a prompt played until stopped (rtpengine has no "forever";
#: a million plays of even a 1 s tone outlast any call's maximum duration).
_REPEAT_FOREVER = 1_000_000
_EMPTY = LegStats(0, 0, 0, 0, 0, None, None)


# --- the DTMF log socket ---


class _DtmfLog(asyncio.DatagramProtocol):
    """Receives rtpengine's `--dtmf-log-dest` datagrams and hands them to the backend."""

    def __init__(self, backend: RtpengineBackend, source: str | None) -> None:
        self.backend = backend
        self.source = source  # only this IP may report digits (None: any)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Parse and report one event; bad or foreign datagrams are counted (STYLE 6)."""
        if self.source is not None and addr[0] != self.source:
            self.backend.bad_dtmf_logs += 1
            log.warning("DTMF log datagram from %s, not rtpengine (%s): dropped",
                        addr[0], self.source)
            return
        try:
            entry = parse_dtmf_log(data)
        except DtmfLogError:
            self.backend.bad_dtmf_logs += 1
            return
        self.backend._on_dtmf(entry.call_id, entry.source_tag, entry.event)


# --- the backend ---


@dataclass(eq=False)
class _Play:
    play_id: int
    timer: asyncio.TimerHandle | None  # fires at the prompt's end; None: repeats


@dataclass(eq=False)
class _CallState:
    origins: dict[Side, RelayOrigin]
    offered_by: Side | None = None  # who sent the last offer (names from-tag)
    answered: bool = False
    codecs: dict[Side, str | None] = field(default_factory=dict)
    pcaps: list[str] = field(default_factory=list)
    query: dict[bytes, Value] = field(default_factory=dict)  # the last `query` reply
    negotiated_at: float = 0.0  # epoch seconds of the last offer/answer
    offers: dict[Side, bytes] = field(default_factory=dict)  # each side's last offer SDP
    engine_address: str | None = None  # rtpengine's media address (from its replies)
    local: Side | None = None  # the side the relay answered itself (keeps its port)
    placeholder: bool = False  # the other side of `local` is still the placeholder
    settled: str | None = None  # the codec of the local answer ("PCMU"/"PCMA")
    playing: dict[Side, _Play] = field(default_factory=dict)  # side -> what it hears
    digits: set[Side] = field(default_factory=set)  # sides whose digits are reported
    blocked: set[Side] = field(default_factory=set)  # sides under ng `block media`
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # serialises block/unblock


class RtpengineBackend:
    """`MediaBackend` that hands the media to rtpengine. See the module docstring."""

    def __init__(self, ng_addr: tuple[str, int], *, recordings_dir: Path | None = None,
                 executor: Executor | None = None, timeout: float = 0.5, retries: int = 3,
                 flags: Mapping[str, Any] | None = None, keep_pcap: bool = False,
                 dtmf_addr: tuple[str, int] | None = None, inject_dtmf: bool = False,
                 manifest_key: bytes | None = None) -> None:
        """`ng_addr` is rtpengine's `--listen-ng`; `flags` are extra ng keys for offer/answer.

        `recordings_dir` is our recordings root (calls allocated with record=True
        need it); `executor` runs the pcap conversion and reads prompt headers (None:
        the default threads). `dtmf_addr` is where this backend listens for
        rtpengine's `--dtmf-log-dest` (needed by `detect_digits`); `inject_dtmf`
        marks every call for `play_dtmf` (rtpengine then transcodes all audio).
        With `manifest_key` each converted call folder is sealed before its spools go
        (recordings.manifest), so a crash between the two is finished and sealed again
        at the next start, as the in-process backend's are.
        """
        self.client = NgClient(ng_addr, timeout=timeout, retries=retries)
        self.recordings_dir = recordings_dir
        self.manifest_key = manifest_key
        self.executor = executor
        self.flags = dict(flags or {})
        self.keep_pcap = keep_pcap
        self.dtmf_addr = dtmf_addr
        self.inject_dtmf = inject_dtmf
        self.calls: dict[str, MediaCall] = {}
        self.recording_errors = 0
        self.bad_dtmf_logs = 0
        self._poller: asyncio.Task[None] | None = None
        self._dtmf_log: _DtmfLog | None = None
        self._listener: Callable[[MediaEvent], None] | None = None
        self._play_ids = 0
        self._tasks: set[asyncio.Task[None]] = set()  # unblocks after a prompt's end

    async def start(self, poll_interval: float = 0.0) -> None:
        """Open the control socket (and the DTMF log socket); with `poll_interval` > 0
        refresh stats that often."""
        if self.client.transport is None:
            await self.client.connect()
        if self.dtmf_addr is not None and self._dtmf_log is None:
            self._dtmf_log = _DtmfLog(self, _source_ip(self.client.addr[0]))
            await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: cast(_DtmfLog, self._dtmf_log), local_addr=self.dtmf_addr)
        if poll_interval > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll(poll_interval))

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    async def ping(self) -> bool:
        """True if rtpengine answers `pong`."""
        await self.start()
        try:
            reply = await self.client.request({"command": "ping"})
        except NgError:
            return False
        return reply.get(b"result") == b"pong"

    async def allocate(self, call_id: str, record: bool) -> MediaCall:
        """Register the call locally; rtpengine creates its side at the first offer."""
        if call_id in self.calls:
            raise ValueError(f"call {call_id} already has media")
        if record and self.recordings_dir is None:
            raise ValueError("record=True but the backend has no recordings_dir")
        call_dir(Path("."), call_id, time.time())  # the id must be safe as a folder name
        await self.start()
        origins = {side: RelayOrigin(secrets.randbelow(1 << 31), 1) for side in Side}
        call = MediaCall(call_id, record, time.time(), {}, _CallState(origins))
        self.calls[call_id] = call
        return call

    def _message(self, call: MediaCall, command: str, from_tag: Side, to_tag: Side | None,
                 sdp: bytes) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "command": command, "call-id": call.call_id, "from-tag": _TAGS[from_tag],
            "sdp": sdp,
            # rtpengine docs, "replace": put its own address into o= and session c=.
            "replace": ["origin", "session-connection"],
            "ICE": "remove",  # RFC 8839 candidates would name the peers' addresses
            "rtcp-mux": ["demux"],  # plain RTCP on +1, as the in-process relay offers
            **self.flags,
        }
        if to_tag is not None:
            msg["to-tag"] = _TAGS[to_tag]
        if call.record:
            msg["record call"] = "yes"
        if self.inject_dtmf:
            _add_flag(msg, "inject DTMF")
        return msg

    async def _negotiate(self, call: MediaCall, command: str, from_side: Side, sdp: bytes,
                         extra: Mapping[str, Any] | None = None) -> bytes:
        if call.released:
            raise RuntimeError(f"call {call.call_id}: media already released")
        state = _state(call)
        remote = remote_media(SessionDescription.parse(sdp))  # 400/488 before rtpengine
        if command == "offer":
            from_tag, to_tag = from_side, (from_side.other if state.answered else None)
        else:
            offerer = state.offered_by if state.offered_by is not None else from_side.other
            from_tag, to_tag = offerer, from_side
        msg = self._message(call, command, from_tag, to_tag, sdp)
        for key, value in (extra or {}).items():
            if key == "flags":
                for flag in value:
                    _add_flag(msg, flag)
            else:
                msg[key] = value
        try:
            reply = await self.client.request(msg)
        except NgError as e:
            raise _map_error(e) from e
        out_sdp = reply.get(b"sdp")
        if not isinstance(out_sdp, bytes):
            raise NgError(command, "reply without sdp")
        parsed = SessionDescription.parse(out_sdp)
        engine = remote_media(parsed)  # where rtpengine listens for the other side
        to_side = from_side.other
        if engine.address is not None and engine.rtp_port:
            call.local_ports[to_side] = engine.rtp_port
            state.engine_address = engine.address
        out = rewrite_for_peer(parsed, relay_address=engine.address or "0.0.0.0",
                               relay_port=engine.rtp_port, origin=state.origins[to_side])
        if command == "offer":
            state.offered_by = from_side
            state.offers[from_side] = sdp
        else:
            state.answered = True
        state.codecs[from_side] = remote.codec
        state.negotiated_at = time.time()
        recs = reply.get(b"recordings")
        if isinstance(recs, list):
            for path in recs:
                if isinstance(path, bytes) and path.decode() not in state.pcaps:
                    state.pcaps.append(path.decode())
        return bytes(out)

    async def offer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """ng `offer` with `from_side`'s SDP; returns the sanitised offer for the other side."""
        return await self._negotiate(call, "offer", from_side, sdp)

    async def answer(self, call: MediaCall, from_side: Side, sdp: bytes) -> bytes:
        """ng `answer` with `from_side`'s SDP; returns the sanitised answer for the other.

        After `answer_locally` this is the real party replacing the placeholder (or a
        party that gave early media and failed): the side answered locally keeps the
        rtpengine port it was given (`port latching`: it will get no other answer),
        and its media flows again. The returned answer then need not be sent (same
        port and codec as the local answer).
        """
        state = _state(call)
        latch = state.local is not None and state.local == from_side.other
        extra = {"flags": ["port latching"]} if latch else None
        out = await self._negotiate(call, "answer", from_side, sdp, extra)
        if latch and state.placeholder:
            state.placeholder = False
            await self._sync_blocks(call)
        return out

    # --- the relay's own voice ---

    def set_listener(self, listener: Callable[[MediaEvent], None]) -> None:
        """Where `DigitReceived` and `PlaybackEnded` go (called on the event loop)."""
        self._listener = listener

    def _emit(self, event: MediaEvent) -> None:
        if self._listener is None:
            return
        try:
            self._listener(event)
        except Exception:  # a datagram handler or timer must not die of it (STYLE 6)
            log.exception("media listener failed on %s", event)

    async def answer_locally(self, call: MediaCall, side: Side) -> bytes:
        """Answer `side`'s offer ourselves: ng `answer` with a placeholder for the other
        side (see the module docstring); returns the SDP answer for `side`."""
        state = _state(call)
        offer = state.offers.get(side)
        if state.offered_by != side or offer is None or state.engine_address is None:
            raise RuntimeError(f"call {call.call_id}: no offer from the {side.name.lower()}")
        placeholder, codec = placeholder_answer(
            SessionDescription.parse(offer), state.engine_address,
            state.origins[side.other].sess_id)
        out = await self._negotiate(call, "answer", side.other, placeholder)
        state.local, state.settled, state.placeholder = side, codec, True
        await self._sync_blocks(call)  # nothing goes toward the placeholder
        return out

    async def local_offer(self, call: MediaCall, to_side: Side) -> bytes:
        """A fresh offer toward `to_side`: ng re-`offer` of the other side's SDP limited
        to the settled codec and telephone-event; returns the SDP for `to_side`."""
        state = _state(call)
        offerer = to_side.other
        offer = state.offers.get(offerer)
        if offer is None or state.settled is None:
            raise RuntimeError(f"call {call.call_id}: nothing settled with the "
                               f"{offerer.name.lower()} to offer on")
        codecs = {"strip": ["all"], "except": [state.settled, "telephone-event"]}
        return await self._negotiate(call, "offer", offerer, offer, {"codec": codecs})

    async def play(self, call: MediaCall, side: Side, prompt: Path, *,
                   repeat: bool = False) -> int:
        """ng `play media` of `prompt` into `side`; returns the play id.

        `prompt` must be readable by rtpengine at the same path (same host or a
        shared mount). Raises `OSError`/`ValueError` for an unreadable or non-WAV
        file, `NgError` if rtpengine cannot play it.
        """
        state = _state(call)
        if call.released or state.offered_by is None:
            raise RuntimeError(f"call {call.call_id}: no media to play into")
        loop = asyncio.get_running_loop()
        path, seconds = await loop.run_in_executor(self.executor, _prompt_info, prompt)
        await self.client.request({
            "command": "play media", "call-id": call.call_id, "from-tag": _TAGS[side],
            "file": str(path), "repeat-times": _REPEAT_FOREVER if repeat else 1})
        self._play_ids += 1
        play_id = self._play_ids
        timer = None if repeat else loop.call_later(seconds, self._play_done, call, side,
                                                    play_id)
        replaced = state.playing.get(side)
        state.playing[side] = _Play(play_id, timer)
        if replaced is not None:
            if replaced.timer is not None:
                replaced.timer.cancel()
            self._emit(PlaybackEnded(call.call_id, side, replaced.play_id, False))
        await self._sync_blocks(call)
        return play_id

    def _play_done(self, call: MediaCall, side: Side, play_id: int) -> None:
        """Timer: the prompt ran out (rtpengine's player stops by itself at EOF)."""
        state = _state(call)
        current = state.playing.get(side)
        if call.released or current is None or current.play_id != play_id:
            return
        del state.playing[side]
        self._emit(PlaybackEnded(call.call_id, side, play_id, True))
        task = asyncio.get_running_loop().create_task(self._sync_blocks(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_play(self, call: MediaCall, side: Side) -> None:
        """ng `stop media` into `side` (PlaybackEnded, completed=False); no-op if silent."""
        state = _state(call)
        current = state.playing.pop(side, None)
        if current is None or call.released:
            return
        if current.timer is not None:
            current.timer.cancel()
        try:
            await self.client.request({"command": "stop media", "call-id": call.call_id,
                                       "from-tag": _TAGS[side]})
        except NgTimeout:
            raise
        except NgError as e:
            # "Not currently playing media": it ended at rtpengine just before our timer.
            log.debug("stop media in call %s: %s", call.call_id, e.reason)
        self._emit(PlaybackEnded(call.call_id, side, current.play_id, False))
        await self._sync_blocks(call)

    async def detect_digits(self, call: MediaCall, side: Side, on: bool) -> None:
        """ng `block DTMF` (on) or `unblock DTMF` (off) from `side`, and report its
        digits from rtpengine's DTMF log while on."""
        state = _state(call)
        if call.released or state.offered_by is None:
            raise RuntimeError(f"call {call.call_id}: no media to detect digits in")
        if on and self._dtmf_log is None:
            raise RuntimeError("detect_digits needs dtmf_addr (rtpengine's --dtmf-log-dest)")
        await self.client.request({"command": "block DTMF" if on else "unblock DTMF",
                                   "call-id": call.call_id, "from-tag": _TAGS[side]})
        if on:
            state.digits.add(side)
        else:
            state.digits.discard(side)

    def _on_dtmf(self, call_id: str, tag: str, event: int) -> None:
        """One event from rtpengine's DTMF log (already deduplicated by rtpengine)."""
        call = self.calls.get(call_id)
        side = _SIDES.get(tag)
        digit = dtmf_digit(event)
        if call is None or side is None or digit is None:
            return
        if side in _state(call).digits:
            self._emit(DigitReceived(call_id, side, digit, time.time()))

    async def play_dtmf(self, call: MediaCall, side: Side, digit: str, *,
                        duration_ms: int = 250) -> None:
        """ng `play DTMF`: `side` hears `digit` (rtpengine extra, not in `MediaBackend`).

        rtpengine injects it into the stream from the other side, so that side must
        be sending media, and the backend must run with `inject_dtmf=True`.
        """
        if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {digit!r}")
        await self.client.request({"command": "play DTMF", "call-id": call.call_id,
                                   "from-tag": _TAGS[side.other], "digit": digit.upper(),
                                   "duration": duration_ms})

    async def _sync_blocks(self, call: MediaCall) -> None:
        """Bring rtpengine's `block media` per side in line with what the call needs:
        nothing toward a placeholder, nothing into a side that hears a prompt."""
        state = _state(call)
        async with state.lock:  # compute under the lock: the last caller wins
            if call.released:
                return
            want = {side.other for side in state.playing}
            if state.local is not None and state.placeholder:
                want.add(state.local)
            for side in Side:
                if (side in want) == (side in state.blocked):
                    continue
                command = "block media" if side in want else "unblock media"
                try:
                    await self.client.request({"command": command, "call-id": call.call_id,
                                               "from-tag": _TAGS[side]})
                except NgError as e:
                    log.warning("%s in call %s failed: %s", command, call.call_id, e.reason)
                    continue
                if side in want:
                    state.blocked.add(side)
                else:
                    state.blocked.discard(side)

    # --- observation ---

    async def query(self, call: MediaCall) -> dict[bytes, Value]:
        """ng `query`: rtpengine's view of the call (also cached for `stats`)."""
        reply = await self.client.request({"command": "query", "call-id": call.call_id})
        _state(call).query = reply
        return reply

    async def refresh(self) -> None:
        """Query every live, negotiated call (errors are logged; stale stats stay)."""
        for call in list(self.calls.values()):
            if call.released or _state(call).offered_by is None:
                continue
            try:
                await self.query(call)
            except NgError as e:
                log.debug("query of call %s failed: %s", call.call_id, e)

    def stats(self, call: MediaCall) -> MediaStats:
        """Per-side counters from the last `query` (zeros before the first one)."""
        state = _state(call)
        legs = {side: _leg_stats(state.query, _TAGS[side]) for side in Side}
        return MediaStats(call.call_id, legs[Side.CALLER], legs[Side.CALLEE],
                          time.time() - self._last_activity(call))

    def _last_activity(self, call: MediaCall) -> float:
        state = _state(call)
        last = max(call.started_at, state.negotiated_at)
        for side in Side:
            rx = _leg_stats(state.query, _TAGS[side]).last_rx
            if rx is not None and rx > last:
                last = rx
        return last

    def idle_calls(self, timeout: float) -> list[MediaCall]:
        """Live calls whose last known packet (or negotiation) is `timeout` s old."""
        now = time.time()
        return [c for c in self.calls.values() if now - self._last_activity(c) >= timeout]

    # --- release ---

    async def release(self, call: MediaCall) -> RecordingResult | None:
        """ng `delete` (once); convert and finish rtpengine's pcap if recorded."""
        if call.released:
            return None
        call.released = True
        self.calls.pop(call.call_id, None)
        state = _state(call)
        for play in state.playing.values():  # no events after release
            if play.timer is not None:
                play.timer.cancel()
        state.playing.clear()
        deleted = state.offered_by is None  # nothing to delete before the first offer
        if not deleted:
            try:
                await self.client.request({"command": "delete", "call-id": call.call_id})
                deleted = True
            except NgTimeout:
                log.warning("rtpengine delete of call %s timed out", call.call_id)
            except NgError as e:
                # "Unknown call-id": rtpengine's own timeout already ended it.
                log.info("rtpengine delete of call %s: %s", call.call_id, e.reason)
                deleted = True
        if not call.record or self.recordings_dir is None:
            return None
        if not state.pcaps:
            if state.offered_by is not None:
                # Started without --recording-dir/--recording-method=pcap, most likely.
                self.recording_errors += 1
                log.warning("rtpengine named no recording for call %s", call.call_id)
            return None
        if not deleted:
            # The pcap may still be open; converting half a file would lose audio.
            self.recording_errors += 1
            return None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, _finish, self.recordings_dir,
                                              call, state, not self.keep_pcap, self._seal())
        except (OSError, SpoolError):
            self.recording_errors += 1
            log.warning("converting rtpengine's recording of call %s failed",
                        call.call_id, exc_info=True)
            return None

    async def finish_pending(self) -> list[RecordingResult]:
        """Finish call folders a crash left as spools (mid-conversion); live calls skipped.

        A pcap whose call was live when this process died is not recovered: its
        port-to-side map died with the process (rtpengine's metadata file has the
        SDPs to rebuild it; not done yet).
        """
        if self.recordings_dir is None:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, finish_pending, self.recordings_dir,
                                          set(self.calls), self._seal())

    def _seal(self) -> tuple[bytes, float] | None:
        """What finishing seals with (recordings.finish): the key and the time now."""
        return (self.manifest_key, time.time()) if self.manifest_key is not None else None

    async def close(self) -> None:
        """Release every live call, stop polling, close the control socket."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for call in list(self.calls.values()):
            await self.release(call)
        for task in list(self._tasks):
            task.cancel()
        if self._dtmf_log is not None and self._dtmf_log.transport is not None:
            self._dtmf_log.transport.close()
        self._dtmf_log = None
        self.client.close()


def _finish(root: Path, call: MediaCall, state: _CallState, remove: bool,
            seal: tuple[bytes, float] | None) -> RecordingResult:
    """Blocking: pcap -> spools -> WAVs in our dated call folder, sealed with `seal`."""
    legs = {_TAGS[side]: {"codec": state.codecs.get(side), "engine": "rtpengine"}
            for side in Side}
    meta = CallMeta(call.call_id, call.started_at, legs)
    ports = {port: _TAGS[side] for side, port in call.local_ports.items()}
    directory = call_dir(root, call.call_id, call.started_at)
    pcap = Path(state.pcaps[0])
    result = finish_from_pcap(pcap, directory, meta, ports, remove_pcap=remove, seal=seal)
    if remove:
        # rtpengine's metadata file beside the pcaps: <dir>/metadata/rtpengine-meta-<name>.txt
        meta_file = pcap.parent.parent / "metadata" / f"rtpengine-meta-{pcap.stem}.txt"
        meta_file.unlink(missing_ok=True)
    return result


def _source_ip(host: str) -> str | None:
    """The address rtpengine's DTMF log must come from: its ng host when that is one
    IP address (not a wildcard, not a name that may resolve to several), else None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


def _prompt_info(prompt: Path) -> tuple[Path, float]:
    """Blocking: the absolute path rtpengine gets (its cwd is not ours) and the length."""
    path = prompt.resolve()
    return path, wav_seconds(path)


def _add_flag(msg: dict[str, Any], flag: str) -> None:
    """Add one entry to the ng `flags` list (a copy: `self.flags` may hold the list)."""
    flags = list(msg.get("flags", []))
    if flag not in flags:
        flags.append(flag)
    msg["flags"] = flags


def _map_error(e: NgError) -> Exception:
    """rtpengine's reasons to the errors the B2BUA already knows."""
    reason = e.reason.lower()
    if "port" in reason and ("ran out" in reason or "allocat" in reason):
        return PortsExhausted(e.reason)
    if "sdp" in reason or "parse" in reason:
        err = SdpError(e.reason)
        return err
    return e


def _leg_stats(query: Mapping[bytes, Value], tag: str) -> LegStats:
    """One side's LegStats from a `query` reply: tag -> medias[0] -> streams (RTP, RTCP)."""
    tags = query.get(b"tags")
    mono = tags.get(tag.encode()) if isinstance(tags, dict) else None
    medias = mono.get(b"medias") if isinstance(mono, dict) else None
    if not isinstance(medias, list) or not medias or not isinstance(medias[0], dict):
        return _EMPTY
    streams = medias[0].get(b"streams")
    if not isinstance(streams, list):
        return _EMPTY
    rtp = rtcp = None
    for s in streams:
        if isinstance(s, dict):
            flags = s.get(b"flags")
            is_rtcp = isinstance(flags, list) and b"RTCP" in flags
            if is_rtcp and rtcp is None:
                rtcp = s
            elif not is_rtcp and rtp is None:
                rtp = s
    packets, nbytes, errors = _counters(rtp)
    rpackets, _, rerrors = _counters(rtcp)
    last_rx = rtp.get(b"last packet") if rtp else None
    latched = None
    if rtp is not None and isinstance(rtp.get(b"endpoint"), dict) and packets:
        ep = cast(dict[bytes, Value], rtp[b"endpoint"])
        latched = (text(ep.get(b"address")), ep.get(b"port"))
    return LegStats(packets, nbytes, errors, rpackets, rerrors,
                    float(last_rx) if isinstance(last_rx, int) and packets else None, latched)


def _counters(stream: Mapping[bytes, Value] | None) -> tuple[int, int, int]:
    stats = stream.get(b"stats") if stream else None
    if not isinstance(stats, dict):
        return 0, 0, 0
    values = [stats.get(k) for k in (b"packets", b"bytes", b"errors")]
    p, b, e = (v if isinstance(v, int) else 0 for v in values)
    return p, b, e


def _state(call: MediaCall) -> _CallState:
    state = call.state
    if not isinstance(state, _CallState):
        raise TypeError(f"call {call.call_id} was not allocated by RtpengineBackend")
    return state


# --- running the daemon (tests, benchmarks, a single-host deployment) ---


async def open_backend(ctx: BackendContext) -> RtpengineBackend:
    """`[media] backend = "rtpengine"` (relay.media.registry): the daemon at `[media]
    rtpengine`, its stats refreshed every `ctx.poll` seconds for the media timeout."""
    media = ctx.media
    host, _, port = media.rtpengine.rpartition(":")
    dtmf_addr = None
    if media.rtpengine_dtmf:
        dhost, _, dport = str(media.rtpengine_dtmf).rpartition(":")
        dtmf_addr = (dhost.strip("[]"), int(dport))
    else:
        # Each AXE call would only say so when it asks for digits, and end
        # no_extension: rtpengine holds the caller's RFC 4733 digits back unheard.
        log.warning("[media] rtpengine_dtmf is not set: AXE callers' RFC 4733 digits "
                    "will not be heard (SIP INFO only); set it and start rtpengine "
                    "with --dtmf-log-dest at that address")
    engine = RtpengineBackend((host, int(port)), recordings_dir=Path(ctx.config.recordings),
                              dtmf_addr=dtmf_addr, manifest_key=ctx.manifest_key)
    await engine.start(poll_interval=ctx.poll)
    return engine
