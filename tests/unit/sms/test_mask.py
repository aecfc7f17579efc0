"""Phone numbers in SMPP log lines are masked with the one shared helper,
dialplan.numbers.mask (country code and prefix, then the last 4)."""

from __future__ import annotations

import pytest

import relay.io.smpp_client
import relay.io.smpp_server
from dialplan.numbers import mask


@pytest.mark.parametrize(("number", "masked"), [
    ("+8613800000001", "+86138****0001"),
    ("+14155550123", "+14155****0123"),
])
def test_mask(number: str, masked: str) -> None:
    assert mask(number) == masked


def test_smpp_adapters_use_the_shared_helper() -> None:
    assert relay.io.smpp_server.mask is mask
    assert relay.io.smpp_client.mask is mask
    assert not hasattr(relay.io.smpp_server, "mask_number")
