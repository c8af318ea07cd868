"""Earning and expiry rules with the seeds' numbers (DOMAIN.md §2.1-2.2)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_core.loyalty.rules import (
    SHANGHAI,
    TURBOCRM_APPLIANCE_BANDS,
    Campaign,
    EarningRules,
    Purchase,
    PurchaseLine,
    SpendBand,
    earn_points,
    points_for,
    sifan_expiry,
)

WHEN = dt.datetime(2009, 5, 3, 12, 0, tzinfo=SHANGHAI)
SIFAN = EarningRules()


def sale(yuan: str, *, category: str = "general", **kwargs: object) -> Purchase:
    fen = int(Decimal(yuan) * 100)
    return Purchase(lines=(PurchaseLine(category, fen),), occurred_at=WHEN, **kwargs)  # type: ignore[arg-type]


def test_sifan_rate_is_two_points_per_hundred_yuan_floored() -> None:
    assert earn_points(sale("100.00"), SIFAN).points == 2
    assert earn_points(sale("468.00"), SIFAN).points == 9  # 9.36 floored
    assert earn_points(sale("49.99"), SIFAN).points == 0


def test_turbocrm_ten_percent_reading_keeps_two_decimals_exact_but_books_whole_points() -> None:
    breakdown = earn_points(sale("468.00"), EarningRules(points_per_unit=1, unit_fen=1_000))
    assert breakdown.exact == Fraction("46.80")
    assert breakdown.points == 46


def test_part_paid_with_points_or_vouchers_earns_nothing() -> None:
    # ¥468 receipt, ¥100 paid with points and ¥68 with a voucher: ¥300 earns 6.
    breakdown = earn_points(sale("468.00", paid_with_points_fen=10_000, paid_with_vouchers_fen=6_800), SIFAN)
    assert breakdown.eligible_fen == 30_000
    assert breakdown.points == 6
    assert earn_points(sale("200.00", paid_with_points_fen=20_000), SIFAN).points == 0


def test_paying_more_with_points_than_the_total_is_refused() -> None:
    with pytest.raises(ValueError):
        earn_points(sale("10.00", paid_with_points_fen=1_001), SIFAN)


@pytest.mark.parametrize(
    ("yuan", "points"),
    [
        ("4999.99", 99),  # first band: 99.9998 × 1.00 + 0
        ("5000.00", 200),  # 100 × 1.00 + 100
        ("9999.99", 299),  # 199.9998 + 100
        ("10000.00", 700),  # 200 × 1.00 + 500
    ],
)
def test_turbocrm_spend_bands_add_the_offset_of_the_band_reached(yuan: str, points: int) -> None:
    rules = EarningRules(bands=TURBOCRM_APPLIANCE_BANDS)
    assert earn_points(sale(yuan), rules).points == points


def test_band_is_chosen_on_the_amount_paid_in_money_not_the_receipt_total() -> None:
    rules = EarningRules(bands=TURBOCRM_APPLIANCE_BANDS)
    breakdown = earn_points(sale("5000.00", paid_with_points_fen=100), rules)  # ¥4,999 paid in money
    assert breakdown.band is not None and breakdown.band.from_fen == 0
    assert breakdown.points == 99


def test_band_multiplier_scales_base_points_before_the_offset() -> None:
    rules = EarningRules(bands=(TURBOCRM_APPLIANCE_BANDS[0], SpendBand(500_000, Decimal(100), Decimal(2))))
    assert earn_points(sale("5000.00"), rules).points == 100 * 2 + 100


def test_category_and_tier_multipliers_stack_before_the_campaign() -> None:
    rules = EarningRules(
        category_multipliers={"appliance": Decimal("2")},
        tier_multipliers={"gold": Decimal("1.5")},
    )
    purchase = Purchase(
        lines=(PurchaseLine("appliance", 30_000), PurchaseLine("food", 20_000)),
        occurred_at=WHEN,
        tier="gold",
    )
    # base = (300 × 2 + 200) × 2/100 = 16; × 1.5 gold = 24
    assert earn_points(purchase, rules).points == 24


def test_points_paid_part_is_spread_over_lines_pro_rata() -> None:
    rules = EarningRules(category_multipliers={"appliance": Decimal("2")})
    purchase = Purchase(
        lines=(PurchaseLine("appliance", 30_000), PurchaseLine("food", 20_000)),
        occurred_at=WHEN,
        paid_with_points_fen=25_000,  # half the receipt
    )
    assert earn_points(purchase, rules).points == 8  # (600 + 200) / 2 × 2/100


def test_campaign_applies_only_inside_its_window_and_the_highest_wins() -> None:
    start = dt.datetime(2009, 5, 1, tzinfo=SHANGHAI)
    end = dt.datetime(2009, 5, 8, tzinfo=SHANGHAI)  # 2009-5-1 .. 2009-5-7 inclusive
    rules = EarningRules(
        campaigns=(
            Campaign("家用电器促销", start, end, Decimal("2")),
            Campaign("五一", start, end, Decimal("3")),
        )
    )
    inside = earn_points(sale("1000.00"), rules)
    assert inside.campaign is not None and inside.campaign.name == "五一"
    assert inside.points == 60  # 20 × 3, not 20 × 6
    after = Purchase(lines=(PurchaseLine("general", 100_000),), occurred_at=end)
    assert earn_points(after, rules).points == 20
    before = Purchase(lines=(PurchaseLine("general", 100_000),), occurred_at=start - dt.timedelta(seconds=1))
    assert earn_points(before, rules).points == 20


def test_rounding_happens_once_at_the_end() -> None:
    # ¥149 at 2/100 is 2.98; × 1.5 tier = 4.47 → 4. Flooring first would give 2 × 1.5 = 3.
    rules = EarningRules(tier_multipliers={"gold": Decimal("1.5")})
    assert earn_points(sale("149.00", tier="gold"), rules).points == 4


def test_sifan_clearing_removes_points_to_november_at_year_end_and_carries_december() -> None:
    end_2009 = dt.datetime(2010, 1, 1, tzinfo=SHANGHAI)
    assert sifan_expiry(dt.datetime(2009, 3, 1, 10, tzinfo=SHANGHAI)) == end_2009
    assert sifan_expiry(dt.datetime(2009, 11, 30, 23, 59, tzinfo=SHANGHAI)) == end_2009
    assert sifan_expiry(dt.datetime(2009, 12, 1, 0, 0, tzinfo=SHANGHAI)) == dt.datetime(2011, 1, 1, tzinfo=SHANGHAI)


def test_sifan_members_who_joined_this_year_are_cleared_at_the_end_of_next_year() -> None:
    earned = dt.datetime(2009, 6, 1, tzinfo=SHANGHAI)
    assert sifan_expiry(earned, joined_on=dt.date(2009, 2, 1)) == dt.datetime(2011, 1, 1, tzinfo=SHANGHAI)
    assert sifan_expiry(earned, joined_on=dt.date(2008, 2, 1)) == dt.datetime(2010, 1, 1, tzinfo=SHANGHAI)


def test_sifan_expiry_uses_shanghai_dates_for_utc_inputs() -> None:
    # 2009-11-30 17:00 UTC is 12-01 01:00 in Shanghai: a December point, carried over.
    earned = dt.datetime(2009, 11, 30, 17, 0, tzinfo=dt.UTC)
    assert sifan_expiry(earned) == dt.datetime(2011, 1, 1, tzinfo=SHANGHAI)


_multiplier = st.decimals(min_value=0, max_value=5, places=2, allow_nan=False, allow_infinity=False)


@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["药品", "保健品", "家电", ""]), st.integers(0, 2_000_000)), min_size=1, max_size=4
    ),
    paid_share=st.integers(0, 100),
    points_per_unit=st.integers(0, 10),
    unit_fen=st.sampled_from([100, 1_000, 10_000, 33_333]),
    bands=st.lists(st.tuples(st.integers(0, 1_500_000), _multiplier, _multiplier), max_size=3),
    categories=st.dictionaries(st.sampled_from(["药品", "家电"]), _multiplier, max_size=2),
    tier=st.sampled_from([None, "gold", "diamond"]),
    tiers=st.dictionaries(st.sampled_from(["gold", "diamond"]), _multiplier, max_size=2),
    campaign=st.one_of(st.none(), _multiplier.filter(lambda m: m > 0)),
)
def test_integer_points_equal_the_exact_breakdown(
    lines: list[tuple[str, int]],
    paid_share: int,
    points_per_unit: int,
    unit_fen: int,
    bands: list[tuple[int, Decimal, Decimal]],
    categories: dict[str, Decimal],
    tier: str | None,
    tiers: dict[str, Decimal],
    campaign: Decimal | None,
) -> None:
    total = sum(amount for _, amount in lines)
    purchase = Purchase(
        lines=tuple(PurchaseLine(category, amount) for category, amount in lines),
        occurred_at=WHEN,
        paid_with_points_fen=total * paid_share // 200,
        paid_with_vouchers_fen=total * paid_share // 300,
        tier=tier,
    )
    window = (WHEN - dt.timedelta(days=1), WHEN + dt.timedelta(days=1))
    rules = EarningRules(
        points_per_unit=points_per_unit,
        unit_fen=unit_fen,
        bands=tuple(SpendBand(start, offset, multiplier) for start, offset, multiplier in bands),
        category_multipliers=categories,
        tier_multipliers=tiers,
        campaigns=() if campaign is None else (Campaign("活动", *window, campaign),),
    )
    assert points_for(purchase, rules) == earn_points(purchase, rules).points
