"""Tiers on both engines with the pharmacy seed's numbers: 1,200 / 5,000 qualifying points in a calendar
quarter; immediate upgrade, downgrade only at the review, manual floor, and the audit of every change."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import earning, ledger, tiers
from crm_core.loyalty.rules import SHANGHAI
from crm_core.loyalty.tiers import TierChangeReason
from crm_core.members.models import Member
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db

_mobiles = itertools.count(13900000000)
Q2 = dt.datetime(2026, 5, 10, 12, tzinfo=SHANGHAI)  # second quarter of 2026
Q3 = dt.datetime(2026, 8, 10, 12, tzinfo=SHANGHAI)
NEW_YEAR = dt.datetime(2027, 1, 1, tzinfo=SHANGHAI)


async def setup_member(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    joined = await factories.member(sessions, settings, mobile=str(next(_mobiles)))
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)
    return joined.member_id


async def earn(
    sessions: async_sessionmaker[AsyncSession], member: int, points: int, at: dt.datetime, ref: str
) -> str | None:
    async with transaction(sessions) as session:
        _, upgraded = await earning.earn_purchase(
            session, member, points, earned_at=at, expires_at=None, transaction_ref=ref
        )
        return upgraded


async def tier_of(sessions: async_sessionmaker[AsyncSession], member: int) -> str:
    async with transaction(sessions) as session:
        return (await session.execute(select(Member.member_type).where(Member.id == member))).scalar_one()


async def history(sessions: async_sessionmaker[AsyncSession], member: int) -> list[tuple[str, str, str]]:
    async with transaction(sessions) as session:
        return [(c.from_tier, c.to_tier, c.reason) for c in await tiers.tier_history(session, member)]


async def test_quarterly_points_upgrade_at_once_at_the_seed_thresholds(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    assert await earn(sessions, member, 1_199, Q2, "A") is None
    assert await tier_of(sessions, member) == "standard"
    assert await earn(sessions, member, 1, Q2, "B") == "gold"  # 1,200 in one quarter
    assert await tier_of(sessions, member) == "gold"
    assert await earn(sessions, member, 3_799, Q2, "C") is None  # 4,999
    assert await earn(sessions, member, 1, Q2, "D") == "diamond"  # 5,000
    assert await history(sessions, member) == [
        ("standard", "gold", TierChangeReason.UPGRADE),
        ("gold", "diamond", TierChangeReason.UPGRADE),
    ]
    async with transaction(sessions) as session:
        status = await tiers.tier_status(session, member, Q2)
    assert (status.tier, status.next_tier, status.held_until) == ("diamond", None, NEW_YEAR)


async def test_points_of_different_quarters_do_not_add_up_and_gifts_do_not_qualify(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    await earn(sessions, member, 1_000, Q2, "A")
    assert await earn(sessions, member, 1_000, Q3, "B") is None
    async with transaction(sessions) as session:
        await ledger.manual_grant(session, member, 5_000, name="积分赠送", expires_at=None, granted_at=Q3)
        assert await tiers.apply_upgrade(session, member, Q3) is None
        status = await tiers.tier_status(session, member, Q3)
    assert (status.tier, status.period_points, status.next_tier, status.points_to_next) == (
        "standard",
        1_000,
        "gold",
        200,
    )
    # Spending redeemable points does not lower qualifying points: separate balances.
    async with transaction(sessions) as session:
        await ledger.spend(session, member, 6_000)
    assert await earn(sessions, member, 200, Q3, "C") == "gold"


async def test_downgrade_waits_for_the_review_which_is_idempotent(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    await earn(sessions, member, 1_500, Q2, "A")
    async with transaction(sessions) as session:
        await ledger.refund(session, member, "A")  # the qualifying purchase is returned
        assert await tiers.review_tiers(session, Q3) == 0  # gold holds to the end of the year (当年)
    assert await tier_of(sessions, member) == "gold"
    async with transaction(sessions) as session:
        assert await tiers.review_tiers(session, NEW_YEAR) == 1
    async with transaction(sessions) as session:
        assert await tiers.review_tiers(session, NEW_YEAR) == 0
        assert await tiers.review_tiers(session, NEW_YEAR + dt.timedelta(days=40)) == 0
    assert await tier_of(sessions, member) == "standard"
    assert await history(sessions, member) == [
        ("standard", "gold", TierChangeReason.UPGRADE),
        ("gold", "standard", TierChangeReason.PERIOD_REVIEW),
    ]


async def test_review_keeps_a_member_who_qualifies_in_the_new_period(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    await earn(sessions, member, 5_000, Q2, "A")
    early_2027 = NEW_YEAR + dt.timedelta(days=3)
    await earn(sessions, member, 1_300, early_2027, "B")  # gold again in Q1 2027, not diamond
    async with transaction(sessions) as session:
        assert await tiers.review_tiers(session, early_2027) == 1
        status = await tiers.tier_status(session, member, early_2027)
    assert (status.tier, status.held_until) == ("gold", dt.datetime(2028, 1, 1, tzinfo=SHANGHAI))


async def test_manual_floor_raises_at_once_and_holds_through_the_review(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    staff = await factories.principal(sessions, "crm1", Role.CRM_STAFF)
    floor_until = dt.datetime(2027, 3, 31, tzinfo=SHANGHAI)
    async with transaction(sessions) as session:
        with pytest.raises(ValueError):
            await tiers.set_floor(session, member, "gold", floor_until, reason=" ", who=staff)
        await tiers.set_floor(session, member, "gold", floor_until, reason="投诉补偿", who=staff)
    assert await tier_of(sessions, member) == "gold"
    async with transaction(sessions) as session:
        assert await tiers.review_tiers(session, NEW_YEAR) == 0  # not due: held to the floor's end
        assert await tiers.review_tiers(session, floor_until) == 1
        changes = await tiers.tier_history(session, member)
    assert [(c.to_tier, c.reason, c.note, c.changed_by) for c in changes] == [
        ("gold", TierChangeReason.MANUAL_FLOOR, "投诉补偿", staff.user_id),
        ("standard", TierChangeReason.PERIOD_REVIEW, "quarter review", None),
    ]


async def test_floor_is_the_minimum_when_an_upgraded_tier_ends(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    await earn(sessions, member, 5_000, Q2, "A")
    async with transaction(sessions) as session:
        await tiers.set_floor(session, member, "gold", dt.datetime(2027, 6, 30, tzinfo=SHANGHAI), reason="大客户")
        assert await tiers.review_tiers(session, NEW_YEAR) == 1
        status = await tiers.tier_status(session, member, NEW_YEAR)
    assert (status.tier, status.held_until, status.floor_tier) == (
        "gold",
        dt.datetime(2027, 6, 30, tzinfo=SHANGHAI),
        "gold",
    )


async def test_pending_points_count_for_the_tier_once_verified_in_their_own_quarter(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await setup_member(sessions, settings)
    async with transaction(sessions) as session:
        lot, upgraded = await earning.earn_purchase(
            session, member, 1_200, earned_at=Q2, expires_at=None, transaction_ref="购房-001", pending=True
        )
    assert upgraded is None and await tier_of(sessions, member) == "standard"
    async with transaction(sessions) as session:
        assert await earning.verify_purchase(session, lot) == "gold"  # verified in Q3, earned in Q2
        status = await tiers.tier_status(session, member, Q2)
    assert (status.tier, status.period_points) == ("gold", 1_200)


async def test_nightly_job_expires_reviews_and_reconciles_and_twice_changes_nothing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    from sqlalchemy import func

    from crm_core.loyalty.jobs import run_nightly
    from crm_core.loyalty.models import PointsEntry, TierChange

    member = await setup_member(sessions, settings)
    await earn(sessions, member, 1_300, Q2, "A")
    async with transaction(sessions) as session:  # Sifan clearing: points up to 11-30 go at 12-31 24:00
        await ledger.earn(session, member, 50, earned_at=Q3, expires_at=NEW_YEAR, transaction_ref="B")

    async def journal() -> tuple[int, int]:
        async with transaction(sessions) as session:
            entries = (await session.execute(select(func.count()).select_from(PointsEntry))).scalar_one()
            changes = (await session.execute(select(func.count()).select_from(TierChange))).scalar_one()
        return entries, changes

    first = await run_nightly(sessions, NEW_YEAR)
    assert (first.lots_expired, first.points_expired, first.tier_changes, first.differences) == (1, 50, 1, [])
    after_first = await journal()
    second = await run_nightly(sessions, NEW_YEAR)
    assert (second.lots_expired, second.points_expired, second.tier_changes, second.differences) == (0, 0, 0, [])
    assert await journal() == after_first
    assert await tier_of(sessions, member) == "standard"
