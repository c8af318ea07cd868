"""Manual point adjustments on both engines: booked at once up to the threshold; above it a second
person approves (never the requester, never twice, also with 20 concurrent approvals) or rejects;
a deduction that no longer fits is refused at approval and can still be rejected; the ledger
reconciles throughout."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import adjustments, ledger
from crm_core.loyalty.errors import InsufficientPoints, LoyaltyError, NotAnApprover, SameApprover
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db.loyalty_factory import NOW, member_with_points, user

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]
EXPIRY = NOW + dt.timedelta(days=365)


async def balance(sessions: Sessions, member_id: int) -> int:
    async with transaction(sessions) as session:
        return (await ledger.balances(session, member_id)).valid


async def test_small_ones_are_booked_large_ones_wait_for_a_second_person(
    sessions: Sessions, settings: Settings
) -> None:
    member = await member_with_points(sessions, settings, (500, 30))
    maker, checker = await user(sessions, Role.CRM_STAFF), await user(sessions, Role.CRM_STAFF)
    agent = await user(sessions, Role.AGENT)
    async with transaction(sessions) as session:
        small = await adjustments.request_adjustment(
            session, maker, member, kind="grant", points=1000, reason="注册赠送", expires_at=EXPIRY, threshold=1000
        )
        large = await adjustments.request_adjustment(
            session, maker, member, kind="grant", points=5000, reason="投诉补偿", expires_at=EXPIRY, threshold=1000
        )
        with pytest.raises(ValueError):
            await adjustments.request_adjustment(
                session, maker, member, kind="grant", points=10, reason=" ", expires_at=None, threshold=1000
            )
    assert (small.state, large.state) == ("booked", "awaiting_approval")
    assert await balance(sessions, member) == 1500
    async with transaction(sessions) as session:
        with pytest.raises(SameApprover):
            await adjustments.decide(session, maker, large.id, approve=True)
        with pytest.raises(NotAnApprover):
            await adjustments.decide(session, agent, large.id, approve=True)

    async def approve() -> str:
        try:
            async with transaction(sessions) as session:
                await adjustments.decide(session, checker, large.id, approve=True)
            return "approved"
        except LoyaltyError:
            return "refused"

    outcomes = await asyncio.gather(*(approve() for _ in range(20)))
    assert outcomes.count("approved") == 1
    assert await balance(sessions, member) == 6500
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session) == []
        assert await adjustments.awaiting(session) == []


async def test_a_deduction_that_no_longer_fits_is_refused_then_rejected(sessions: Sessions, settings: Settings) -> None:
    member = await member_with_points(sessions, settings, (3000, 30))
    maker, checker = await user(sessions, Role.CRM_STAFF), await user(sessions, Role.ADMIN)
    async with transaction(sessions) as session:
        big = await adjustments.request_adjustment(
            session, maker, member, kind="deduct", points=2500, reason="误录积分更正", expires_at=None, threshold=1000
        )
        await ledger.spend(session, member, 1000, reason="兑换")  # the member spends meanwhile: nothing was held
    with pytest.raises(InsufficientPoints):  # outside the unit of work: it rolls back, as a route's does
        async with transaction(sessions) as session:
            await adjustments.decide(session, checker, big.id, approve=True)
    async with transaction(sessions) as session:
        rejected = await adjustments.decide(session, checker, big.id, approve=False, note="余额不足，另行处理")
    assert rejected.state == "rejected" and await balance(sessions, member) == 2000
