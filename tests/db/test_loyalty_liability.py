"""Points liability on both engines against hand-computed figures: outstanding valid / pending / held,
expiring in 30 / 90 days, earn and burn per Shanghai month, the CSV; and the 360's points section
(tier and progress to the next tier)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction, utcnow
from crm_core.loyalty import ledger, liability, redemption, tiers
from crm_core.loyalty.liability import Month, Outstanding
from crm_core.loyalty.models import EntryKind, PointsEntry
from crm_core.loyalty.redemption import RedemptionPolicy
from crm_core.member360 import member_360
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db.loyalty_factory import NOW, catalogue, days, member_with_points, user

pytestmark = pytest.mark.db


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def test_outstanding_expiring_and_earn_burn_by_month(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    agent = await user(sessions, Role.AGENT)
    staff = await user(sessions, Role.CRM_STAFF)
    # m1: granted lots of 1,000 (expire in 20 days), 500 (60 days), 300 (200 days).
    m1 = await member_with_points(sessions, settings, (1_000, 20), (500, 60), (300, 200))
    # m2: a lot of 200 (10 days) and a pending purchase of 400.
    m2 = await member_with_points(sessions, settings, (200, 10))
    async with transaction(sessions) as session:
        await ledger.earn(session, m2, 400, earned_at=NOW, expires_at=days(300), pending=True, transaction_ref="S1")
        await ledger.spend(session, m1, 250, ref="counter")  # from the 1,000 lot (nearest expiry): 750 left
        waiting = await redemption.request_redemption(
            session, m1, "V200", 1, who=agent, now=NOW, policy=RedemptionPolicy(approval_threshold=100)
        )  # 200 into escrow, again from the 1,000 lot: 550 left
    async with transaction(sessions) as session:
        totals = await liability.outstanding(session, NOW)
    assert totals == Outstanding(
        valid=1_800 - 250 - 200 + 200,  # m1 1,350 + m2 200
        pending=400,
        held=200,
        debt=0,
        expiring_30_days=550 + 200,
        expiring_90_days=550 + 200 + 500,
        members=2,
    )

    async with transaction(sessions) as session:
        await redemption.approve(session, waiting.redemption_id, who=staff, now=NOW)
        expired = await ledger.expire(session, days(25))  # m1's 550 and m2's 200
    assert expired.points == 750
    # Date the journal: 20:00 UTC on 31 May is already June in Shanghai, 17:00 UTC on 30 June already July.
    month_of = {
        (EntryKind.EARN, EntryKind.MANUAL_GRANT): utc("2026-05-31T20:00"),
        (EntryKind.SPEND,): utc("2026-06-30T17:00"),
        (EntryKind.ESCROW_SPEND, EntryKind.ESCROW_HOLD): utc("2026-07-15T00:00"),
        (EntryKind.EXPIRE,): utc("2026-08-01T00:00"),
    }
    async with transaction(sessions) as session:
        for kinds, at in month_of.items():
            await session.execute(update(PointsEntry).where(PointsEntry.kind.in_(kinds)).values(created_at=at))
        months = await liability.by_month(session, "Asia/Shanghai")
        after = await liability.outstanding(session, days(25))
        since_july = await liability.by_month(session, "Asia/Shanghai", since=utc("2026-07-01T00:00"))
    assert months == [
        Month("2026-06", earned=1_800 + 200 + 400, burned=0, expired=0, clawed_back=0),
        Month("2026-07", earned=0, burned=250 + 200, expired=0, clawed_back=0),
        Month("2026-08", earned=0, burned=0, expired=750, clawed_back=0),
    ]
    assert [m.month for m in since_july] == ["2026-07", "2026-08"] and since_july[0].burned == 200
    assert after == Outstanding(
        valid=500 + 300, pending=400, held=0, debt=0, expiring_30_days=0, expiring_90_days=500, members=2
    )

    rows = list(csv.reader(io.StringIO(liability.to_csv(after, months).lstrip("\ufeff"))))
    assert rows[:3] == [["measure", "points"], ["valid", "800"], ["pending", "400"]]
    assert ["2026-07", "0", "450", "0", "0"] in rows


async def test_member_360_points_show_tier_progress_and_expiring(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    now = utcnow()
    member = await member_with_points(sessions, settings)
    admin = await user(sessions, Role.ADMIN)
    async with transaction(sessions) as session:
        before = await member_360(session, admin, member)
    assert before["points"] == {
        "valid": 0,
        "pending": 0,
        "lifetime": 0,
        "held": 0,
        "expiring_30_days": 0,
        "tier": "standard",
        "next_tier": None,  # no tier table yet: nothing to progress to
        "points_to_next_tier": None,
        "period_qualifying": None,
    }
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)
        await ledger.earn(session, member, 500, earned_at=now, expires_at=now + dt.timedelta(days=200))
        await ledger.earn(session, member, 80, earned_at=now, expires_at=now + dt.timedelta(days=100), pending=True)
        await ledger.manual_grant(
            session, member, 100, name="生日赠送", granted_at=now, expires_at=now + dt.timedelta(days=20)
        )
    async with transaction(sessions) as session:
        view = await member_360(session, admin, member)
    assert view["points"] == {
        "valid": 600,
        "pending": 80,
        "lifetime": 600,
        "held": 0,
        "expiring_30_days": 100,
        "tier": "standard",
        "next_tier": "gold",  # 金卡: 1,200 qualifying points in the quarter
        "points_to_next_tier": 700,  # the grant does not qualify: 1,200 − 500
        "period_qualifying": 500,
    }
