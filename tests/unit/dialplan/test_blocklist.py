"""dialplan.blocklist and `blocked` in dialplan.route.decide."""

from __future__ import annotations

import pytest
from test_policy import A, B, Entry

from dialplan.blocklist import Block, Blocklist, parse_block
from dialplan.route import Bridge, Refuse, decide

X1, X2 = "+8617000000003", "+8617000000004"


def test_parse_block() -> None:
    b = parse_block(A, {"reason": " spam "}, None, 100.0)
    assert b == Block(A, "spam", None, None, 100.0)
    assert parse_block(A, {"reason": "r", "until": "2030-01-01T00:00:00Z"}, X1, 0.0).until \
        == 1893456000.0
    for body in ({}, {"reason": ""}, {"reason": "r", "until": 50}, {"reason": "r", "y": 1},
                 {"reason": "r", "until": "2030-01-01T00:00:00"}, {"reason": "r", "until": True},
                 {"reason": "x" * 201}, []):
        with pytest.raises(ValueError):
            parse_block(A, body, None, 100.0)


def test_match_global_per_x_and_until() -> None:
    bl = Blocklist([Block(A, "spam", None, until=200.0), Block(B, "ex", X1)])
    assert bl.match(A, X1, 100.0) and bl.match(A, X2, 199.9)
    assert bl.match(A, X1, 200.0) is None  # until passed
    assert bl.match(B, X1, 0.0) and bl.match(B, X2, 0.0) is None
    assert bl.match(None, X1, 0.0) is None and len(bl) == 2
    assert [b.number for b in bl.entries()] == sorted([A, B])


def test_decide_blocked_is_603_only_where_the_call_would_route() -> None:
    assert decide(Entry(), True, A, 0.0, blocked=True) == Refuse(603, "blocked", 21, "b1")
    assert isinstance(decide(Entry(), True, A, 0.0), Bridge)
    assert decide(None, False, A, 0.0, blocked=True).reason == "no_binding"
    assert decide(Entry(), True, "+8613700000000", 0.0, blocked=True).reason == "stranger"
