"""Redemption under concurrency (the point of these tests is PostgreSQL's row locks and conditional
UPDATEs; on SQLite BEGIN IMMEDIATE serialises the writers and the same assertions must hold):
50 requests against one member never overspend, 50 redeems of one voucher use it once, 50 approvals
of one request approve it once and take stock once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, redemption, vouchers
from crm_core.loyalty.errors import InsufficientPoints, LoyaltyError, RedemptionAlreadyDecided
from crm_core.loyalty.models import CatalogueItem, Redemption, RedemptionState, Shipment, Voucher, VoucherCheck
from crm_core.loyalty.redemption import RedemptionPolicy
from crm_core.loyalty.vouchers import VoucherOutcome
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db.loyalty_factory import NOW, catalogue, member_with_points, user

pytestmark = pytest.mark.db

POLICY = RedemptionPolicy(approval_threshold=500)


async def stock(sessions: async_sessionmaker[AsyncSession], code: str) -> int:
    async with transaction(sessions) as session:
        item_id = (await session.execute(select(CatalogueItem.id).where(CatalogueItem.code == code))).scalar_one()
        return await redemption.stock_left(session, item_id)


async def test_fifty_concurrent_redemptions_never_overspend(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=100)
    member = await member_with_points(sessions, settings, (1_000, 30), (1_000, 60), (1_050, None))
    agent = await user(sessions, Role.AGENT)

    async def request(n: int) -> tuple[str, int]:
        item = "GIFT" if n % 5 == 0 else "V100"  # 1,000 waits for approval; 100 completes at once
        try:
            async with transaction(sessions) as session:
                result = await redemption.request_redemption(session, member, item, who=agent, now=NOW, policy=POLICY)
            return result.state, result.points
        except InsufficientPoints:
            return "refused", 0

    outcomes = await asyncio.gather(*(request(n) for n in range(50)))
    completed = sum(points for state, points in outcomes if state == RedemptionState.COMPLETED)
    waiting = sum(points for state, points in outcomes if state == RedemptionState.AWAITING_APPROVAL)
    assert 0 < completed + waiting <= 3_050
    assert 3_050 - (completed + waiting) < 100  # only refused when not even the cheapest fits
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        assert await redemption.reconcile_escrow(session, member) == []
        balances = await ledger.balances(session, member)
        issued = (await session.execute(select(func.count()).select_from(Voucher))).scalar_one()
    assert (balances.valid, balances.held) == (3_050 - completed - waiting, waiting)
    completed_count = sum(1 for state, _ in outcomes if state == RedemptionState.COMPLETED)
    assert issued == completed_count == 100 - await stock(sessions, "V100")


async def test_fifty_concurrent_redeems_of_one_voucher_use_it_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (200, None))
    async with transaction(sessions) as session:
        code = (await redemption.request_redemption(session, member, "V200", who=None, now=NOW)).voucher_codes[0]

    async def attempt(n: int) -> tuple[str, VoucherOutcome]:
        async with transaction(sessions) as session:
            if n % 10 == 0:
                return "verify", (await vouchers.verify(session, code, "M-A", NOW)).outcome
            return "redeem", (await vouchers.redeem(session, code, "M-A", NOW)).outcome

    outcomes = Counter(await asyncio.gather(*(attempt(n) for n in range(50))))
    assert outcomes[("redeem", VoucherOutcome.REDEEMED)] == 1
    assert outcomes[("redeem", VoucherOutcome.ALREADY_REDEEMED)] == 44
    verified = outcomes[("verify", VoucherOutcome.VALID)] + outcomes[("verify", VoucherOutcome.ALREADY_REDEEMED)]
    assert verified == 5
    async with transaction(sessions) as session:
        logged = (await session.execute(select(func.count()).select_from(VoucherCheck))).scalar_one()
        states = (await session.execute(select(Voucher.state))).scalars().all()
    assert logged == 50
    assert states == ["redeemed"]


async def test_fifty_concurrent_approvals_approve_once_and_take_stock_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=5)
    member = await member_with_points(sessions, settings, (5_000, None))
    maker = await user(sessions, Role.AGENT)
    checkers = [await user(sessions, Role.CRM_STAFF) for _ in range(5)]
    async with transaction(sessions) as session:
        waiting = await redemption.request_redemption(session, member, "BIG", who=maker, now=NOW, policy=POLICY)

    async def decide(n: int) -> str:
        who = checkers[n % len(checkers)]
        try:
            async with transaction(sessions) as session:
                if n % 7 == 3:
                    await redemption.reject(session, waiting.redemption_id, who=who, now=NOW)
                    return "rejected"
                await redemption.approve(session, waiting.redemption_id, who=who, now=NOW)
                return "approved"
        except RedemptionAlreadyDecided:
            return "too late"

    outcomes = Counter(await asyncio.gather(*(decide(n) for n in range(50))))
    assert outcomes["too late"] == 49
    async with transaction(sessions) as session:
        state = (await session.execute(select(Redemption.state))).scalar_one()
        shipments = (await session.execute(select(func.count()).select_from(Shipment))).scalar_one()
        assert await ledger.reconcile(session, member) == []
        assert await redemption.reconcile_escrow(session, member) == []
        balances = await ledger.balances(session, member)
    if outcomes["approved"]:
        assert (state, shipments, await stock(sessions, "BIG"), balances.valid) == ("completed", 1, 4, 0)
    else:
        assert (state, shipments, await stock(sessions, "BIG"), balances.valid) == ("rejected", 0, 5, 5_000)
    assert balances.held == 0
    assert issubclass(RedemptionAlreadyDecided, LoyaltyError)
