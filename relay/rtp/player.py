"""The relay's own RTP stream toward one side: prompts, and relayed audio after them.

Sans-IO. Three small objects:

- `Player` cuts a prompt's G.711 payload into 20 ms frames (160 bytes), once or
  looping (tones such as ringback).
- `OutboundStream` is the one RTP stream the relay sends toward a side once it has
  played into it (RFC 3550 §5.1, §8: one SSRC, a sequence number that never jumps
  back, one timestamp clock). Prompt frames get the stream's next numbers; packets
  relayed from the other side are translated into it by offsets fixed at the start
  of each talk spurt, so their own loss and reordering show through unchanged. The
  first packet of each spurt has the marker bit (RFC 3551 §4.1).
- `Pacer` is the 20 ms schedule one shared timer keeps for every player.

Sides never played into keep the zero-copy relay of `RelaySession.receive`.
"""

from __future__ import annotations

import struct

from relay.rtp.packet import RTP_HEADER_SIZE, is_rtcp, seq_diff, ts_diff

__all__ = ["FRAME_BYTES", "FRAME_SECONDS", "SILENCE", "OutboundStream", "Pacer", "Player"]

#: 20 ms of G.711 at 8 kHz (RFC 3551 §4.5.14: one octet per sample; §4.2: 20 ms default).
FRAME_BYTES = 160
FRAME_SECONDS = 0.02
CLOCK_RATE = 8000
#: The G.711 code of a zero sample: µ-law 0xFF, A-law 0xD5 (payload types 0 and 8).
SILENCE = {0: 0xFF, 8: 0xD5}
_SEQ_TS_SSRC = struct.Struct("!HII")


class Player:
    """Frames of one prompt: `next_frame()` until None (never None with `repeat`)."""

    __slots__ = ("_audio", "_pos", "repeat")

    def __init__(self, audio: bytes, payload_type: int, *, repeat: bool = False) -> None:
        """`audio` is the whole G.711 payload; the last frame is padded with silence."""
        tail = len(audio) % FRAME_BYTES
        if tail:
            audio += bytes([SILENCE[payload_type]]) * (FRAME_BYTES - tail)
        if not audio:
            audio = bytes([SILENCE[payload_type]]) * FRAME_BYTES  # an empty prompt: one frame
        self._audio = audio
        self._pos = 0
        self.repeat = repeat

    def next_frame(self) -> bytes | None:
        """The next 160 bytes, or None when a prompt without `repeat` has run out."""
        if self._pos >= len(self._audio):
            if not self.repeat:
                return None
            self._pos = 0
        start = self._pos
        self._pos = start + FRAME_BYTES
        return self._audio[start:self._pos]

    @property
    def done(self) -> bool:
        """True once every frame has been taken (never with `repeat`)."""
        return not self.repeat and self._pos >= len(self._audio)


