"""Implementations chosen by name (STYLE.md): every name the settings accept has an
implementation behind it, and an unknown name is refused with the allowed ones."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from relay.media import registry
from relay.settings import MediaSection, SmsSection
from relay.sms.routes import ROUTES


def test_every_sms_route_the_settings_accept_has_an_implementation() -> None:
    from relay.io.sms_service import _ROUTES

    assert tuple(_ROUTES) == ROUTES
    field = SmsSection.__dataclass_fields__["route"]
    assert field.metadata["choices"] == ROUTES


def test_every_media_backend_name_resolves_to_a_factory() -> None:
    assert MediaSection.__dataclass_fields__["backend"].metadata["choices"] == registry.NAMES
    for name in registry.NAMES:
        module, _, factory = registry._BACKENDS[name].partition(":")
        assert callable(getattr(importlib.import_module(module), factory)), name


async def test_an_unknown_media_backend_is_refused_with_the_names() -> None:
    ctx: Any = None  # never reached: the name is checked first
    with pytest.raises(ValueError, match="inprocess, rtpengine, not 'bogus'"):
        await registry.open_backend("bogus", ctx)
