"""The shipped prompts and their lookup (relay/media/prompts)."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import pytest

from relay.media.prompts import NAMES, SHIPPED, PromptError, PromptSet


def write_wav(path: Path, rate: int = 8000, channels: int = 1, frames: int = 800) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * channels * frames))
    return path


@pytest.mark.parametrize("language", ["en", "cmn"])
def test_every_shipped_prompt_is_there_short_and_8khz_mono(language: str) -> None:
    found = PromptSet(language).check()
    assert set(found) == set(NAMES)
    for name, path in found.items():
        assert path == SHIPPED / language / f"{name}.wav"
        with wave.open(str(path), "rb") as w:
            assert 0.5 < w.getnframes() / 8000 <= 8.0, name


def test_ringback_is_one_cadence_450hz_1s_on_4s_off() -> None:
    with wave.open(str(PromptSet("en").path("ringback")), "rb") as w:
        data = w.readframes(w.getnframes())
    samples = memoryview(data).cast("h")
    assert len(samples) == 5 * 8000
    assert max(abs(s) for s in samples[:8000]) > 4000
    assert not any(samples[8000:])
    crossings = sum(1 for a, b in itertools.pairwise(samples[:8000]) if a < 0 <= b)
    assert 445 <= crossings <= 455


def test_a_configured_directory_overrides_prompt_by_prompt(tmp_path: Path) -> None:
    mine = write_wav(tmp_path / "goodbye.wav")
    prompts = PromptSet("cmn", tmp_path)
    assert prompts.path("goodbye") == mine
    assert prompts.path("not_found") == SHIPPED / "cmn" / "not_found.wav"
    prompts.check()


def test_a_missing_prompt_falls_back_to_english_then_fails_at_check(tmp_path: Path) -> None:
    prompts = PromptSet("xx", tmp_path)
    assert prompts.path("goodbye") == SHIPPED / "en" / "goodbye.wav"
    with pytest.raises(PromptError, match=r"prompt 'welcome' \(xx\) not found; tried "):
        prompts.check(("goodbye", "welcome"))
    with pytest.raises(PromptError, match="bad prompt name"):
        prompts.path("../en/goodbye")


def test_check_refuses_a_prompt_in_the_wrong_format(tmp_path: Path) -> None:
    write_wav(tmp_path / "goodbye.wav", rate=16000)
    with pytest.raises(PromptError, match=r"16000 Hz, 1 channel\(s\), 16-bit; prompts must be"):
        PromptSet("en", tmp_path).check()
    (tmp_path / "goodbye.wav").write_bytes(b"RIFF junk")
    with pytest.raises(PromptError, match="not a readable WAV file"):
        PromptSet("en", tmp_path).check()
