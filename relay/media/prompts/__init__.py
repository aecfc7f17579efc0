"""The relay's prompts: shipped WAV files per language, replaceable from config.

Each prompt is `<directory>/<name>.wav`, 8 kHz mono 16-bit PCM. The shipped sets live
next to this file (`en`, `cmn`) and are made by `python -m relay.media.prompts.make`.
A configured directory overrides the shipped set of its language prompt by prompt; a
prompt missing from both falls back to the shipped English one. `PromptSet.check()`
is meant for start-up, so a missing or malformed file stops the relay there and never
surprises a caller mid-call.
"""

from __future__ import annotations

import wave
from pathlib import Path

__all__ = ["NAMES", "SHIPPED", "PromptError", "PromptSet"]

#: Where the shipped prompt sets are.
SHIPPED = Path(__file__).resolve().parent
#: Every prompt the call controller may ask for.
NAMES = ("enter_extension", "not_found", "goodbye", "not_in_service", "number_frozen",
         "ringback")
FALLBACK_LANGUAGE = "en"


class PromptError(Exception):
    """A local (configuration) error: a prompt is missing or not 8 kHz mono 16-bit PCM."""


class PromptSet:
    """The prompt files of one language."""

    def __init__(self, language: str, directory: Path | None = None) -> None:
        """`directory` (from config) is searched first, then the shipped `language`
        set, then the shipped English set."""
        self.language = language
        self.directory = directory

    def candidates(self, name: str) -> list[Path]:
        """The places `name` is looked for, in order."""
        file = f"{name}.wav"
        places = [] if self.directory is None else [self.directory / file]
        places.append(SHIPPED / self.language / file)
        if self.language != FALLBACK_LANGUAGE:
            places.append(SHIPPED / FALLBACK_LANGUAGE / file)
        return places

    def path(self, name: str) -> Path:
        """The WAV file to play for `name`; `PromptError` when there is none."""
        if "/" in name or "\\" in name or name.startswith("."):
            raise PromptError(f"bad prompt name {name!r}")
        for place in self.candidates(name):
            if place.is_file():
                return place
        tried = ", ".join(str(p) for p in self.candidates(name))
        raise PromptError(f"prompt {name!r} ({self.language}) not found; tried {tried}")

    def check(self, names: tuple[str, ...] = NAMES) -> dict[str, Path]:
        """Resolve and validate every prompt (at start-up); raise `PromptError` on the
        first that is missing or not 8 kHz mono 16-bit PCM."""
        found = {}
        for name in names:
            path = self.path(name)
            check_wav(path)
            found[name] = path
        return found


def check_wav(path: Path) -> int:
    """The number of frames in `path`; `PromptError` unless it is 8 kHz mono 16-bit PCM."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                raise PromptError(
                    f"{path}: {w.getframerate()} Hz, {w.getnchannels()} channel(s), "
                    f"{8 * w.getsampwidth()}-bit; prompts must be 8000 Hz mono 16-bit PCM")
            return w.getnframes()
    except (OSError, EOFError, wave.Error) as e:
        raise PromptError(f"{path}: not a readable WAV file ({e})") from e
