"""Numbers, the binding model and its lifecycle table."""

from __future__ import annotations

import pytest

from dialplan.numbers import InvalidNumber, mask, normalise
from relay.bindings.model import Binding, IllegalTransition, Mode, State, transition


@pytest.mark.parametrize(("raw", "cc", "want"), [
    ("+8613800000001", "", "+8613800000001"),
    ("008613800000001", "", "+8613800000001"),
    ("13800000001", "86", "+8613800000001"),
    ("0571 8888 1234", "86", "+8657188881234"),
    ("+1 (415) 555-0100", "", "+14155550100"),
])
def test_normalise_accepts(raw: str, cc: str, want: str) -> None:
    assert normalise(raw, cc) == want


@pytest.mark.parametrize("raw", ["", "+", "+0123456", "13800000001", "+86138abc0001",
                                 "+1234567890123456", "+86 138;00000001", "tel:+8613800000001"])
def test_normalise_refuses(raw: str) -> None:
    with pytest.raises(InvalidNumber) as exc:
        normalise(raw)
    assert "13800000001" not in str(exc.value)  # errors never echo a whole number


def test_mask_hides_the_middle() -> None:
    assert mask("+8613800000001") == "+86138****0001"
    assert mask("+14155550100") == "+14155****0100"
    assert mask(None) is None


def test_lifecycle_table() -> None:
    assert transition(State.ACTIVE, "freeze") is State.FROZEN
    assert transition(State.FROZEN, "release") is State.RELEASED
    assert transition(State.ACTIVE, "expire") is State.FROZEN
    with pytest.raises(IllegalTransition, match="cannot update a binding that is frozen"):
        transition(State.FROZEN, "update")
    with pytest.raises(IllegalTransition, match="released"):
        transition(State.RELEASED, "freeze")


def test_pack_round_trip_and_expiry() -> None:
    b = Binding(id="00000000000000ff", mode=Mode.AXE, x="+8617000000001", b="+8613900000001",
                ext="0042", expires_at=1000.0, out_id="ord-1", version=3)
    assert Binding.unpack(b.pack()) == b
    assert b.effective_state(999.0) is State.ACTIVE
    assert b.effective_state(1000.0) is State.FROZEN
