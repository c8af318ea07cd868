"""Property test over random sequences of every points operation, escrow included: after each step the
balances equal the lots and the journal, the escrow equals the open requests, and points appear or
disappear only through the operation that says so (earn, grant, spend, deduct, whole or partial refund,
expiry, approval)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, redemption
from crm_core.loyalty.errors import InsufficientPoints, LotNotPending, RedemptionAlreadyDecided
from crm_core.loyalty.models import RedemptionState
from crm_core.loyalty.redemption import RedemptionPolicy
from crm_core.security.policy import Principal, Role
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_mobiles = itertools.count(13600000000)
POLICY = RedemptionPolicy(approval_threshold=30)  # items cost 10..60: some complete, some wait


def days(n: int) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


operation = st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 60), st.booleans(), st.sampled_from([None, -1, 10, 20])),
    st.tuples(st.just("verify"), st.integers(0, 5)),
    st.tuples(st.just("spend"), st.integers(1, 60)),
    st.tuples(st.just("refund"), st.integers(0, 5), st.sampled_from([None, 1, 5, 20])),  # None: all that is left
    st.tuples(st.just("expire"), st.sampled_from([0, 15, 30])),
    st.tuples(st.just("grant"), st.integers(1, 60), st.sampled_from([None, -1, 15])),
    st.tuples(st.just("deduct"), st.integers(1, 30)),
    st.tuples(st.just("redeem"), st.sampled_from(["P10", "P25", "P40", "P60"]), st.integers(1, 2)),
    st.tuples(st.just("approve"), st.integers(0, 5)),
    st.tuples(st.just("reject"), st.integers(0, 5), st.sampled_from([0, 15, 30])),
)


async def catalogue_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        if await session.get(redemption.CatalogueItem, 1) is not None:
            return
        for points in (10, 25, 40, 60):
            await redemption.add_item(
                session, f"P{points}", f"{points}分礼品", kind=redemption.ItemKind.GIFT, points=points, stock=10_000
            )


async def staff(sessions: async_sessionmaker[AsyncSession], cache: dict[str, Principal]) -> tuple[Principal, Principal]:
    if not cache:
        cache["maker"] = await factories.principal(sessions, "maker", Role.AGENT)
        cache["checker"] = await factories.principal(sessions, "checker", Role.CRM_STAFF)
    return cache["maker"], cache["checker"]


async def check(sessions: async_sessionmaker[AsyncSession], member: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        assert await redemption.reconcile_escrow(session, member) == []
        return await ledger.balances(session, member)


@pytest.fixture
def principals() -> dict[str, Principal]:
    return {}


@hypothesis_settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=12))
async def test_random_operations_with_escrow_keep_the_ledger_balanced(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    principals: dict[str, Principal],
    operations: list[tuple[object, ...]],
) -> None:
    await catalogue_once(sessions)
    maker, checker = await staff(sessions, principals)
    member = (await factories.member(sessions, settings, mobile=str(next(_mobiles)))).member_id
    refs: list[str] = []
    pending_lots: list[int] = []
    waiting: list[int] = []
    for step, op in enumerate(operations):
        before = await check(sessions, member)
        total = before.valid + before.pending + before.held  # every point the member still has
        change, debt = 0, 0
        async with transaction(sessions) as session:
            match op:
                case ("earn", int(points), bool(pending), offset):
                    ref = f"T{step}"
                    expires = None if offset is None else days(int(str(offset)))
                    lot = await ledger.earn(
                        session, member, points, earned_at=NOW, expires_at=expires, transaction_ref=ref, pending=pending
                    )
                    refs.append(ref)
                    if pending:
                        pending_lots.append(lot)
                    change = points
                case ("verify", int(index)):
                    if pending_lots:
                        with contextlib.suppress(LotNotPending):
                            await ledger.verify(session, pending_lots.pop(index % len(pending_lots)))
                case ("spend", int(points)) | ("deduct", int(points)):
                    try:
                        if op[0] == "spend":
                            await ledger.spend(session, member, points)
                        else:
                            await ledger.manual_deduct(session, member, points, reason="调整")
                        change = -points
                    except InsufficientPoints:
                        assert points > before.valid
                case ("refund", int(index), part):
                    if refs:
                        points = None if part is None else int(str(part))
                        result = await ledger.refund(session, member, refs[index % len(refs)], points=points)
                        change = -(result.clawed_back + result.recovered_from_other_lots)
                        debt = result.debt
                case ("expire", int(day)):
                    change = -(await ledger.expire(session, days(day), member_id=member)).points
                case ("grant", int(points), offset):
                    expires = None if offset is None else days(int(str(offset)))
                    await ledger.manual_grant(session, member, points, name="赠送", expires_at=expires)
                    change = points
                case ("redeem", str(item), int(quantity)):
                    try:
                        result = await redemption.request_redemption(
                            session, member, item, quantity, who=maker, now=NOW, policy=POLICY
                        )
                    except InsufficientPoints:
                        assert int(item[1:]) * quantity > before.valid
                    else:
                        if result.state == RedemptionState.AWAITING_APPROVAL:
                            waiting.append(result.redemption_id)
                        else:
                            change = -result.points
                case ("approve", int(index)):
                    if waiting:
                        approved = await redemption.approve(
                            session, waiting.pop(index % len(waiting)), who=checker, now=NOW
                        )
                        change = -approved.points
                case ("reject", int(index), int(day)):
                    if waiting:
                        released = await redemption.reject(
                            session, waiting.pop(index % len(waiting)), who=checker, now=days(day)
                        )
                        change = -released.expired_at_release
                case _:
                    raise AssertionError(op)
        after = await check(sessions, member)
        assert after.valid + after.pending + after.held == total + change, op
        assert after.debt == before.debt + debt, op
        assert min(after.valid, after.pending, after.held, after.debt, after.lifetime, after.qualifying) >= 0
    # Whatever is still waiting can be decided once, and only once.
    for redemption_id in waiting:
        async with transaction(sessions) as session:
            await redemption.reject(session, redemption_id, who=checker, now=NOW)
        with pytest.raises(RedemptionAlreadyDecided):
            async with transaction(sessions) as session:
                await redemption.approve(session, redemption_id, who=checker, now=NOW)
    assert (await check(sessions, member)).held == 0
