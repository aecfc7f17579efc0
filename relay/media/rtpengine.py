"""`MediaBackend` over rtpengine's ng control protocol (for scale: rtpengine relays).

The ng protocol (rtpengine's docs, "ng control protocol"): one UDP datagram per
request, `<cookie> <bencoded dict>`; the reply carries the same cookie. UDP loses
datagrams, so a request is resent with the *same* cookie after `timeout`:
rtpengine keeps a cookie cache and answers a resent request from it instead of
running the command twice (an offer run twice would allocate twice).

Commands used: `ping`, `offer`, `answer`, `delete`, `query`. Sides map onto ng tags:
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from recordings.finish import RecordingResult, call_dir, finish_pending
from recordings.pcap import finish_from_pcap
from recordings.spool import CallMeta, SpoolError
from relay.media.backend import MediaCall, MediaStats
from relay.media.bencode import BencodeError, Value, decode_ng, encode_ng
from relay.rtp.ports import PortsExhausted
from relay.rtp.session import Address, LegStats, Side
from relay.sdp import RelayOrigin, SdpError, SessionDescription, remote_media, rewrite_for_peer

__all__ = ["NgClient", "NgError", "NgTimeout", "RtpengineBackend", "RtpengineDaemon"]

log = logging.getLogger(__name__)
_TAGS = {Side.CALLER: "caller", Side.CALLEE: "callee"}
_EMPTY = LegStats(0, 0, 0, 0, 0, None, None)


class NgError(Exception):
    """rtpengine answered `result: error` (or garbage). `status` is a SIP hint (500)."""

    status = 500

    def __init__(self, command: str, reason: str) -> None:
        """`reason` is rtpengine's `error-reason`."""
        super().__init__(f"rtpengine {command}: {reason}")
        self.command = command
        self.reason = reason


class NgTimeout(NgError):
    """No reply after every retry: rtpengine is down or unreachable (SIP hint 503)."""

    status = 503


# --- the ng transport: one socket, futures keyed by cookie ---


class NgClient(asyncio.DatagramProtocol):
    """Sends ng requests to one rtpengine and matches replies by cookie."""

    def __init__(self, addr: tuple[str, int], *, timeout: float = 0.5,
                 retries: int = 3) -> None:
        """`timeout` per try; `retries` resends after the first try."""
        self.addr = addr
        self.timeout = timeout
        self.retries = retries
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[bytes, Value]]] = {}
        self._prefix = secrets.token_hex(4)
        self._counter = 0
        self.bad_replies = 0

    async def connect(self) -> None:
        """Open the UDP socket (connected, so only rtpengine's replies arrive)."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=self.addr)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Resolve the request this reply's cookie names; never raises (STYLE 6)."""
        try:
            cookie, body = decode_ng(data)
        except BencodeError:
            self.bad_replies += 1
            return
        fut = self._pending.get(cookie)
        if fut is not None and not fut.done():
            fut.set_result(body)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable: rtpengine is not there yet; the retry loop decides."""

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever is still waiting."""
        self.transport = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NgTimeout("request", "control socket closed"))

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()

    async def request(self, message: Mapping[str, Any]) -> dict[bytes, Value]:
        """Send `message` and return rtpengine's reply dict (`result` checked).

        Raises `NgTimeout` after `retries` resends, `NgError` on `result: error`.
        """
        if self.transport is None:
            raise NgTimeout(str(message.get("command")), "not connected")
        command = str(message.get("command"))
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}".encode()
        datagram = encode_ng(cookie, message)
        fut: asyncio.Future[dict[bytes, Value]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = fut
        try:
            for _ in range(1 + self.retries):
                if self.transport is None:
                    break
                self.transport.sendto(datagram)  # same cookie: rtpengine dedups it
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), self.timeout)
                    break
            if not fut.done():
                raise NgTimeout(command, f"no reply after {1 + self.retries} tries")
            reply = fut.result()
        finally:
            self._pending.pop(cookie, None)
            if not fut.done():
                fut.cancel()
        result = reply.get(b"result")
        if result == b"error":
            reason = reply.get(b"error-reason", b"unknown error")
            raise NgError(command, _text(reason))
        if result not in (b"ok", b"pong"):
            raise NgError(command, f"unexpected result {_text(result)!r}")
        return reply


def _text(value: Value | None) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- the backend ---


@dataclass(eq=False)
class _CallState:
    origins: dict[Side, RelayOrigin]
    offered_by: Side | None = None  # who sent the last offer (names from-tag)
    answered: bool = False
    codecs: dict[Side, str | None] = field(default_factory=dict)
    pcaps: list[str] = field(default_factory=list)
    query: dict[bytes, Value] = field(default_factory=dict)  # the last `query` reply
    negotiated_at: float = 0.0  # epoch seconds of the last offer/answer


