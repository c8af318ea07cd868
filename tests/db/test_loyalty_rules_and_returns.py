"""Earning rules from the database (windows, POS import at the sale's time), event points once per
occasion, and partial returns, on both engines."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import bulk_refund, events, ledger, rule_book
from crm_core.loyalty.models import EventAward, LotSource, LotState, PointsLot, PosTransaction
from crm_core.loyalty.pos_import import clawback_points
from crm_core.loyalty.rules import SHANGHAI
from crm_core.settings import Settings
from tests.db import factories
from tests.db.test_loyalty_pos_import import member_no, run, write_csv

pytestmark = pytest.mark.db

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_mobiles = itertools.count(13700200000)


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


async def new_member(sessions: async_sessionmaker[AsyncSession], settings: Settings, **fields: object) -> int:
    return (await factories.member(sessions, settings, mobile=str(next(_mobiles)), **fields)).member_id


async def balances(sessions: async_sessionmaker[AsyncSession], member: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        return await ledger.balances(session, member)


async def add_rule(
    sessions: async_sessionmaker[AsyncSession],
    kind: str,
    starts: str | None = None,
    ends: str | None = None,
    name: str = "规则",
    **params: object,
) -> int:
    async with transaction(sessions) as session:
        row = await rule_book.create_rule(
            session,
            name=name,
            kind=kind,
            params=dict(params),
            starts_at=local(starts) if starts else None,
            ends_at=local(ends) if ends else None,
            who=None,
        )
        return row.id


def days(n: int) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


async def one_lot(session: AsyncSession, member: int, ref: str) -> PointsLot:
    lots = select(PointsLot).where(PointsLot.member_id == member, PointsLot.transaction_ref == ref)
    return (await session.execute(lots)).scalar_one()


async def points_by_transaction(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(PosTransaction.transaction_id, PosTransaction.points))
    return {tx: points for tx, points in rows}


# ------------------------------------------------------------------------------------------ partial returns


async def test_a_sale_returned_in_parts_costs_what_one_whole_return_costs(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    whole, parts = await new_member(sessions, settings), await new_member(sessions, settings)
    for member in (whole, parts):
        async with transaction(sessions) as session:
            await ledger.earn(session, member, 100, earned_at=NOW, expires_at=None, transaction_ref="P1")
            await ledger.earn(session, member, 25, earned_at=NOW, expires_at=None, transaction_ref="P2")
            await ledger.spend(session, member, 110)  # P1's 100 (oldest first at equal expiry), then 10 of P2
    async with transaction(sessions) as session:
        await ledger.refund(session, whole, "P1")
    # Part 1: nothing of P1 is left in its lot, so all 40 are charged as used: from P2's 15, then debt.
    async with transaction(sessions) as session:
        first = await ledger.refund(session, parts, "P1", points=40)
    assert (first.clawed_back, first.recovered_from_other_lots, first.debt) == (0, 15, 25)
    assert await balances(sessions, parts) == ledger.Balances(valid=0, lifetime=85, qualifying=85, debt=25)
    async with transaction(sessions) as session:
        second = await ledger.refund(session, parts, "P1", points=60)
    assert (second.clawed_back, second.recovered_from_other_lots, second.debt) == (0, 0, 60)
    assert await balances(sessions, parts) == await balances(sessions, whole)
    async with transaction(sessions) as session:
        lot = await one_lot(session, parts, "P1")
        assert (lot.state, lot.clawed_back, lot.remaining) == (LotState.CLAWED_BACK, 100, 0)
        # Nothing is left to reverse: a further return changes nothing.
        assert (await ledger.refund(session, parts, "P1", points=5)).entry_id is None


async def test_a_partial_return_takes_the_lots_own_points_first_and_never_charges_expired_ones(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 100, earned_at=NOW, expires_at=days(10), transaction_ref="P1")
        await ledger.manual_grant(session, member, 50, name="赠送", expires_at=None)
        await ledger.spend(session, member, 30)  # from P1
    async with transaction(sessions) as session:
        part = await ledger.refund(session, member, "P1", points=50)
    assert (part.clawed_back, part.recovered_from_other_lots, part.debt) == (50, 0, 0)
    assert await balances(sessions, member) == ledger.Balances(valid=70, lifetime=100, qualifying=50)
    async with transaction(sessions) as session:
        await ledger.expire(session, NOW + dt.timedelta(days=10))  # P1's last 20 expire
    async with transaction(sessions) as session:
        rest = await ledger.refund(session, member, "P1", points=50)
    # 30 were used (charged from the grant), 20 had expired (not charged again).
    assert (rest.clawed_back, rest.recovered_from_other_lots, rest.debt) == (0, 30, 0)
    assert await balances(sessions, member) == ledger.Balances(valid=20, lifetime=50, qualifying=0)


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    earned=st.integers(1, 80),
    spent=st.integers(0, 80),
    other=st.integers(0, 40),
    cuts=st.lists(st.integers(1, 80), min_size=1, max_size=4),
)
async def test_any_split_of_a_return_ends_where_the_whole_return_ends(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, earned: int, spent: int, other: int, cuts: list[int]
) -> None:
    whole, parts = await new_member(sessions, settings), await new_member(sessions, settings)
    for member in (whole, parts):
        async with transaction(sessions) as session:
            await ledger.earn(session, member, earned, earned_at=NOW, expires_at=days(5), transaction_ref="S")
            if other:
                await ledger.manual_grant(session, member, other, name="赠送", expires_at=None)
            if spent:
                await ledger.spend(session, member, min(spent, earned + other))
    async with transaction(sessions) as session:
        await ledger.refund(session, whole, "S")
    for cut in cuts:
        async with transaction(sessions) as session:
            await ledger.refund(session, parts, "S", points=cut)
    async with transaction(sessions) as session:
        await ledger.refund(session, parts, "S")  # whatever the cuts left
    assert await balances(sessions, parts) == await balances(sessions, whole)


def test_the_returned_share_of_the_points_adds_up_to_the_sale() -> None:
    # ¥500 earned 10: ¥100 back reverses 2, then ¥400 the other 8; ¥1 at a time also ends at exactly 10.
    assert clawback_points(10, 50_000, 0, 10_000) == 2
    assert clawback_points(10, 50_000, 10_000, 40_000) == 8
    assert sum(clawback_points(10, 50_000, fen, 100) for fen in range(0, 50_000, 100)) == 10
    assert clawback_points(200, 500_000, 0, 250_000) == 100  # the band's offset goes back with its share


async def test_pos_returns_in_parts_until_the_sale_is_used_up(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)
    sale = {"transaction id": "S1", "time": "2026-05-10 10:00", "member number": number, "amount": "500.00"}
    assert (await run(settings, write_csv(tmp_path / "sale.csv", [sale]))).points_granted == 10

    def back(tx: str, amount: str) -> dict[str, str]:
        return {"transaction id": tx, "time": "2026-05-11 10:00", "amount": amount, "type": "退货",
                "original transaction id": "S1"}  # fmt: skip

    first = await run(settings, write_csv(tmp_path / "r1.csv", [back("R1", "-100.00"), back("R2", "450.00")]))
    assert (first.returns, first.errors, first.points_clawed_back) == (1, 1, 2)
    assert first.error_rows[0].reason == "returns more than is left of the sale (400.00)"
    assert (await balances(sessions, member)).valid == 8
    second = await run(settings, write_csv(tmp_path / "r2.csv", [back("R3", "400.00"), back("R4", "0.01")]))
    assert (second.returns, second.errors, second.points_clawed_back) == (1, 1, 8)
    assert second.error_rows[0].reason == "sale already returned"
    assert await balances(sessions, member) == ledger.Balances()
    async with transaction(sessions) as session:
        stored = await points_by_transaction(session)
    assert stored == {"S1": 10, "R1": 2, "R3": 8}


# ---------------------------------------------------------------------------------- rules from the database


async def test_pos_sales_earn_under_the_rules_in_force_at_their_time(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    bands = [
        {"from_fen": 0},
        {"from_fen": 500_000, "offset_points": "100"},
        {"from_fen": 1_000_000, "offset_points": "500"},
    ]
    await add_rule(sessions, "rate", "2026-05-01", "2026-05-08", points_per_unit=2, unit_fen=10_000, bands=bands)
    await add_rule(sessions, "campaign", "2026-06-01", "2026-06-08", multiplier="2")
    disabled = await add_rule(sessions, "rate", "2026-01-01", points_per_unit=50, unit_fen=10_000)
    async with transaction(sessions) as session:
        await rule_book.end_rule(session, disabled, disable=True)
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)
    rows = [
        {"transaction id": tx, "time": when, "member number": number, "amount": amount}
        for tx, when, amount in [
            ("A", "2026-04-30 23:59", "5000.00"),  # before the promotion: 100
            ("B", "2026-05-01 00:00", "5000.00"),  # band: 100 + 100
            ("C", "2026-05-07 20:00", "10000.00"),  # band: 200 + 500
            ("D", "2026-06-03 12:00", "468.00"),  # campaign 2×: 18.72 → 18
            ("E", "2026-06-08 00:00", "468.00"),  # after it: 9
        ]
    ]
    report = await run(settings, write_csv(tmp_path / "sales.csv", rows))
    assert report.points_granted == 100 + 200 + 700 + 18 + 9
    async with transaction(sessions) as session:
        earned = await points_by_transaction(session)
    assert earned == {"A": 100, "B": 200, "C": 700, "D": 18, "E": 9}


async def test_rules_are_validated_and_windows_only_shrink(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        with pytest.raises(rule_book.InvalidRule, match="a campaign needs both a start and an end"):
            await rule_book.create_rule(
                session, name="x", kind="campaign", params={"multiplier": "2"}, starts_at=None, ends_at=None, who=None
            )
        with pytest.raises(rule_book.InvalidRule, match="must end after it starts"):
            await rule_book.create_rule(
                session,
                name="x",
                kind="tier",
                params={"tier": "g", "multiplier": "2"},
                starts_at=NOW,
                ends_at=NOW,
                who=None,
            )
    rule_id = await add_rule(sessions, "tier", "2026-01-01", "2026-12-31", tier="gold", multiplier="1.5")
    async with transaction(sessions) as session:
        with pytest.raises(rule_book.InvalidRule, match="shortened, not extended"):
            await rule_book.end_rule(session, rule_id, ends_at=local("2027-06-01"))
        ended = await rule_book.end_rule(session, rule_id, ends_at=local("2026-07-01"))
        assert ended.ends_at == local("2026-07-01")
        with pytest.raises(rule_book.RuleNotFound):
            await rule_book.end_rule(session, 999, disable=True)


# ------------------------------------------------------------------------------------------------ events


async def test_join_points_follow_the_rule_for_the_customer_type(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await add_rule(sessions, "event", name="注册赠送", event="join", points=1000, expiry="year_end")
    await add_rule(
        sessions, "event", name="企业入会", event="join", points=300, customer_type="enterprise", expiry="never"
    )
    member = await new_member(sessions, settings)
    assert await balances(sessions, member) == ledger.Balances(valid=1000, lifetime=1000)  # not qualifying
    async with transaction(sessions) as session:
        lot = (await session.execute(select(PointsLot).where(PointsLot.member_id == member))).scalar_one()
        year = dt.datetime.now(SHANGHAI).year
        assert (lot.source, lot.name, lot.qualifying) == (LotSource.EVENT, "注册赠送", False)
        assert lot.expires_at == dt.datetime(year + 1, 1, 1, tzinfo=SHANGHAI)
        # Granted once: the occasion is unique.
        assert await events.award_join(session, member, dt.datetime.now(dt.UTC)) is None


async def test_a_referral_earns_once_per_referred_member_even_concurrently(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await add_rule(sessions, "event", event="referral", points=2000, expiry="year_end", years=1)  # 推荐客户赠送
    referrer, friend = await new_member(sessions, settings), await new_member(sessions, settings)

    async def refer() -> events.Award | None:
        async with transaction(sessions) as session:
            return await events.award_referral(session, referrer, friend, local("2026-03-12 10:00"), who=None)

    if settings.database_url.startswith("sqlite"):
        results: list[object] = [await refer(), await refer()]
    else:
        results = list(await asyncio.gather(*(refer() for _ in range(8)), return_exceptions=True))
    awarded = [r for r in results if isinstance(r, events.Award)]
    assert len(awarded) == 1 and awarded[0].expires_at == local("2028-01-01")
    assert all(r is None or isinstance(r, events.Award) for r in results), results
    assert (await balances(sessions, referrer)).valid == 2000
    async with transaction(sessions) as session:
        with pytest.raises(ValueError, match="cannot refer themselves"):
            await events.award_referral(session, referrer, referrer, NOW, who=None)


async def test_the_birthday_job_grants_once_a_year_and_keeps_29_february_on_the_28th(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await add_rule(sessions, "event", event="birthday", points=88, expiry="days", days=30)
    today = await new_member(sessions, settings, birthday=dt.date(1990, 6, 1))
    leap = await new_member(sessions, settings, birthday=dt.date(1992, 2, 29))
    other = await new_member(sessions, settings, birthday=dt.date(1990, 6, 2))
    june_first = local("2026-06-01 00:30").astimezone(dt.UTC)  # still 05-31 in UTC
    assert await events.award_birthdays(sessions, june_first, batch=1) == 1
    assert await events.award_birthdays(sessions, june_first) == 0  # a second run grants nothing
    assert await events.award_birthdays(sessions, local("2026-02-28 09:00")) == 1  # 2026 is not a leap year
    assert await events.award_birthdays(sessions, local("2028-02-28 09:00")) == 0  # 2028 is: on the 29th
    assert await events.award_birthdays(sessions, local("2028-02-29 09:00")) == 1
    assert [(await balances(sessions, m)).valid for m in (today, leap, other)] == [88, 176, 0]
    async with transaction(sessions) as session:
        awards = select(EventAward.member_id, EventAward.occasion).order_by(EventAward.id)
        occasions = [(member, occasion) for member, occasion in await session.execute(awards)]
        assert occasions == [(today, "2026"), (leap, "2026"), (leap, "2028")]


async def test_returns_in_bulk_end_where_returns_one_by_one_end(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Members whose returns are all covered by their lots (bulk) beside members with a shortfall or a
    pending lot (one by one), a sale returned twice in one batch, and a return of nothing left."""
    scenarios: list[tuple[int, bool, list[tuple[str, int]]]] = [
        (0, False, [("A", 30), ("A", 70)]),  # nothing spent: bulk, the lot used up in two returns
        (50, False, [("A", 40), ("B", 10)]),  # 50 of A spent: A's 40 fit in its remaining 50
        (90, False, [("A", 40), ("B", 5)]),  # A has only 10 left: shortfall, one by one
        (0, True, [("A", 100), ("A", 5)]),  # a pending lot, then nothing left to reverse
    ]
    bulk_returns: list[bulk_refund.Return] = []
    one_by_one: list[tuple[int, str, int]] = []
    pairs = []
    for spent, pending, returns in scenarios:
        twins = await new_member(sessions, settings), await new_member(sessions, settings)
        for member in twins:
            async with transaction(sessions) as session:
                await ledger.earn(
                    session, member, 100, earned_at=NOW, expires_at=days(5), transaction_ref="A", pending=pending
                )
                await ledger.earn(session, member, 20, earned_at=NOW, expires_at=days(9), transaction_ref="B")
                if spent:
                    await ledger.spend(session, member, spent)
        bulk_returns += [bulk_refund.Return(twins[0], ref, points, "退货") for ref, points in returns]
        one_by_one += [(twins[1], ref, points) for ref, points in returns]
        pairs.append(twins)
    async with transaction(sessions) as session:
        results = await bulk_refund.refund_many(session, bulk_returns)
    expected = []
    for member, ref, points in one_by_one:
        async with transaction(sessions) as session:
            expected.append(await ledger.refund(session, member, ref, points=points, reason="退货"))
    strip = [(r.clawed_back, r.recovered_from_other_lots, r.debt, r.entry_id is None) for r in results]
    assert strip == [(r.clawed_back, r.recovered_from_other_lots, r.debt, r.entry_id is None) for r in expected]
    for bulk_member, single_member in pairs:
        assert await balances(sessions, bulk_member) == await balances(sessions, single_member)
