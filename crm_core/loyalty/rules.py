"""Points earning and expiry rules: pure functions, no I/O.

Money is integer fen; points are whole integers. All arithmetic is exact (`Fraction`) and the result is
floored once, at the very end, so stacking several multipliers never loses a point to intermediate rounding
and never gives away a fraction the member did not earn.

Reading of the seeds (DOMAIN.md §2.1):

* Base rate (Sifan): 100 元 → 2 points, i.e. ``points_per_unit=2`` per ``unit_fen=10_000``.
  ¥468.00 → 9.36 → **9** points. TurboCRM's "46.80 for ¥468.00" is a 10 % rate shown with 2 decimals;
  it is the same formula with ``points_per_unit=1, unit_fen=1_000``. `EarningBreakdown.exact` keeps the
  unrounded value (46.80) for display; the ledger books the floored integer (46). We do not store
  centi-points: no seed spends fractions of a point and Sifan's "1 point = 1 元" makes whole points natural.
* The part paid with points or vouchers earns nothing (Sifan): the eligible amount is the total minus
  those parts. When a purchase has lines, the excluded part is spread over the lines pro rata.
* Spend bands (TurboCRM 消费金额 | 积分偏移量 | 积分加乘系数): the seed gives no formula. Our reading is
  ``band_points = base_points × multiplier + offset`` where the band is the highest one whose
  ``from_fen`` the *eligible* amount reaches. With the seed table (0/0/1.00, 5,000/100/1.00,
  10,000/500/1.00) at the Sifan rate: ¥4,999.99 → 99, ¥5,000 → 100 + 100 = 200, ¥10,000 → 200 + 500 = 700.

Stacking order (documented, tested):

1. eligible amount = total − paid with points − paid with vouchers;
2. base per line = eligible share of the line × rate × category multiplier (default 1);
3. band: × band multiplier + band offset (offset is in points, added once per transaction);
4. × tier multiplier of the member's card level (default 1);
5. × campaign multiplier: of the campaigns whose window ``[starts_at, ends_at)`` contains the purchase
   time, the highest applies; campaigns do not compound (a 2× and a 3× week overlapping give 3×, not 6×);
6. floor to a whole point, never below zero.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True, slots=True)
class SpendBand:
    """One row of TurboCRM's band table: from this eligible amount on, ×multiplier then +offset points."""

    from_fen: int
    offset_points: Decimal = Decimal(0)
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign-period multiplier (e.g. 家用电器促销 2009-5-1 to 2009-5-7), valid in [starts_at, ends_at)."""

    name: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    multiplier: Decimal

    def active_at(self, moment: dt.datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


@dataclass(frozen=True, slots=True)
class PurchaseLine:
    category: str
    amount_fen: int


@dataclass(frozen=True, slots=True)
class Purchase:
    """A sale as the earning rules see it; `lines` must add up to the total (the receipt amount)."""

    lines: tuple[PurchaseLine, ...]
    occurred_at: dt.datetime
    paid_with_points_fen: int = 0
    paid_with_vouchers_fen: int = 0
    tier: str | None = None

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)

    @property
    def eligible_fen(self) -> int:
        return self.total_fen - self.paid_with_points_fen - self.paid_with_vouchers_fen


@dataclass(frozen=True, slots=True)
class EarningRules:
    """One programme's earning configuration; the defaults are Sifan's 100 元 → 2 points."""

    points_per_unit: int = 2
    unit_fen: int = 10_000
    bands: tuple[SpendBand, ...] = ()
    category_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    tier_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    campaigns: tuple[Campaign, ...] = ()


# TurboCRM's "家用电器促销积分规则" band table, amounts converted to fen.
TURBOCRM_APPLIANCE_BANDS = (
    SpendBand(0, Decimal("0.00"), Decimal("1.00")),
    SpendBand(500_000, Decimal("100.00"), Decimal("1.00")),
    SpendBand(1_000_000, Decimal("500.00"), Decimal("1.00")),
)


@dataclass(frozen=True, slots=True)
class EarningBreakdown:
    """Every step of the stacking order, so a receipt or a dispute can show how the points came about."""

    eligible_fen: int
    base: Fraction
    band: SpendBand | None
    after_band: Fraction
    tier_multiplier: Fraction
    campaign: Campaign | None
    exact: Fraction
    points: int


def band_reached(bands: tuple[SpendBand, ...], eligible_fen: int) -> SpendBand | None:
    """The highest band whose lower bound the amount reaches (bands may be given in any order)."""
    reached = [band for band in bands if band.from_fen <= eligible_fen]
    return max(reached, key=lambda band: band.from_fen) if reached else None


def best_campaign(campaigns: tuple[Campaign, ...], moment: dt.datetime) -> Campaign | None:
    active = [c for c in campaigns if c.active_at(moment)]
    return max(active, key=lambda c: c.multiplier) if active else None


def earn_points(purchase: Purchase, rules: EarningRules) -> EarningBreakdown:
    """Points a purchase earns under `rules`, following the stacking order in the module docstring."""
    if any(line.amount_fen < 0 for line in purchase.lines):
        raise ValueError("line amounts must not be negative (returns go through the ledger's refund)")
    if purchase.paid_with_points_fen < 0 or purchase.paid_with_vouchers_fen < 0:
        raise ValueError("amounts paid with points or vouchers must not be negative")
    if purchase.eligible_fen < 0:
        raise ValueError("more paid with points and vouchers than the purchase total")
    if rules.unit_fen <= 0 or rules.points_per_unit < 0:
        raise ValueError("earning rate must be a positive unit and a non-negative number of points")
    total = purchase.total_fen
    eligible = purchase.eligible_fen
    rate = Fraction(rules.points_per_unit, rules.unit_fen)
    base = Fraction(0)
    if total > 0:
        weighted = sum(
            (
                line.amount_fen * Fraction(rules.category_multipliers.get(line.category, Decimal(1)))
                for line in purchase.lines
            ),
            Fraction(0),
        )
        base = weighted * Fraction(eligible, total) * rate
    band = band_reached(rules.bands, eligible)
    after_band = base if band is None else base * Fraction(band.multiplier) + Fraction(band.offset_points)
    if eligible == 0:
        after_band = Fraction(0)  # no money paid, no band offset: a fully points-paid sale earns nothing
    tier_multiplier = Fraction(rules.tier_multipliers.get(purchase.tier, Decimal(1)) if purchase.tier else 1)
    campaign = best_campaign(rules.campaigns, purchase.occurred_at)
    campaign_multiplier = Fraction(campaign.multiplier) if campaign else Fraction(1)
    exact = max(after_band * tier_multiplier * campaign_multiplier, Fraction(0))
    return EarningBreakdown(
        eligible_fen=eligible,
        base=base,
        band=band,
        after_band=after_band,
        tier_multiplier=tier_multiplier,
        campaign=campaign,
        exact=exact,
        points=math.floor(exact),
    )


def _ratio(value: Decimal) -> tuple[int, int]:
    return value.as_integer_ratio()


def points_for(purchase: Purchase, rules: EarningRules) -> int:
    """`earn_points(purchase, rules).points` in integer arithmetic, for bulk imports.

    Why not `earn_points`: building `Fraction`s from `Decimal`s costs ~30 µs a sale, a sixth of the POS
    import's CPU; this keeps one numerator and denominator as ints and floors once, the same value
    (tests/unit/test_loyalty_rules.py checks equality on random purchases and rules). Input checks are
    the caller's (the import only passes parsed, non-negative sales).
    """
    total = purchase.total_fen
    eligible = purchase.eligible_fen
    if total <= 0 or eligible <= 0:
        return 0
    categories = rules.category_multipliers
    if categories:
        num, den = 0, 1
        for line in purchase.lines:
            multiplier = categories.get(line.category)
            n, d = _ratio(multiplier) if multiplier is not None else (1, 1)
            num, den = num * d + line.amount_fen * n * den, den * d
    else:
        num, den = total, 1
    num *= eligible * rules.points_per_unit
    den *= total * rules.unit_fen
    band = band_reached(rules.bands, eligible)
    if band is not None:
        bm_n, bm_d = _ratio(band.multiplier)
        bo_n, bo_d = _ratio(band.offset_points)
        num, den = num * bm_n * bo_d + bo_n * den * bm_d, den * bm_d * bo_d
    if purchase.tier and rules.tier_multipliers:
        tier = rules.tier_multipliers.get(purchase.tier)
        if tier is not None:
            n, d = _ratio(tier)
            num, den = num * n, den * d
    if rules.campaigns:
        campaign = best_campaign(rules.campaigns, purchase.occurred_at)
        if campaign is not None:
            n, d = _ratio(campaign.multiplier)
            num, den = num * n, den * d
    return max(num // den, 0)


def sifan_expiry(earned_at: dt.datetime, joined_on: dt.date | None = None) -> dt.datetime:
    """When Sifan's annual clearing removes points earned at `earned_at` (an aware datetime).

    Clearing runs at 12-31 24:00 (Shanghai) and removes points accumulated up to 11-30 24:00; December's
    points carry into the next year, so the accumulation year is 12-01 .. 11-30. Members who joined in the
    current year are first cleared at the end of the following year. Returns the UTC instant the lot
    expires (the first moment it is no longer valid).
    """
    local = earned_at.astimezone(SHANGHAI)
    clearing_year = local.year + 1 if local.month == 12 else local.year
    if joined_on is not None:
        clearing_year = max(clearing_year, joined_on.year + 1)
    return dt.datetime(clearing_year + 1, 1, 1, tzinfo=SHANGHAI).astimezone(dt.UTC)
