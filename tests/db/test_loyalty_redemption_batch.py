"""Batched redemptions on both engines: each request gets what `request_redemption` would give it in
arrival order (vouchers, gifts, refusals, escrow for large or flagged ones), nothing is overspent under
50 concurrent requests, and a failed batch is retried request by request."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, redemption
from crm_core.loyalty.errors import InsufficientPoints, ItemNotAvailable, OutOfStock
from crm_core.loyalty.models import CatalogueStock, PointsLot, RedemptionState, Shipment, Voucher
from crm_core.loyalty.redemption import RedemptionPolicy
from crm_core.loyalty.redemption_batch import RedemptionBatcher
from crm_core.settings import Settings
from tests.db import factories
from tests.db.loyalty_factory import NOW, catalogue, member_with_points

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]
POLICY = RedemptionPolicy(approval_threshold=1_000)


async def consistent(sessions: Sessions, member: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        assert await redemption.reconcile_escrow(session, member) == []
        return await ledger.balances(session, member)


async def count(sessions: Sessions, model: type[object], **where: object) -> int:
    async with transaction(sessions) as session:
        stmt = select(func.count()).select_from(model)  # type: ignore[arg-type]
        for column, value in where.items():
            stmt = stmt.where(getattr(model, column) == value)
        return int((await session.execute(stmt)).scalar_one())


async def stock(sessions: Sessions, item_id: int) -> int:
    async with transaction(sessions) as session:
        return await redemption.stock_left(session, item_id)


async def test_one_batch_decides_each_request_as_the_single_path_would(sessions: Sessions, settings: Settings) -> None:
    ids = await catalogue(sessions, stock=4)
    rich = await member_with_points(sessions, settings, (900, 30), (1_300, None))
    poor = await member_with_points(sessions, settings, (150, None))
    flagged = await member_with_points(sessions, settings, (2_000, None))
    async with transaction(sessions) as session:
        await redemption.flag_member(session, flagged, "共用手机号")
    batcher = RedemptionBatcher(sessions, lanes=1)  # one batch: arrival order is the order of decision

    def ask(member: int, item: str, quantity: int = 1) -> asyncio.Task[redemption.RedemptionResult]:
        return asyncio.ensure_future(batcher.redeem(member, item, quantity, who=None, now=NOW, policy=POLICY))

    requests = [
        ask(rich, "V100"),  # voucher, 100 from the lot expiring first
        ask(poor, "V100"),
        ask(poor, "V100"),  # 50 left: refused
        ask(rich, "V100", 2),  # the last two of the four in stock
        ask(rich, "V100"),  # out of stock
        ask(rich, "GIFT"),  # a 1,000-point gift, shipped: 100 + 200 + 1,000 from 900 then 1,300
        ask(rich, "NOPE"),
        ask(flagged, "V200"),  # flagged: waits for a second person, points held
        ask(rich, "BIG"),  # 5,000 > 900 left: refused
    ]
    outcomes = await asyncio.gather(*requests, return_exceptions=True)
    assert batcher.batches == 1 and batcher.fallbacks == 0
    kinds = [type(o).__name__ if isinstance(o, Exception) else o.state for o in outcomes]  # type: ignore[union-attr]
    assert kinds == [
        RedemptionState.COMPLETED,
        RedemptionState.COMPLETED,
        InsufficientPoints.__name__,
        RedemptionState.COMPLETED,
        OutOfStock.__name__,
        RedemptionState.COMPLETED,
        ItemNotAvailable.__name__,
        RedemptionState.AWAITING_APPROVAL,
        InsufficientPoints.__name__,
    ]
    first, _, _, pair, _, gift, _, waiting, _ = outcomes
    assert isinstance(first, redemption.RedemptionResult) and len(first.voucher_codes) == 1
    assert isinstance(pair, redemption.RedemptionResult) and len(set(pair.voucher_codes)) == 2
    assert isinstance(gift, redemption.RedemptionResult) and gift.shipment_id is not None and gift.points == 1_000
    assert isinstance(waiting, redemption.RedemptionResult) and waiting.approval_reason == "flagged member"
    assert await consistent(sessions, rich) == ledger.Balances(valid=900, lifetime=2_200)
    assert (await consistent(sessions, poor)).valid == 50
    assert (await consistent(sessions, flagged)).held == 200
    assert await stock(sessions, ids["V100"]) == 0 and await stock(sessions, ids["GIFT"]) == 3
    assert await count(sessions, Voucher, member_id=rich) == 3 and await count(sessions, Shipment) == 1
    # Points came from the lot nearest expiry first: the 900 lot is used up before the undated one.
    async with transaction(sessions) as session:
        lots = select(PointsLot.amount, PointsLot.remaining).where(PointsLot.member_id == rich).order_by(PointsLot.id)
        assert [(amount, left) for amount, left in await session.execute(lots)] == [(900, 0), (1_300, 900)]


async def test_fifty_concurrent_batched_redemptions_never_overspend(sessions: Sessions, settings: Settings) -> None:
    await catalogue(sessions, stock=1_000)
    member = await member_with_points(sessions, settings, (1_000, 10), (1_000, None))  # room for 20 vouchers
    batchers = [RedemptionBatcher(sessions, max_batch=7), RedemptionBatcher(sessions, max_batch=7)]  # two servers
    outcomes = await asyncio.gather(
        *(batchers[n % 2].redeem(member, "V100", who=None, now=NOW) for n in range(50)), return_exceptions=True
    )
    done = [o for o in outcomes if isinstance(o, redemption.RedemptionResult)]
    refused = [o for o in outcomes if isinstance(o, InsufficientPoints)]
    assert (len(done), len(refused)) == (20, 30), outcomes
    assert await consistent(sessions, member) == ledger.Balances(valid=0, lifetime=2_000)
    assert await count(sessions, Voucher) == 20
    assert sum(b.batches for b in batchers) >= 8  # 25 each, at most 7 a batch


async def test_a_failed_batch_is_booked_request_by_request(sessions: Sessions, settings: Settings) -> None:
    await catalogue(sessions)
    member = await member_with_points(sessions, settings, (500, None))
    batcher = RedemptionBatcher(factories.FlakySessions(sessions, failures=1))  # type: ignore[arg-type]
    outcomes = await asyncio.gather(
        *(batcher.redeem(member, "V100", who=None, now=NOW) for _ in range(3)),
        batcher.redeem(member, "V100", 0, who=None, now=NOW),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["RedemptionResult"] * 3 + ["ValueError"]
    assert batcher.fallbacks == 1
    assert (await consistent(sessions, member)).valid == 200
    async with transaction(sessions) as session:
        shards = (await session.execute(select(func.sum(CatalogueStock.stock)))).scalar_one()
    assert shards == 4 * 10 - 3


@pytest.mark.parametrize("lanes", [1, 2])
async def test_requests_that_arrive_as_a_batch_ends_are_booked(
    sessions: Sessions, settings: Settings, lanes: int
) -> None:
    """Workers that ask again the moment their answer comes (a closed loop) queue while the lane that
    answered them is finishing: a lane must still be there for them (this once hung for ever)."""
    await catalogue(sessions, stock=1_000)
    members = [await member_with_points(sessions, settings, (10_000, None)) for _ in range(5)]
    batcher = RedemptionBatcher(sessions, lanes=lanes)

    async def worker(member: int) -> int:
        for _ in range(6):
            await batcher.redeem(member, "V100", who=None, now=NOW)
        return member

    assert await asyncio.wait_for(asyncio.gather(*(worker(m) for m in members * 2)), timeout=60) == members * 2
    for member in members:
        assert (await consistent(sessions, member)).valid == 10_000 - 12 * 100
    assert batcher.batches >= 6 and batcher._lanes_open == 0
