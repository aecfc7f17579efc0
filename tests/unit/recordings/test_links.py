"""Signed recording links: the pure signer (rotation, tampering, expiry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recordings.links import LinkSigner, LinkVerdict, load_or_create_key

OLD, NEW = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"


def test_sign_verify_rotate_and_expire() -> None:
    old = LinkSigner((OLD,))
    sig = old.sign("c1", "mix", 1000)
    assert old.verify("c1", "mix", "1000", sig, 999.0) is LinkVerdict.VALID
    assert old.verify("c1", "mix", "1000", sig, 1000.0) is LinkVerdict.EXPIRED
    rotated = LinkSigner((NEW, OLD))  # a link signed before the rotation still plays
    assert rotated.verify("c1", "mix", "1000", sig, 999.0) is LinkVerdict.VALID
    assert rotated.sign("c1", "mix", 1000) != sig
    assert LinkSigner((NEW,)).verify("c1", "mix", "1000", sig, 0) is LinkVerdict.TAMPERED


@pytest.mark.parametrize(("call_id", "leg", "expires", "flip"), [
    ("c2", "mix", "1000", False), ("c1", "caller", "1000", False),
    ("c1", "mix", "1001", False), ("c1", "mix", "1000", True),
])
def test_any_change_is_tampered(call_id: str, leg: str, expires: str, flip: bool) -> None:
    s = LinkSigner((OLD,))
    sig = s.sign("c1", "mix", 1000)
    if flip:
        sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    assert s.verify(call_id, leg, expires, sig, 0.0) is LinkVerdict.TAMPERED


@pytest.mark.parametrize(("expires", "sig"), [
    ("", "a" * 64), ("-5", "a" * 64), ("1e9", "a" * 64), ("1000", "abc"), ("9" * 13, "a" * 64),
])
def test_malformed(expires: str, sig: str) -> None:
    assert LinkSigner((OLD,)).verify("c1", "mix", expires, sig, 0.0) is LinkVerdict.MALFORMED


def test_short_keys_refused_and_key_file_made_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LinkSigner((b"short",))
    with pytest.raises(ValueError):
        LinkSigner(())
    key = load_or_create_key(tmp_path)
    assert len(key) == 32 and load_or_create_key(tmp_path) == key
    assert (tmp_path / ".link_key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".link_key"]


def test_recordings_section_is_checked(tmp_path: Path) -> None:
    from relay.config import Config, ConfigError
    from relay.recordings_config import recordings_settings
    from relay.settings import load_sections

    def settings(section: dict[str, object]) -> object:
        return recordings_settings(Config(recordings=str(tmp_path),
                                          sections=load_sections({"recordings": section})))

    good = settings({"link_keys": ["a" * 16, "b" * 20], "retention_days": 30})
    assert good.retention_days == 30.0  # type: ignore[attr-defined]
    for bad in ({"retention_day": 30}, {"link_keys": "a" * 16}, {"link_keys": ["short"]},
                {"retention_days": -1}, {"link_base": "ftp://x"}, {"retention_days": True}):
        with pytest.raises(ConfigError):
            settings(bad)
