"""The in-memory table: lookups by (X, caller) and (X, ext), versions, removal."""

from __future__ import annotations

from dialplan.route import Bridge, Refuse, decide
from relay.bindings.model import Binding, Mode, State
from relay.bindings.table import BindingTable

X = "+8617000000001"
A, B, C = "+8613800000001", "+8613900000001", "+8613700000001"


def axb(id_: str = "0000000000000001", version: int = 1, **kw: object) -> Binding:
    base = dict(id=id_, mode=Mode.AXB, x=X, a=A, b=B, version=version)
    base.update(kw)
    return Binding(**base)  # type: ignore[arg-type]


def test_axb_routes_both_ways_and_refuses_strangers() -> None:
    t = BindingTable()
    t.apply(axb())
    d = decide(t.lookup(X, A), t.in_use(X), A, 0.0)
    assert d == Bridge(to=B, binding="0000000000000001", direction="a_to_b")
    d = decide(t.lookup(X, B), t.in_use(X), B, 0.0)
    assert d == Bridge(to=A, binding="0000000000000001", direction="b_to_a")
    assert decide(t.lookup(X, C), t.in_use(X), C, 0.0) == Refuse(403, "stranger", 21)
    other = "+8617000000009"
    assert decide(t.lookup(other, A), t.in_use(other), A, 0.0) == Refuse(404, "no_binding", 1)


def test_axb_reuse_one_x_many_pairs() -> None:
    t = BindingTable()
    t.apply(axb("0000000000000001"))
    t.apply(axb("0000000000000002", a=C, b="+8613600000001"))
    assert t.lookup(X, A).id == "0000000000000001"  # type: ignore[union-attr]
    assert t.lookup(X, C).id == "0000000000000002"  # type: ignore[union-attr]
    assert t.usage(X) == (Mode.AXB, 2)


def test_frozen_and_expired_refuse_with_410() -> None:
    t = BindingTable()
    t.apply(axb(expires_at=100.0))
    assert decide(t.lookup(X, A), True, A, 99.0).action == "bridge"
    d = decide(t.lookup(X, A), True, A, 100.0)  # expired between sweeps: never routes
    assert isinstance(d, Refuse) and (d.code, d.reason) == (410, "expired")
    t.apply(axb(version=2, state=State.FROZEN))
    d = decide(t.lookup(X, A), True, A, 0.0)
    assert isinstance(d, Refuse) and (d.code, d.reason) == (410, "frozen")


def test_versions_make_replays_idempotent() -> None:
    t = BindingTable()
    t.apply(axb(version=2, state=State.FROZEN))
    assert t.apply(axb(version=1)) is False  # an older change arriving late is ignored
    assert t.lookup(X, A).state is State.FROZEN  # type: ignore[union-attr]


def test_changing_b_moves_the_pair_key() -> None:
    t = BindingTable()
    t.apply(axb())
    t.apply(axb(version=2, b=C))
    assert t.lookup(X, B) is None
    assert t.lookup(X, C).b == C  # type: ignore[union-attr]
    assert len(t) == 1


def test_release_removes_and_frees_the_number() -> None:
    t = BindingTable()
    t.apply(axb())
    t.apply(axb(version=2, state=State.RELEASED), quarantine_until=50.0)
    assert t.lookup(X, A) is None and not t.in_use(X) and len(t) == 0
    assert t.quarantine[int(X[1:])] == 50.0


def test_axn_and_axe() -> None:
    t = BindingTable()
    t.apply(Binding(id="000000000000000a", mode=Mode.AXN, x=X, a=A, b=B))
    assert decide(t.lookup(X, C), True, C, 0.0) == Bridge(B, "000000000000000a", "a_to_b")
    assert decide(t.lookup(X, B), True, B, 0.0) == Bridge(A, "000000000000000a", "b_to_a")
    x2 = "+8617000000002"
    t.apply(Binding(id="000000000000000b", mode=Mode.AXE, x=x2, b=B, ext="007"))
    assert decide(t.lookup(x2, C, "007"), True, C, 0.0) == Bridge(B, "000000000000000b", "a_to_b")
    assert t.lookup(x2, C, "7") is None  # leading zeros are significant
    assert t.lookup(x2, C) is None


def test_disabled_voice_refuses_calls_but_not_sms() -> None:
    t = BindingTable()
    t.apply(axb(voice=False))
    assert decide(t.lookup(X, A), True, A, 0.0).action == "refuse"
    assert decide(t.lookup(X, A), True, A, 0.0, "sms").action == "bridge"


def test_replayed_news_of_an_older_binding_never_displaces_a_newer_one() -> None:
    """After a reload, old changes are replayed over a newer state (snapshot first)."""
    t = BindingTable()
    newer = axb(f"{2:016x}", created_at=200.0, b=C)  # took (X, A) after the old one left
    t.apply(newer)
    assert t.apply(axb(f"{1:016x}", created_at=100.0)) is False  # old binding, live news
    t.apply(axb(f"{1:016x}", version=2, created_at=100.0, state=State.RELEASED))
    assert t.lookup(X, A).id == f"{2:016x}"  # type: ignore[union-attr]
    assert t.lookup(X, C).id == f"{2:016x}"  # type: ignore[union-attr]
    assert len(t) == 1


def test_a_new_binding_on_a_b_key_survives_the_old_ones_release() -> None:
    t = BindingTable()
    t.apply(axb(f"{1:016x}", created_at=100.0))  # (X, A, B)
    t.apply(axb(f"{2:016x}", created_at=200.0, a=C))  # (X, C, B): B's key moves to it
    t.apply(axb(f"{1:016x}", version=2, created_at=100.0, state=State.RELEASED))
    assert t.lookup(X, B).id == f"{2:016x}"  # type: ignore[union-attr]
    assert t.lookup(X, A) is None and len(t) == 1
