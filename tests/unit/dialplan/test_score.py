"""dialplan.score: the seed rules as data, both windows, night in a zone, the caps."""

from __future__ import annotations

from test_policy import A, Entry

from dialplan.policy import PolicyError, parse_policy
from dialplan.route import Bridge, Refuse, decide, scored
from dialplan.score import DAY, RULES, Contact, score_card

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC (16:00 in Shanghai)


def test_nobody_scores_zero() -> None:
    card = score_card([], NOW)
    assert card.score == 0 and set(card.inputs) >= {r.input for r in RULES}


def test_each_rule_counts_beyond_its_free_allowance() -> None:
    calls = [Contact(NOW - 60 * i, "b1", "call") for i in range(8)]  # daytime UTC
    card = score_card(calls, NOW)
    assert card.inputs["attempts_24h"] == 8 and card.points["attempts_24h"] == 6.0
    spread = [Contact(NOW - 60 * i, f"b{i}", "call") for i in range(5)]
    assert score_card(spread, NOW).points["distinct_targets_24h"] == 10.0
    refused = [Contact(NOW - 2 * DAY - i, "b1", "call", refused=True) for i in range(4)]
    card = score_card(refused, NOW)
    assert card.inputs["refused_24h"] == 0 and card.inputs["refused_7d"] == 4
    assert card.points["refused_7d"] == 6.0
    old = [Contact(NOW - 8 * DAY, "b1", "call", refused=True)] * 50
    assert score_card(old, NOW).score == 0  # older than a week


def test_night_is_read_in_the_configured_zone() -> None:
    # 08:00 UTC is 16:00 in Shanghai and 03:00 in New York.
    calls = [Contact(NOW - i, "b1", "call") for i in range(3)]
    assert score_card(calls, NOW, "Asia/Shanghai").inputs["night_7d"] == 0
    card = score_card(calls, NOW, "America/New_York")
    assert card.inputs["night_7d"] == 3 and card.points["night_7d"] == 8.0


def test_caps_and_the_100_ceiling() -> None:
    flood = [Contact(NOW - i, f"b{i}", "call", refused=True) for i in range(500)]
    flood += [Contact(NOW - i, "b1", "sms") for i in range(100)]
    flood += [Contact(NOW - i, "b1", "call", short=True) for i in range(20)]  # 110 in all
    card = score_card(flood, NOW, "America/New_York")
    assert card.points["attempts_24h"] == 25.0 and card.score == 100


def test_max_score_in_policies_and_decisions() -> None:
    p = parse_policy("s", {"max_score": 60})
    assert p.as_dict() == {"name": "s", "max_score": 60}
    for bad in (-1, 101, 50.5, True):
        try:
            parse_policy("s", {"max_score": bad})
        except PolicyError as exc:
            assert exc.field == "max_score"
        else:
            raise AssertionError(bad)
    d = decide(Entry(), True, A, NOW, policy=p)
    assert isinstance(d, Bridge) and d.max_score == 60
    assert scored(d, 60) is d
    assert scored(d, 61) == Refuse(603, "score", 21, "b1")