class OutboundStream:
    """The relay's RTP stream toward one side. See the module docstring.

    `ssrc`, `seq` and `timestamp` are the random starting values RFC 3550 §5.1 asks
    for (the caller draws them: this module has no randomness of its own).
    """

    __slots__ = ("_last_at", "_last_seq", "_last_ts", "_relay_ssrc", "_seq_offset",
                 "_spurt_pending", "_spurt_seq", "_ts_offset", "playing", "relayed", "skipped",
                 "ssrc")

    def __init__(self, ssrc: int, seq: int, timestamp: int, now: float) -> None:
        """A stream that has sent nothing yet; its clock starts at `timestamp` at `now`."""
        self.ssrc = ssrc & 0xFFFFFFFF
        self._last_seq = (seq - 1) & 0xFFFF  # the highest sequence number sent so far
        self._last_ts = (timestamp - FRAME_BYTES) & 0xFFFFFFFF
        self._last_at = now - FRAME_SECONDS
        self._relay_ssrc: int | None = None  # whose packets the offsets translate
        self._seq_offset = 0
        self._ts_offset = 0
        self._spurt_seq = 0  # the first sequence number of the relayed spurt
        self._spurt_pending = False  # the next prompt frame opens a talk spurt
        self.playing = False
        self.relayed = 0  # packets of the other side sent on, rewritten
        self.skipped = 0  # packets of the other side not sent (a prompt, too old, bad)

    def _spurt_timestamp(self, now: float) -> int:
        """The first timestamp of a new talk spurt: the clock ran on through the silence
        (RFC 3550 §5.1: timestamps follow the sampling clock, also when nothing is sent)."""
        gap = max(FRAME_BYTES, round((now - self._last_at) * CLOCK_RATE))
        return (self._last_ts + gap) & 0xFFFFFFFF

    def start_prompt(self) -> None:
        """A prompt starts: its first frame opens a talk spurt, relaying pauses."""
        self.playing = True
        self._relay_ssrc = None  # the next relayed packet after it opens a spurt too
        self._spurt_pending = True

    def stop_prompt(self) -> None:
        """The prompt ended or was stopped: relayed packets flow again (a new spurt)."""
        self.playing = False
        self._relay_ssrc = None

    def frame(self, payload_type: int, payload: bytes, now: float) -> bytes:
        """The next prompt packet carrying `payload` (20 ms), ready to send."""
        marker = self._spurt_pending
        if marker:
            self._spurt_pending = False
            ts = self._spurt_timestamp(now)
        else:
            ts = (self._last_ts + FRAME_BYTES) & 0xFFFFFFFF
        seq = (self._last_seq + 1) & 0xFFFF
        self._last_seq, self._last_ts, self._last_at = seq, ts, now
        return (bytes((0x80, payload_type | (0x80 if marker else 0)))
                + _SEQ_TS_SSRC.pack(seq, ts, self.ssrc) + payload)

    def relay(self, data: bytes, now: float) -> bytes | None:
        """A packet from the other side, rewritten into this stream; None to drop it.

        Dropped: anything while a prompt plays (the listener hears only the prompt),
        packets older than the current spurt's first (they would step back into a
        prompt's numbers), and datagrams that are not RTP (too short, not version 2,
        or RTCP multiplexed on the RTP port, RFC 5761 §4: not ours to renumber).
        """
        if (self.playing or len(data) < RTP_HEADER_SIZE or data[0] >> 6 != 2
                or is_rtcp(data)):
            self.skipped += 1
            return None
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        second = data[1]
        if ssrc != self._relay_ssrc:
            # A talk spurt starts (after a prompt, or the source changed): fix the
            # offsets so this packet follows the stream's last one, marker set.
            self._relay_ssrc = ssrc
            self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
            self._ts_offset = (self._spurt_timestamp(now) - ts) & 0xFFFFFFFF
            self._spurt_seq = (self._last_seq + 1) & 0xFFFF
            second |= 0x80
        out_seq = (seq + self._seq_offset) & 0xFFFF
        if seq_diff(out_seq, self._spurt_seq) < 0:
            self.skipped += 1
            return None
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        if seq_diff(out_seq, self._last_seq) > 0:
            self._last_seq = out_seq
        if ts_diff(out_ts, self._last_ts) > 0:
            self._last_ts = out_ts
            self._last_at = now
        out = bytearray(data)
        out[1] = second
        _SEQ_TS_SSRC.pack_into(out, 2, out_seq, out_ts, self.ssrc)
        self.relayed += 1
        return bytes(out)


class Pacer:
    """The 20 ms schedule of the shared playout timer (absolute, so it does not drift).

    `due(now)` says how many frames each player owes: 1 on time, more when the loop
    was late (at most `max_burst`, after which the schedule restarts from `now`).
    """

    __slots__ = ("deadline", "max_burst")

    def __init__(self, now: float, *, max_burst: int = 5) -> None:
        """The first tick is due at `now`."""
        self.deadline = now
        self.max_burst = max_burst

    def due(self, now: float) -> int:
        """Frames due at `now` (0 if called early); advances `deadline` past `now`."""
        if now < self.deadline:
            return 0
        n = int((now - self.deadline) / FRAME_SECONDS) + 1
        if n > self.max_burst:
            self.deadline = now + FRAME_SECONDS
            return self.max_burst
        self.deadline += n * FRAME_SECONDS
        return n
