"""The points ledger on both engines: spending order, returns, expiry, invariants and concurrent spends."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger
from crm_core.loyalty.errors import InsufficientPoints, LotNotPending
from crm_core.loyalty.models import EntryKind, PointsAllocation, PointsEntry, PointsLot
from crm_core.loyalty.rules import SHANGHAI
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_mobiles = itertools.count(13800000000)


def days(n: int) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


async def new_member(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    joined = await factories.member(sessions, settings, mobile=str(next(_mobiles)))
    return joined.member_id


async def assert_consistent(sessions: async_sessionmaker[AsyncSession], member_id: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member_id) == []
        return await ledger.balances(session, member_id)


async def test_spending_takes_lots_nearest_expiry_first_and_records_allocations(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        late = await ledger.manual_grant(session, member, 50, name="推荐客户赠送", expires_at=days(300))
        never = await ledger.manual_grant(session, member, 50, name="永久", expires_at=None)
        soon = await ledger.earn(session, member, 30, earned_at=NOW, expires_at=days(100), transaction_ref="S1")
        soon_too = await ledger.earn(session, member, 20, earned_at=NOW, expires_at=days(100), transaction_ref="S2")
    async with transaction(sessions) as session:
        result = await ledger.spend(session, member, 70, ref="积分兑换-三包服务")
    assert [(a.lot_id, a.amount) for a in result.allocations] == [(soon, 30), (soon_too, 20), (late, 20)]
    async with transaction(sessions) as session:
        stored = (
            await session.execute(
                select(PointsAllocation.lot_id, PointsAllocation.amount)
                .where(PointsAllocation.entry_id == result.entry_id)
                .order_by(PointsAllocation.id)
            )
        ).all()
        assert [tuple(row) for row in stored] == [(soon, 30), (soon_too, 20), (late, 20)]
        remaining = {lot_id: left for lot_id, left in await session.execute(select(PointsLot.id, PointsLot.remaining))}
        assert remaining == {late: 30, never: 50, soon: 0, soon_too: 0}
    balances = await assert_consistent(sessions, member)
    assert balances == ledger.Balances(valid=80, lifetime=150, qualifying=50)


async def test_overspending_raises_and_changes_nothing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 40, earned_at=NOW, expires_at=None, transaction_ref="S1")
    with pytest.raises(InsufficientPoints) as raised:
        async with transaction(sessions) as session:
            await ledger.spend(session, member, 41)
    assert raised.value.available == 40
    assert (await assert_consistent(sessions, member)).valid == 40


async def test_pending_points_cannot_be_spent_until_verified(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        lot = await ledger.earn(
            session, member, 500, earned_at=NOW, expires_at=None, transaction_ref="购房-001", pending=True
        )
    assert (await assert_consistent(sessions, member)) == ledger.Balances(pending=500)
    with pytest.raises(InsufficientPoints):
        async with transaction(sessions) as session:
            await ledger.spend(session, member, 1)
    async with transaction(sessions) as session:
        await ledger.verify(session, lot)
    assert (await assert_consistent(sessions, member)) == ledger.Balances(valid=500, lifetime=500, qualifying=500)
    with pytest.raises(LotNotPending):
        async with transaction(sessions) as session:
            await ledger.verify(session, lot)


async def test_return_after_partial_spend_takes_other_lots_then_records_debt(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 100, earned_at=NOW, expires_at=days(30), transaction_ref="P1")
        await ledger.manual_grant(session, member, 30, name="注册赠送", expires_at=days(200))
        await ledger.spend(session, member, 80)  # all from P1's lot, which expires first
    async with transaction(sessions) as session:
        result = await ledger.refund(session, member, "P1", reason="退货")
    assert (result.clawed_back, result.recovered_from_other_lots, result.debt) == (20, 30, 50)
    balances = await assert_consistent(sessions, member)
    assert balances == ledger.Balances(valid=0, lifetime=30, qualifying=0, debt=50)

    async with transaction(sessions) as session:
        again = await ledger.refund(session, member, "P1")
    assert again == ledger.RefundResult(entry_id=None, clawed_back=0, recovered_from_other_lots=0, debt=0)

    async with transaction(sessions) as session:
        await ledger.settle_debt(session, member, 50, reason="退还礼品")
    assert (await assert_consistent(sessions, member)).debt == 0


async def test_return_without_spending_only_claws_back_its_own_lot(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 9, earned_at=NOW, expires_at=None, transaction_ref="P1")
        await ledger.earn(session, member, 6, earned_at=NOW, expires_at=None, transaction_ref="P2")
        await ledger.refund(session, member, "P1")
    assert await assert_consistent(sessions, member) == ledger.Balances(valid=6, lifetime=6, qualifying=6)


async def test_return_does_not_charge_points_that_already_expired(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 100, earned_at=NOW, expires_at=days(10), transaction_ref="P1")
        await ledger.manual_grant(session, member, 100, name="赠送", expires_at=None)
        await ledger.spend(session, member, 40)  # from P1
        await ledger.expire(session, days(10))  # P1's remaining 60 expire
    async with transaction(sessions) as session:
        result = await ledger.refund(session, member, "P1")
    assert (result.clawed_back, result.recovered_from_other_lots, result.debt) == (0, 40, 0)
    assert await assert_consistent(sessions, member) == ledger.Balances(valid=60, lifetime=100)


async def test_expiry_job_is_idempotent_and_follows_the_seed_grant_expiry(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    granted = dt.datetime(2009, 3, 1, tzinfo=SHANGHAI)
    end_of_2009 = dt.datetime(2010, 1, 1, tzinfo=SHANGHAI)  # "积分到期日 2009-12-31": valid through that day
    async with transaction(sessions) as session:
        await ledger.manual_grant(session, member, 1_000, name="注册赠送", granted_at=granted, expires_at=end_of_2009)
        await ledger.manual_grant(
            session,
            member,
            2_000,
            name="推荐客户赠送",
            granted_at=granted,
            expires_at=dt.datetime(2011, 1, 1, tzinfo=SHANGHAI),
        )
        await ledger.spend(session, member, 300)  # from 注册赠送, which expires first
    async with transaction(sessions) as session:
        assert await ledger.expire(session, end_of_2009 - dt.timedelta(seconds=1)) == ledger.ExpiryResult(0, 0)
        assert await ledger.expire(session, end_of_2009) == ledger.ExpiryResult(lots=1, points=700)

    async def entry_count() -> int:
        async with transaction(sessions) as session:
            return int((await session.execute(select(func.count()).select_from(PointsEntry))).scalar_one())

    before = await entry_count()
    async with transaction(sessions) as session:
        assert await ledger.expire(session, end_of_2009 + dt.timedelta(days=1)) == ledger.ExpiryResult(0, 0)
    assert await entry_count() == before
    assert await assert_consistent(sessions, member) == ledger.Balances(valid=2_000, lifetime=3_000)


async def test_manual_deduction_needs_a_reason_and_is_journaled(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.manual_grant(session, member, 100, name="赠送", expires_at=None)
        with pytest.raises(ValueError):
            await ledger.manual_deduct(session, member, 10, reason=" ")
        result = await ledger.manual_deduct(session, member, 10, reason="重复录入")
        kind = (await session.execute(select(PointsEntry.kind).where(PointsEntry.id == result.entry_id))).scalar()
    assert kind == EntryKind.MANUAL_DEDUCT
    assert (await assert_consistent(sessions, member)).valid == 90


async def test_reconcile_reports_a_tampered_balance(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    from sqlalchemy import update

    from crm_core.loyalty.models import PointsAccount

    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        await ledger.earn(session, member, 10, earned_at=NOW, expires_at=None)
        await session.execute(update(PointsAccount).values(valid=PointsAccount.valid + 5))
    async with transaction(sessions) as session:
        differences = await ledger.reconcile(session)
    assert {d.quantity for d in differences} == {"valid (lots)", "valid (entries)"}
    assert all((d.recorded, d.computed) == (15, 10) for d in differences)


# ------------------------------------------------------------------------------------- property test

operation = st.one_of(
    st.tuples(
        st.just("earn"),
        st.integers(1, 50),
        st.booleans(),
        st.sampled_from([None, -1, 10, 20]),
    ),
    st.tuples(st.just("verify"), st.integers(0, 5)),
    st.tuples(st.just("spend"), st.integers(1, 60)),
    st.tuples(st.just("refund"), st.integers(0, 5)),
    st.tuples(
        st.just("expire"),
    ),
    st.tuples(st.just("grant"), st.integers(1, 50), st.sampled_from([None, -1, 15])),
    st.tuples(st.just("deduct"), st.integers(1, 30)),
)


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=10))
async def test_random_operations_keep_the_ledger_balanced(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, operations: list[tuple[object, ...]]
) -> None:
    """Balances equal the lots' remainders and the journal's sums after any sequence; points appear and
    disappear only through the operation that says so; a refused spend changes nothing."""
    member = await new_member(sessions, settings)  # a fresh member per example: no wipe needed
    refs: list[str] = []
    pending_lots: list[int] = []
    for step, op in enumerate(operations):
        before = await assert_consistent(sessions, member)
        held = before.valid + before.pending
        async with transaction(sessions) as session:
            match op:
                case ("earn", int(points), bool(pending), offset):
                    ref = f"T{step}"
                    lot = await ledger.earn(
                        session,
                        member,
                        points,
                        earned_at=NOW,
                        expires_at=None if offset is None else days(int(offset)),  # type: ignore[call-overload]
                        transaction_ref=ref,
                        pending=pending,
                    )
                    refs.append(ref)
                    if pending:
                        pending_lots.append(lot)
                    expected_held, expected_debt = held + points, before.debt
                case ("verify", int(index)):
                    if pending_lots:
                        lot = pending_lots.pop(index % len(pending_lots))
                        with contextlib.suppress(LotNotPending):  # clawed back by a refund meanwhile
                            await ledger.verify(session, lot)
                    expected_held, expected_debt = held, before.debt
                case ("spend", int(points)) | ("deduct", int(points)):
                    try:
                        if op[0] == "spend":
                            await ledger.spend(session, member, points)
                        else:
                            await ledger.manual_deduct(session, member, points, reason="调整")
                    except InsufficientPoints:
                        assert points > before.valid
                        points = 0
                    expected_held, expected_debt = held - points, before.debt
                case ("refund", int(index)):
                    if refs:
                        result = await ledger.refund(session, member, refs[index % len(refs)])
                        taken = result.clawed_back + result.recovered_from_other_lots
                        expected_held, expected_debt = held - taken, before.debt + result.debt
                    else:
                        expected_held, expected_debt = held, before.debt
                case ("expire",):
                    expired = await ledger.expire(session, NOW, member_id=member)
                    expected_held, expected_debt = held - expired.points, before.debt
                case ("grant", int(points), offset):
                    await ledger.manual_grant(
                        session,
                        member,
                        points,
                        name="赠送",
                        expires_at=None if offset is None else days(int(offset)),  # type: ignore[call-overload]
                    )
                    expected_held, expected_debt = held + points, before.debt
                case _:
                    raise AssertionError(op)
        after = await assert_consistent(sessions, member)
        assert after.valid + after.pending == expected_held, op
        assert after.debt == expected_debt, op
        assert min(after.valid, after.pending, after.debt, after.lifetime, after.qualifying) >= 0


# ---------------------------------------------------------------------------------------- concurrency


async def test_fifty_concurrent_spends_never_overspend(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, db_url: str
) -> None:
    # On PostgreSQL the account row lock is under test; on SQLite BEGIN IMMEDIATE serialises the writers.
    member = await new_member(sessions, settings)
    async with transaction(sessions) as session:
        for expiry in (10, 20, 30, 40):
            await ledger.manual_grant(session, member, 250, name="赠送", expires_at=days(expiry))

    async def spend_30() -> int:
        try:
            async with transaction(sessions) as session:
                await ledger.spend(session, member, 30)
            return 30
        except InsufficientPoints:
            return 0

    spent = await asyncio.gather(*(spend_30() for _ in range(50)))
    assert sum(spent) == 990  # 33 spends of 30 fit in 1,000; the other 17 were refused
    balances = await assert_consistent(sessions, member)
    assert balances.valid == 1_000 - sum(spent) == 10
