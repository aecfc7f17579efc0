"""Make the shipped prompt WAVs: `python -m relay.media.prompts.make [--out DIR]`.

Spoken prompts come from espeak-ng (English `en`, Mandarin `cmn`), resampled with sox
to 8 kHz mono 16-bit PCM and lightly trimmed; tones are computed here. The results
are committed, so the relay itself never needs espeak-ng or sox. Needs both tools
(Debian: `apt-get install espeak-ng sox`).
"""

from __future__ import annotations

import argparse
import array
import logging
import math
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

from relay.media.prompts import NAMES, SHIPPED

__all__ = ["TEXTS", "make_ringback", "make_spoken"]

log = logging.getLogger(__name__)

RATE = 8000
#: espeak-ng words per minute: its Mandarin is slow at the default.
SPEED = {"en": 150, "cmn": 185}
#: What each spoken prompt says, per language (espeak-ng voice name as key).
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "enter_extension": "Please enter the extension, then press hash.",
        "not_found": "That extension was not found. Please try again.",
        "goodbye": "Goodbye.",
        "not_in_service": "The number you have dialled is not in service.",
        "number_frozen": "This number is no longer in use.",
    },
    "cmn": {
        "enter_extension": "请输入分机号，以井号键结束。",  # noqa: RUF001 (Chinese punctuation)
        "not_found": "您输入的分机号不存在，请重新输入。",  # noqa: RUF001
        "goodbye": "再见。",
        "not_in_service": "您拨打的号码是空号。",
        "number_frozen": "该号码已停止使用。",
    },
}


def _write(path: Path, samples: array.array[int]) -> None:
    if sys.byteorder == "big":
        samples = array.array("h", samples)
        samples.byteswap()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())


def make_ringback(path: Path) -> None:
    """One cadence of ringback (the Chinese and ITU-T E.180 tone): 450 Hz, 1 s on, 4 s off.

    Played with repeat=True, it rings on for as long as the callee does. The burst
    starts and stops at a zero crossing with a 5 ms ramp, so the loop does not click.
    """
    on, off, ramp = RATE, 4 * RATE, 40
    w = 2 * math.pi * 450 / RATE
    samples = array.array("h", bytes(2 * (on + off)))
    for i in range(on):
        gain = min(1.0, i / ramp, (on - 1 - i) / ramp)
        samples[i] = int(8000 * gain * math.sin(w * i))
    _write(path, samples)


def make_spoken(path: Path, text: str, voice: str) -> None:
    """Speak `text` with espeak-ng and convert it to 8 kHz mono 16-bit PCM with sox."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        speed = str(SPEED.get(voice, 150))
        subprocess.run(["espeak-ng", "-v", voice, "-s", speed, "-w", str(raw), text],
                       check=True, capture_output=True)
        # Trim leading and trailing silence, band-limit for the phone, leave headroom.
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(path), "silence", "1", "0.02", "0.5%",
                        "reverse", "silence", "1", "0.02", "0.5%", "reverse",
                        "highpass", "300", "lowpass", "3400", "gain", "-n", "-3",
                        "pad", "0.1", "0.2"],
                       check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """Write every prompt of every language into `--out` (default: the shipped sets)."""
    ap = argparse.ArgumentParser(prog="relay.media.prompts.make", description=__doc__)
    ap.add_argument("--out", type=Path, default=SHIPPED)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            log.error("%s is not installed (apt-get install espeak-ng sox)", tool)
            return 1
    for language, texts in TEXTS.items():
        folder = a.out / language
        folder.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            path = folder / f"{name}.wav"
            if name == "ringback":
                make_ringback(path)
            else:
                make_spoken(path, texts[name], language)
            log.info("%s: %d bytes", path, path.stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
