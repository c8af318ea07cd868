"""Redemption on both engines: escrow, maker-checker, stock taken exactly once, release on rejection,
what happens to points whose lots expire while held, and merchant voucher verification with its log."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, redemption, vouchers
from crm_core.loyalty.errors import (
    InsufficientPoints,
    NotAnApprover,
    OutOfStock,
    RedemptionAlreadyDecided,
    SameApprover,
)
from crm_core.loyalty.models import (
    CatalogueItem,
    EntryKind,
    PointsEntry,
    PointsLot,
    Redemption,
    RedemptionState,
    Shipment,
    Voucher,
    VoucherCheck,
)
from crm_core.loyalty.redemption import RedemptionPolicy
from crm_core.loyalty.voucher_codes import display
from crm_core.loyalty.vouchers import VoucherOutcome
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db.loyalty_factory import NOW, catalogue, days, member_with_points, user

pytestmark = pytest.mark.db


async def consistent(sessions: async_sessionmaker[AsyncSession], member: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        assert await redemption.reconcile_escrow(session, member) == []
        return await ledger.balances(session, member)


async def stock(sessions: async_sessionmaker[AsyncSession], code: str) -> int:
    async with transaction(sessions) as session:
        item_id = (await session.execute(select(CatalogueItem.id).where(CatalogueItem.code == code))).scalar_one()
        return await redemption.stock_left(session, item_id)


async def test_small_redemption_completes_at_once_with_unique_voucher_codes(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await catalogue(sessions)
    member = await member_with_points(sessions, settings, (1_000, 100))
    agent = await user(sessions, Role.AGENT)
    async with transaction(sessions) as session:
        result = await redemption.request_redemption(session, member, "V200", 3, who=agent, now=NOW)
    assert (result.state, result.points, result.approval_reason) == (RedemptionState.COMPLETED, 600, None)
    assert len(set(result.voucher_codes)) == 3
    assert await stock(sessions, "V200") == 7
    assert await consistent(sessions, member) == ledger.Balances(valid=400, lifetime=1_000)
    async with transaction(sessions) as session:
        stored = (await session.execute(select(Voucher).order_by(Voucher.id))).scalars().all()
        kinds = (await session.execute(select(PointsEntry.kind).order_by(PointsEntry.id))).scalars().all()
    assert {v.code for v in stored} == set(result.voucher_codes)
    assert all(v.merchant_id == ids["merchant_a"] and v.expires_at == days(30) for v in stored)
    assert kinds == [EntryKind.MANUAL_GRANT, EntryKind.SPEND]  # completed at once: no escrow


async def test_large_redemption_waits_in_escrow_for_a_second_person(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (3_000, 100))
    maker = await user(sessions, Role.CRM_STAFF)
    checker = await user(sessions, Role.CRM_STAFF)
    agent = await user(sessions, Role.AGENT)
    async with transaction(sessions) as session:
        result = await redemption.request_redemption(
            session, member, "GIFT", 2, who=maker, now=NOW, policy=RedemptionPolicy(approval_threshold=1_000)
        )
    assert (result.state, result.approval_reason) == (RedemptionState.AWAITING_APPROVAL, "more than 1000 points")
    assert await consistent(sessions, member) == ledger.Balances(valid=1_000, held=2_000, lifetime=3_000)
    assert await stock(sessions, "GIFT") == 10  # not taken until approval

    with pytest.raises(InsufficientPoints):  # held points cannot be spent twice
        async with transaction(sessions) as session:
            await ledger.spend(session, member, 1_001)
    with pytest.raises(SameApprover):
        async with transaction(sessions) as session:
            await redemption.approve(session, result.redemption_id, who=maker, now=NOW)
    with pytest.raises(NotAnApprover):
        async with transaction(sessions) as session:
            await redemption.approve(session, result.redemption_id, who=agent, now=NOW)
    async with transaction(sessions) as session:
        assert [r.id for r in await redemption.awaiting_approval(session)] == [result.redemption_id]

    async with transaction(sessions) as session:
        approved = await redemption.approve(session, result.redemption_id, who=checker, now=days(1), note="ok")
    assert approved.state == RedemptionState.COMPLETED and approved.shipment_id is not None
    with pytest.raises(RedemptionAlreadyDecided):
        async with transaction(sessions) as session:
            await redemption.approve(session, result.redemption_id, who=checker, now=days(1))
    with pytest.raises(RedemptionAlreadyDecided):
        async with transaction(sessions) as session:
            await redemption.reject(session, result.redemption_id, who=checker, now=days(1))
    assert await stock(sessions, "GIFT") == 8
    assert await consistent(sessions, member) == ledger.Balances(valid=1_000, lifetime=3_000)
    async with transaction(sessions) as session:
        row = (await session.execute(select(Redemption))).scalar_one()
        shipments = (await session.execute(select(Shipment.quantity))).scalars().all()
    assert (row.requested_by, row.decided_by, row.decided_at, row.decision_note) == (
        maker.user_id,
        checker.user_id,
        days(1),
        "ok",
    )
    assert shipments == [2]


async def test_a_flagged_member_waits_even_for_a_small_redemption(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (500, None))
    async with transaction(sessions) as session:
        await redemption.flag_member(session, member, "同一手机号多个会员")
        result = await redemption.request_redemption(session, member, "V100", who=None, now=NOW)
    assert (result.state, result.approval_reason) == (RedemptionState.AWAITING_APPROVAL, "flagged member")
    assert result.voucher_codes == []


async def test_rejection_returns_the_points_with_their_original_expiry(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (700, 10), (2_000, 200))
    maker = await user(sessions, Role.AGENT)
    checker = await user(sessions, Role.CRM_STAFF)
    async with transaction(sessions) as session:
        result = await redemption.request_redemption(session, member, "GIFT", 2, who=maker, now=NOW)
    assert await consistent(sessions, member) == ledger.Balances(valid=700, held=2_000, lifetime=2_700)
    async with transaction(sessions) as session:
        released = await redemption.reject(session, result.redemption_id, who=checker, now=days(1), note="库存不足")
    assert (released.returned, released.expired_at_release) == (2_000, 0)
    assert await consistent(sessions, member) == ledger.Balances(valid=2_700, lifetime=2_700)
    async with transaction(sessions) as session:
        restored = {
            (lot.remaining, lot.expires_at)
            for lot in (await session.execute(select(PointsLot).where(PointsLot.source == "escrow_release"))).scalars()
        }
        spent = await ledger.spend(session, member, 100)
    assert restored == {(700, days(10)), (1_300, days(200))}
    async with transaction(sessions) as session:
        first = await session.get(PointsLot, spent.allocations[0].lot_id)
    assert first is not None and first.expires_at == days(10)  # still spent nearest expiry first


async def test_points_held_past_their_expiry_expire_when_released_not_before(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (1_500, 10), (600, None))
    maker = await user(sessions, Role.AGENT)
    async with transaction(sessions) as session:
        # 2,000 points: 1,500 from the lot expiring on day 10, 500 from the lot without expiry.
        result = await redemption.request_redemption(session, member, "GIFT", 2, who=maker, now=NOW)
    async with transaction(sessions) as session:
        # The emptied lot is marked expired, but none of the held points go.
        assert await ledger.expire(session, days(11)) == ledger.ExpiryResult(lots=1, points=0)
    assert await consistent(sessions, member) == ledger.Balances(valid=100, held=2_000, lifetime=2_100)
    async with transaction(sessions) as session:
        released = await redemption.cancel(session, result.redemption_id, who=maker, now=days(11))
    assert (released.returned, released.expired_at_release) == (2_000, 1_500)
    assert await consistent(sessions, member) == ledger.Balances(valid=600, lifetime=2_100)


async def test_cancel_is_for_the_requester_or_staff(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (5_000, None))
    maker = await user(sessions, Role.AGENT)
    other = await user(sessions, Role.AGENT)
    async with transaction(sessions) as session:
        result = await redemption.request_redemption(session, member, "BIG", who=maker, now=NOW)
    with pytest.raises(NotAnApprover):
        async with transaction(sessions) as session:
            await redemption.cancel(session, result.redemption_id, who=other, now=NOW)
    async with transaction(sessions) as session:
        await redemption.cancel(session, result.redemption_id, who=maker, now=NOW)
    assert await consistent(sessions, member) == ledger.Balances(valid=5_000, lifetime=5_000)


async def test_no_stock_refuses_a_request_and_an_approval_without_losing_points(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=1)
    first = await member_with_points(sessions, settings, (5_000, None))
    second = await member_with_points(sessions, settings, (15_000, None))
    maker = await user(sessions, Role.AGENT)
    checker = await user(sessions, Role.ADMIN)
    async with transaction(sessions) as session:
        waiting = await redemption.request_redemption(session, first, "BIG", who=maker, now=NOW)
        await redemption.request_redemption(session, second, "BIG", who=maker, now=NOW)
        with pytest.raises(OutOfStock):
            await redemption.request_redemption(session, second, "BIG", 2, who=maker, now=NOW)
    async with transaction(sessions) as session:
        second_id = (await session.execute(select(Redemption.id).where(Redemption.member_id == second))).scalar_one()
        await redemption.approve(session, second_id, who=checker, now=NOW)
    with pytest.raises(OutOfStock):
        async with transaction(sessions) as session:
            await redemption.approve(session, waiting.redemption_id, who=checker, now=NOW)
    assert await consistent(sessions, first) == ledger.Balances(valid=0, held=5_000, lifetime=5_000)
    async with transaction(sessions) as session:
        await redemption.reject(session, waiting.redemption_id, who=checker, now=NOW, note="缺货")
    assert await consistent(sessions, first) == ledger.Balances(valid=5_000, lifetime=5_000)
    assert await consistent(sessions, second) == ledger.Balances(valid=10_000, lifetime=15_000)
    assert await stock(sessions, "BIG") == 0
    with pytest.raises(OutOfStock):  # completes at once, but the shelf is empty
        async with transaction(sessions) as session:
            await redemption.request_redemption(
                session, second, "BIG", who=maker, now=NOW, policy=RedemptionPolicy(approval_threshold=10_000)
            )
    assert await consistent(sessions, second) == ledger.Balances(valid=10_000, lifetime=15_000)


async def test_the_last_units_sell_even_when_spread_over_stock_shards(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=3)  # eight shards: 1, 1, 1, 0, …; no single shard holds two
    member = await member_with_points(sessions, settings, (1_000, None))
    async with transaction(sessions) as session:
        assert (
            len((await redemption.request_redemption(session, member, "V100", 2, who=None, now=NOW)).voucher_codes) == 2
        )
        await redemption.request_redemption(session, member, "V100", who=None, now=NOW)
    assert await stock(sessions, "V100") == 0
    with pytest.raises(OutOfStock):
        async with transaction(sessions) as session:
            await redemption.request_redemption(session, member, "V100", who=None, now=NOW)
    async with transaction(sessions) as session:
        item_id = (await session.execute(select(CatalogueItem.id).where(CatalogueItem.code == "V100"))).scalar_one()
        await redemption.restock(session, item_id, 10)
    assert await stock(sessions, "V100") == 10
    assert await consistent(sessions, member) == ledger.Balances(valid=700, lifetime=1_000)


# -------------------------------------------------------------------------------------------- vouchers


async def test_vouchers_verify_for_their_merchant_and_redeem_exactly_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (1_000, None))
    async with transaction(sessions) as session:
        store = (await redemption.request_redemption(session, member, "V200", who=None, now=NOW)).voucher_codes[0]
        alliance = (await redemption.request_redemption(session, member, "V100", who=None, now=NOW)).voucher_codes[0]
    typo = store[:-2] + ("0" if store[-2] != "0" else "1") + store[-1]

    async def check(action: str, code: str, merchant: str, at_days: float = 1) -> VoucherOutcome:
        async with transaction(sessions) as session:
            act = vouchers.verify if action == "verify" else vouchers.redeem
            return (await act(session, code, merchant, days(at_days))).outcome

    assert await check("verify", display(store).lower(), "M-A") == VoucherOutcome.VALID
    assert await check("verify", store, "M-B") == VoucherOutcome.WRONG_MERCHANT
    assert await check("verify", store, "M-X") == VoucherOutcome.MERCHANT_NOT_ACTIVE
    assert await check("verify", store, "NOBODY") == VoucherOutcome.MERCHANT_NOT_ACTIVE
    assert await check("verify", typo, "M-A") == VoucherOutcome.MALFORMED
    assert await check("redeem", store, "M-B") == VoucherOutcome.WRONG_MERCHANT
    assert await check("verify", store, "M-A", at_days=30) == VoucherOutcome.EXPIRED
    assert await check("redeem", store, "M-A", at_days=30) == VoucherOutcome.EXPIRED
    assert await check("redeem", store, "M-A") == VoucherOutcome.REDEEMED
    assert await check("redeem", store, "M-A") == VoucherOutcome.ALREADY_REDEEMED
    assert await check("verify", store, "M-A") == VoucherOutcome.ALREADY_REDEEMED
    # The alliance-wide voucher is good at any active alliance merchant, and never expires.
    assert await check("verify", alliance, "M-A", at_days=900) == VoucherOutcome.VALID
    assert await check("redeem", alliance, "M-B", at_days=900) == VoucherOutcome.REDEEMED
    # A well-formed code nobody issued.
    from crm_core.loyalty.voucher_codes import new_code

    assert await check("verify", new_code(), "M-A") == VoucherOutcome.UNKNOWN

    async with transaction(sessions) as session:
        log = (await session.execute(select(VoucherCheck.action, VoucherCheck.outcome).order_by(VoucherCheck.id))).all()
        redeemed = (
            await session.execute(select(Voucher.code, Voucher.redeemed_merchant_id, Voucher.redeemed_at))
        ).all()
        count = (await session.execute(select(func.count()).select_from(VoucherCheck))).scalar_one()
    assert count == 14
    assert [tuple(row) for row in log][-3:] == [
        ("verify", "valid"),
        ("redeem", "redeemed"),
        ("verify", "unknown"),
    ]
    assert {code: at for code, _, at in redeemed} == {store: days(1), alliance: days(900)}
