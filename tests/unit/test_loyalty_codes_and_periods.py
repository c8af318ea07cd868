"""Pure parts of redemption and tiers: voucher codes catch typos; calendar periods and seed thresholds."""

from __future__ import annotations

import datetime as dt

from crm_core.loyalty import voucher_codes
from crm_core.loyalty.models import TierPeriod
from crm_core.loyalty.rules import SHANGHAI
from crm_core.loyalty.tiers import SEED_TIERS, deserved_tier, end_of_year, period_bounds


def test_new_codes_are_well_formed_and_distinct() -> None:
    codes = {voucher_codes.new_code() for _ in range(2_000)}
    assert len(codes) == 2_000
    for code in list(codes)[:200]:
        assert len(code) == 13
        assert voucher_codes.normalise(code) == code


def test_every_single_symbol_typo_is_caught() -> None:
    for _ in range(20):
        code = voucher_codes.new_code()
        for position in range(len(code)):
            for symbol in voucher_codes.ALPHABET:
                if symbol != code[position]:
                    typo = code[:position] + symbol + code[position + 1 :]
                    assert voucher_codes.normalise(typo) is None, (code, typo)


def test_neighbour_swaps_are_nearly_always_caught() -> None:
    swaps = caught = 0
    for _ in range(200):
        code = voucher_codes.new_code()
        for i in range(len(code) - 1):
            if code[i] != code[i + 1]:
                swapped = code[:i] + code[i + 1] + code[i] + code[i + 2 :]
                swaps += 1
                caught += voucher_codes.normalise(swapped) is None
    assert caught / swaps > 0.95


def test_typed_codes_are_read_the_crockford_way() -> None:
    body = "0IL0ABCDEFGH"
    canonical = "01" + "10" + "ABCDEFGH"
    code = canonical + voucher_codes.check_symbol(canonical)
    typed = voucher_codes.display(body.lower() + code[-1]).replace("-", " - ")
    assert voucher_codes.normalise(typed) == code
    assert voucher_codes.display(code) == f"{code[:4]}-{code[4:8]}-{code[8:12]}-{code[12]}"
    assert voucher_codes.normalise("") is None
    assert voucher_codes.normalise(code + "0") is None
    assert voucher_codes.normalise(code[:-1] + "U") is None  # U is not a Crockford symbol


def test_calendar_quarters_are_shanghai_quarters() -> None:
    # 2026-03-31 20:00 UTC is already 1 April in Shanghai: the second quarter.
    start, end = period_bounds(TierPeriod.QUARTER, dt.datetime(2026, 3, 31, 20, tzinfo=dt.UTC))
    assert (start, end) == (
        dt.datetime(2026, 4, 1, tzinfo=SHANGHAI).astimezone(dt.UTC),
        dt.datetime(2026, 7, 1, tzinfo=SHANGHAI).astimezone(dt.UTC),
    )
    start, end = period_bounds(TierPeriod.QUARTER, dt.datetime(2026, 11, 5, tzinfo=SHANGHAI))
    assert (start.astimezone(SHANGHAI).month, end.astimezone(SHANGHAI).year) == (10, 2027)
    assert end_of_year(dt.datetime(2026, 12, 31, 23, tzinfo=SHANGHAI)) == dt.datetime(2027, 1, 1, tzinfo=SHANGHAI)


def test_seed_thresholds_pick_the_tier() -> None:
    tiers = list(SEED_TIERS)
    assert deserved_tier(tiers, {TierPeriod.QUARTER: 1_199}).code == "standard"
    assert deserved_tier(tiers, {TierPeriod.QUARTER: 1_200}).code == "gold"
    assert deserved_tier(tiers, {TierPeriod.QUARTER: 4_999}).code == "gold"
    assert deserved_tier(tiers, {TierPeriod.QUARTER: 5_000}).code == "diamond"