class RtpengineBackend:
    """`MediaBackend` that hands the media to rtpengine. See the module docstring."""

    def __init__(self, ng_addr: tuple[str, int], *, recordings_dir: Path | None = None,
                 executor: Executor | None = None, timeout: float = 0.5, retries: int = 3,
                 flags: Mapping[str, Any] | None = None, keep_pcap: bool = False) -> None:
        """`ng_addr` is rtpengine's `--listen-ng`; `flags` are extra ng keys for offer/answer.

        `recordings_dir` is our recordings root (calls allocated with record=True
        need it); `executor` runs the pcap conversion (None: the default threads).
        """
        self.client = NgClient(ng_addr, timeout=timeout, retries=retries)
        self.recordings_dir = recordings_dir
        self.executor = executor
        self.flags = dict(flags or {})
        self.keep_pcap = keep_pcap
        self.calls: dict[str, MediaCall] = {}
        self.recording_errors = 0
        self._poller: asyncio.Task[None] | None = None

    async def start(self, poll_interval: float = 0.0) -> None:
        """Open the control socket; with `poll_interval` > 0 refresh stats that often."""
        if self.client.transport is None:
            await self.client.connect()
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
        return msg

    async def _negotiate(self, call: MediaCall, command: str, from_side: Side,
                         sdp: bytes) -> bytes:
        if call.released:
            raise RuntimeError(f"call {call.call_id}: media already released")
        state = _state(call)
        remote = remote_media(SessionDescription.parse(sdp))  # 400/488 before rtpengine
        if command == "offer":
            from_tag, to_tag = from_side, (from_side.other if state.answered else None)
        else:
            offerer = state.offered_by if state.offered_by is not None else from_side.other
            from_tag, to_tag = offerer, from_side
        try:
            reply = await self.client.request(
                self._message(call, command, from_tag, to_tag, sdp))
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
        out = rewrite_for_peer(parsed, relay_address=engine.address or "0.0.0.0",
                               relay_port=engine.rtp_port, origin=state.origins[to_side])
        if command == "offer":
            state.offered_by = from_side
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
        """ng `answer` with `from_side`'s SDP; returns the sanitised answer for the other."""
        return await self._negotiate(call, "answer", from_side, sdp)

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
                                              call, state, not self.keep_pcap)
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
                                          set(self.calls))

    async def close(self) -> None:
        """Release every live call, stop polling, close the control socket."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for call in list(self.calls.values()):
            await self.release(call)
        self.client.close()


def _finish(root: Path, call: MediaCall, state: _CallState, remove: bool) -> RecordingResult:
    """Blocking: pcap -> spools -> WAVs in our dated call folder."""
    legs = {_TAGS[side]: {"codec": state.codecs.get(side), "engine": "rtpengine"}
            for side in Side}
    meta = CallMeta(call.call_id, call.started_at, legs)
    ports = {port: _TAGS[side] for side, port in call.local_ports.items()}
    directory = call_dir(root, call.call_id, call.started_at)
    pcap = Path(state.pcaps[0])
    result = finish_from_pcap(pcap, directory, meta, ports, remove_pcap=remove)
    if remove:
        # rtpengine's metadata file beside the pcaps: <dir>/metadata/rtpengine-meta-<name>.txt
        meta_file = pcap.parent.parent / "metadata" / f"rtpengine-meta-{pcap.stem}.txt"
        meta_file.unlink(missing_ok=True)
    return result


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
        latched = (_text(ep.get(b"address")), ep.get(b"port"))
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


class RtpengineDaemon:
    """rtpengine in userspace (no kernel module) on loopback, in the foreground.

    Flags: `--table=-1` (no kernel forwarding table, so no module is needed),
    `--interface`, `--listen-ng`, `--port-min/--port-max`, `--foreground`,
    `--log-stderr`, and `--recording-dir` + `--recording-method=pcap`
    + `--recording-format=raw` when `recording_dir` is given.
    """

    def __init__(self, ng_port: int, port_range: tuple[int, int], *,
                 interface: str = "127.0.0.1", recording_dir: Path | None = None,
                 log_path: Path | None = None, threads: int = 2,
                 binary: str | None = None, extra: Sequence[str] = ()) -> None:
        """Build the command line; `start` runs it."""
        exe = binary or shutil.which("rtpengine")
        if exe is None:
            raise FileNotFoundError("rtpengine is not installed (Debian: rtpengine-daemon)")
        self.ng_addr = (interface, ng_port)
        self.port_range = port_range
        self.args = [
            exe, "--foreground", "--log-stderr", "--table=-1", f"--interface={interface}",
            f"--listen-ng={interface}:{ng_port}", f"--port-min={port_range[0]}",
            f"--port-max={port_range[1]}", f"--num-threads={threads}", "--delete-delay=0",
            "--log-level=5", *extra,
        ]
        if recording_dir is not None:
            self.args += [f"--recording-dir={recording_dir}", "--recording-method=pcap",
                          "--recording-format=raw"]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """True if the rtpengine binary is on PATH."""
        return shutil.which("rtpengine") is not None

    async def start(self, wait: float = 10.0) -> None:
        """Start rtpengine and wait until it answers ng `ping`."""
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            cast(Any, out).close()  # the child has its own descriptor
        client = NgClient(self.ng_addr, timeout=0.2, retries=0)
        await client.connect()
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rtpengine exited with {self.proc.returncode}")
                try:
                    await client.request({"command": "ping"})
                    return
                except NgError:
                    await asyncio.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError("rtpengine did not answer ping")

    def stop(self) -> None:
        """Terminate (SIGTERM) and reap; kill after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
