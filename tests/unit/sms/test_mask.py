"""Phone numbers in SMPP log lines are masked: country code and prefix, then the last 4."""

from __future__ import annotations

import pytest

from relay.io.smpp_server import mask_number


@pytest.mark.parametrize(("number", "masked"), [
    ("+8613800000001", "+86138****0001"),
    ("8613800000001", "86138****0001"),
    ("+14155550123", "+14155****0123"),
    ("10086", "*0086"),
    ("", ""),
])
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked

