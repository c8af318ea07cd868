"""Composing the database's earning rules for a moment: windows, the latest-started rule winning, campaigns
not compounding, event expiry after the seeds' 注册赠送 / 推荐客户赠送 examples."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from crm_core.loyalty.rule_book import InvalidRule, Rule, RuleBook, parse_params
from crm_core.loyalty.rules import SHANGHAI, Purchase, PurchaseLine, earn_points


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def rule(rule_id: int, kind: str, starts: str | None = None, ends: str | None = None, **params: Any) -> Rule:
    return Rule(rule_id, f"rule {rule_id}", parse_params(kind, params), starts and at(starts), ends and at(ends))


# TurboCRM's 家用电器促销积分规则, 2009-5-1 to 2009-5-7, at Sifan's base rate.
APPLIANCE_BANDS = [
    {"from_fen": 0, "offset_points": "0.00", "multiplier": "1.00"},
    {"from_fen": 500_000, "offset_points": "100.00", "multiplier": "1.00"},
    {"from_fen": 1_000_000, "offset_points": "500.00", "multiplier": "1.00"},
]
BOOK = RuleBook(
    (
        rule(1, "rate", points_per_unit=2, unit_fen=10_000),
        rule(2, "rate", "2009-05-01", "2009-05-08", points_per_unit=2, unit_fen=10_000, bands=APPLIANCE_BANDS),
        rule(3, "category", category="家电", multiplier="1.5"),
        rule(4, "category", "2009-06-01", category="家电", multiplier="2"),
        rule(5, "campaign", "2009-09-01 13:51", "2009-10-31 13:51", multiplier="2"),  # the seed's "10.1活动"
        rule(6, "campaign", "2009-10-01", "2009-10-08", multiplier="3"),
        rule(7, "tier", tier="gold", multiplier="1.2"),
        rule(8, "event", event="join", points=1000, expiry="year_end"),  # 注册赠送 1,000, to 12-31
        rule(9, "event", event="referral", points=2000, expiry="year_end", years=1),  # 推荐客户赠送, to next 12-31
        rule(10, "event", "2009-07-01", event="join", points=500, customer_type="enterprise", expiry="never"),
    )
)


def points(fen: int, moment: dt.datetime, category: str = "", tier: str | None = None) -> int:
    rules = BOOK.earning_rules_at(moment)
    return earn_points(Purchase((PurchaseLine(category, fen),), moment, tier=tier), rules).points


def test_the_band_table_applies_only_inside_its_window() -> None:
    assert points(500_000, at("2009-04-30 23:59")) == 100
    assert points(500_000, at("2009-05-01 00:00")) == 200  # 100 + offset 100
    assert points(1_000_000, at("2009-05-07 23:59")) == 700
    assert points(500_000, at("2009-05-08 00:00")) == 100  # the window's end is not in it


def test_the_rule_that_started_last_wins_for_a_category() -> None:
    assert points(10_000, at("2009-05-20"), "家电") == 3  # 2 × 1.5
    assert points(10_000, at("2009-06-01"), "家电") == 4  # the newer 2× from June
    assert points(10_000, at("2009-06-01"), "食品") == 2


def test_overlapping_campaigns_do_not_compound_and_tiers_multiply() -> None:
    assert points(100_000, at("2009-09-15")) == 40  # 20 × 2
    assert points(100_000, at("2009-10-02")) == 60  # 3× beats 2×, not 6×
    assert points(100_000, at("2009-10-31 13:51")) == 20  # 10.1活动 ended
    assert points(100_000, at("2009-10-02"), tier="gold") == 72  # 20 × 1.2 × 3


def test_the_same_segment_reuses_its_composition() -> None:
    assert BOOK.earning_rules_at(at("2009-05-02")) is BOOK.earning_rules_at(at("2009-05-06"))
    assert BOOK.earning_rules_at(at("2009-05-02")) is not BOOK.earning_rules_at(at("2009-05-09"))


def test_event_rules_follow_the_seed_expiries() -> None:
    join = BOOK.event_grant("join", at("2009-03-01"), customer_type="personal")
    assert join is not None and (join.points, join.expires_at) == (1000, at("2010-01-01").astimezone(dt.UTC))
    referral = BOOK.event_grant("referral", at("2009-03-12"))
    assert referral is not None and (referral.points, referral.expires_at) == (
        2000,
        at("2011-01-01").astimezone(dt.UTC),
    )
    company = BOOK.event_grant("join", at("2009-08-01"), customer_type="enterprise")
    assert company is not None and (company.points, company.expires_at) == (500, None)
    assert BOOK.event_grant("join", at("2009-08-01"), customer_type="personal").points == 1000  # type: ignore[union-attr]
    assert BOOK.event_grant("birthday", at("2009-08-01")) is None


def test_no_rate_rule_falls_back_to_sifan() -> None:
    assert earn_points(Purchase((PurchaseLine("", 46_800),), at("2026-01-01")), RuleBook(()).earning_rules_at(
        at("2026-01-01"))).points == 9  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "params", "problem"),
    [
        ("rate", {"points_per_unit": 2}, "unit_fen: Field required"),
        ("rate", {"points_per_unit": 2, "unit_fen": 0}, "unit_fen: Input should be greater than 0"),
        ("category", {"category": "家电", "multiplier": "-1"}, "multiplier: Input should be greater than or equal"),
        ("campaign", {"multiplier": "2", "extra": 1}, "extra: Extra inputs are not permitted"),
        ("event", {"event": "wedding", "points": 5}, "event: Input should be 'join', 'birthday' or 'referral'"),
        ("bonus", {}, "unknown rule kind 'bonus'"),
    ],
)
def test_bad_parameters_say_what_is_wrong(kind: str, params: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRule, match=problem.replace("(", r"\(")):
        parse_params(kind, params)


def test_decimal_multipliers_stay_exact() -> None:
    parsed = parse_params("tier", {"tier": "gold", "multiplier": "1.15"})
    assert parsed.multiplier == Decimal("1.15")  # type: ignore[union-attr]
