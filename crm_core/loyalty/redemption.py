"""Redemption: a member turns points into a catalogue gift or voucher, with escrow and maker-checker.

Flow (seed 000 "approval workflow for redemptions"; its details are ours):

1. `request_redemption` locks the member's points account, checks the item and its stock, and moves the
   points into escrow (`ledger.hold`): they leave the lots at once, so they are neither spendable twice
   nor able to expire while the request waits (see ledger.py for what a release does with expired lots).
2. A request above `RedemptionPolicy.approval_threshold` points, or any request for a flagged member,
   waits for approval; a smaller one completes in the same transaction as a plain spend (nothing to
   escrow).
3. `approve` is a conditional ``UPDATE … WHERE state = 'awaiting_approval' AND requested_by <> :approver``:
   only one of any number of concurrent approvals matches, and never the requester's own (maker-checker).
   Completion takes the stock with a guarded ``UPDATE … SET stock = stock - :n WHERE stock >= :n`` (so it
   happens exactly once, and never below zero), turns the hold into a spend and issues voucher codes or a
   gift shipment.
4. `reject` (staff) and `cancel` (the requester or staff) are the same conditional UPDATE to a final state
   and give the escrow back (`ledger.release_held`).

Stock is checked at request time but taken only at completion: a request that waits does not reserve
stock, and an approval that finds none left fails (the approver then rejects, releasing the points).
Lock order, everywhere: redemption row → points account → stock shards (in shard order when several),
so none of these deadlock. Stock is split over `STOCK_SHARDS` rows per item: with one row, every
redemption of a popular voucher queued on that row's lock until the holder committed (the bench
measured concurrent throughput *below* sequential); see `_take_stock`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import insert_for
from crm_core.loyalty import ledger
from crm_core.loyalty.errors import (
    InsufficientPoints,
    ItemNotAvailable,
    NotAnApprover,
    OutOfStock,
    RedemptionAlreadyDecided,
    RedemptionNotFound,
    SameApprover,
)
from crm_core.loyalty.models import (
    CatalogueItem,
    CatalogueStock,
    ItemKind,
    MemberFlag,
    Merchant,
    MerchantStatus,
    PointsAccount,
    Redemption,
    RedemptionState,
    Shipment,
    Voucher,
)
from crm_core.loyalty.voucher_codes import new_code
from crm_core.security.policy import Principal, Role

APPROVER_ROLES = frozenset({Role.CRM_STAFF, Role.ADMIN})
STOCK_SHARDS = 8


@dataclass(frozen=True, slots=True)
class RedemptionPolicy:
    """Requests for more than `approval_threshold` points need a second person."""

    approval_threshold: int = 1_000


@dataclass(frozen=True, slots=True)
class RedemptionResult:
    redemption_id: int
    state: RedemptionState
    points: int
    approval_reason: str | None = None
    voucher_codes: list[str] = field(default_factory=list)
    shipment_id: int | None = None


# -------------------------------------------------------------------------------------------- catalogue


async def add_merchant(
    session: AsyncSession,
    code: str,
    name: str,
    *,
    status: MerchantStatus = MerchantStatus.ACTIVE,
    offer_terms: str | None = None,
) -> int:
    merchant = Merchant(code=code, name=name, status=status, offer_terms=offer_terms)
    session.add(merchant)
    await session.flush()
    return merchant.id


async def set_merchant_status(session: AsyncSession, merchant_id: int, status: MerchantStatus) -> None:
    await session.execute(
        update(Merchant)
        .where(Merchant.id == merchant_id)
        .values(status=status)
        .execution_options(synchronize_session=False)
    )


async def add_item(
    session: AsyncSession,
    code: str,
    name: str,
    *,
    kind: ItemKind,
    points: int,
    stock: int,
    merchant_id: int | None = None,
    voucher_valid_days: int | None = None,
    face_value_fen: int | None = None,
    stock_shards: int = STOCK_SHARDS,
) -> int:
    """Add a gift or voucher to the catalogue; a voucher without a merchant is good at every active one."""
    if stock < 0 or stock_shards < 1:
        raise ValueError("stock must be >= 0 over at least one shard")
    item = CatalogueItem(
        code=code,
        name=name,
        kind=kind,
        points=points,
        merchant_id=merchant_id,
        voucher_valid_days=voucher_valid_days,
        face_value_fen=face_value_fen,
    )
    session.add(item)
    await session.flush()
    for shard in range(stock_shards):
        share = stock // stock_shards + (1 if shard < stock % stock_shards else 0)
        session.add(CatalogueStock(item_id=item.id, shard=shard, stock=share))
    await session.flush()
    return item.id


async def restock(session: AsyncSession, item_id: int, quantity: int) -> None:
    """Add stock, spread over the item's shards."""
    if quantity <= 0:
        raise ValueError("restock a positive quantity")
    shards = list(
        (
            await session.execute(
                select(CatalogueStock.shard).where(CatalogueStock.item_id == item_id).order_by(CatalogueStock.shard)
            )
        ).scalars()
    )
    for index, shard in enumerate(shards):
        share = quantity // len(shards) + (1 if index < quantity % len(shards) else 0)
        if share:
            await session.execute(
                update(CatalogueStock)
                .where(CatalogueStock.item_id == item_id, CatalogueStock.shard == shard)
                .values(stock=CatalogueStock.stock + share)
                .execution_options(synchronize_session=False)
            )


async def stock_left(session: AsyncSession, item_id: int) -> int:
    total = await session.execute(
        select(func.coalesce(func.sum(CatalogueStock.stock), 0)).where(CatalogueStock.item_id == item_id)
    )
    return int(total.scalar_one())


async def flag_member(session: AsyncSession, member_id: int, reason: str, *, who: Principal | None = None) -> None:
    """Every later redemption of this member waits for a second person."""
    values = {"reason": reason, "flagged_by": ledger.user_id_of(who)}
    stmt = insert_for(session, MemberFlag.__table__).values(member_id=member_id, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["member_id"], set_=values))


# ------------------------------------------------------------------------------------------- requesting


async def _item(session: AsyncSession, item_code: str) -> CatalogueItem:
    item = (
        await session.execute(
            select(CatalogueItem)
            .where(CatalogueItem.code == item_code, CatalogueItem.active.is_(True))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if item is None:
        raise ItemNotAvailable(item_code)
    return item


async def request_redemption(
    session: AsyncSession,
    member_id: int,
    item_code: str,
    quantity: int = 1,
    *,
    who: Principal | None,
    now: dt.datetime,
    policy: RedemptionPolicy = RedemptionPolicy(),
) -> RedemptionResult:
    """Hold the points for `quantity` of an item; complete at once unless it needs a second person.

    Raises InsufficientPoints, ItemNotAvailable or OutOfStock before it writes anything (except when
    concurrent requests take the last stock first, see below). A request completed at once is a plain
    spend in the journal; only a waiting one goes through escrow."""
    if quantity <= 0:
        raise ValueError("redeem a positive quantity")
    account = await ledger.lock_account(session, member_id)
    item = await _item(session, item_code)
    points = item.points * quantity
    if account.valid < points:
        raise InsufficientPoints(member_id, points, account.valid)
    flagged = (
        await session.execute(select(MemberFlag.reason).where(MemberFlag.member_id == member_id))
    ).scalar_one_or_none()
    reason = None
    if flagged is not None:
        reason = "flagged member"
    elif points > policy.approval_threshold:
        reason = f"more than {policy.approval_threshold} points"
    if await stock_left(session, item.id) < quantity:
        raise OutOfStock(item.id, quantity)
    redemption = Redemption(
        member_id=member_id,
        item_id=item.id,
        quantity=quantity,
        points=points,
        state=RedemptionState.AWAITING_APPROVAL if reason else RedemptionState.COMPLETED,
        needs_approval=reason is not None,
        approval_reason=reason,
        requested_by=ledger.user_id_of(who),
        requested_at=now,
    )
    session.add(redemption)
    await session.flush()
    ref = f"redemption:{redemption.id}"
    if reason is not None:
        held = await ledger.hold(session, member_id, points, ref=ref, who=who, locked=account)
        redemption.hold_entry_id = held.entry_id
        await session.flush()
        return RedemptionResult(redemption.id, RedemptionState.AWAITING_APPROVAL, points, approval_reason=reason)
    await ledger.spend(session, member_id, points, ref=ref, who=who, locked=account)
    issued = await _issue(session, redemption, item, now=now)
    # Last, so the item's row lock (every redemption of this item queues on it) is held only until the
    # commit. Losing a race for the last items raises OutOfStock after the writes above: the caller's
    # unit of work must roll back, as `transaction()` does on any exception.
    await _take_stock(session, item.id, quantity)
    return issued


async def _take_from_shard(session: AsyncSession, item_id: int, shard: int, quantity: int) -> bool:
    taken = await session.execute(
        update(CatalogueStock)
        .where(CatalogueStock.item_id == item_id, CatalogueStock.shard == shard, CatalogueStock.stock >= quantity)
        .values(stock=CatalogueStock.stock - quantity)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


async def _take_stock(session: AsyncSession, item_id: int, quantity: int) -> None:
    """Take `quantity` of an item exactly once, never below zero.

    1. lock one random shard that has enough and that nobody else holds (``FOR UPDATE SKIP LOCKED`` on
       PostgreSQL; SQLite's write lock already serialises) and take it there;
    2. when every such shard is busy, wait for one random shard that has enough;
    3. when no single shard has enough: lock all the item's shards in shard order (one order for
       everyone, so no deadlock) and take across them; OutOfStock if their sum is short.
    Steps 1 and 2 hold one shard and wait for nothing after it, so they cannot deadlock with step 3.
    """
    for skip_locked in (True, False):
        shard = (
            await session.execute(
                select(CatalogueStock.shard)
                .where(CatalogueStock.item_id == item_id, CatalogueStock.stock >= quantity)
                .order_by(func.random())
                .limit(1)
                .with_for_update(skip_locked=skip_locked)
            )
        ).scalar_one_or_none()
        if shard is not None and await _take_from_shard(session, item_id, shard, quantity):
            return
    rows = (
        await session.execute(
            select(CatalogueStock.shard, CatalogueStock.stock)
            .where(CatalogueStock.item_id == item_id)
            .order_by(CatalogueStock.shard)
            .with_for_update()
        )
    ).all()
    if sum(stock for _, stock in rows) < quantity:
        raise OutOfStock(item_id, quantity)
    left = quantity
    for shard_no, stock in rows:
        take = min(left, stock)
        if take and not await _take_from_shard(session, item_id, shard_no, take):
            raise RuntimeError(f"stock shard {item_id}/{shard_no} changed under its lock")
        left -= take
        if left == 0:
            return


async def _issue(
    session: AsyncSession, redemption: Redemption, item: CatalogueItem, *, now: dt.datetime
) -> RedemptionResult:
    """Voucher codes or a gift shipment for a completed redemption."""
    codes: list[str] = []
    shipment_id = None
    if item.kind == ItemKind.VOUCHER:
        expires_at = now + dt.timedelta(days=item.voucher_valid_days) if item.voucher_valid_days else None
        for _ in range(redemption.quantity):
            code = new_code()
            session.add(
                Voucher(
                    code=code,
                    redemption_id=redemption.id,
                    member_id=redemption.member_id,
                    item_id=item.id,
                    merchant_id=item.merchant_id,
                    issued_at=now,
                    expires_at=expires_at,
                )
            )
            codes.append(code)
        await session.flush()
    else:
        shipment = Shipment(
            redemption_id=redemption.id,
            member_id=redemption.member_id,
            item_id=item.id,
            quantity=redemption.quantity,
            created_at=now,
        )
        session.add(shipment)
        await session.flush()
        shipment_id = shipment.id
    return RedemptionResult(
        redemption.id,
        RedemptionState.COMPLETED,
        redemption.points,
        approval_reason=redemption.approval_reason,
        voucher_codes=codes,
        shipment_id=shipment_id,
    )


# --------------------------------------------------------------------------------------------- deciding


async def _decide(
    session: AsyncSession,
    redemption_id: int,
    state: RedemptionState,
    *,
    who: Principal,
    now: dt.datetime,
    note: str | None,
    not_by_requester: bool,
) -> Redemption:
    """The one conditional UPDATE that decides a request; explains why when it matches nothing."""
    condition = [Redemption.id == redemption_id, Redemption.state == RedemptionState.AWAITING_APPROVAL]
    if not_by_requester:
        condition.append(Redemption.requested_by.is_(None) | (Redemption.requested_by != who.user_id))
    result = await session.execute(
        update(Redemption)
        .where(*condition)
        .values(state=state, decided_by=ledger.user_id_of(who), decided_at=now, decision_note=note)
        .execution_options(synchronize_session=False)
    )
    redemption = (
        await session.execute(
            select(Redemption).where(Redemption.id == redemption_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if redemption is None:
        raise RedemptionNotFound(redemption_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        if redemption.state != RedemptionState.AWAITING_APPROVAL:
            raise RedemptionAlreadyDecided(redemption_id, redemption.state)
        raise SameApprover(f"redemption {redemption_id} was requested by user {who.user_id}")
    return redemption


def _check_approver(who: Principal) -> None:
    if who.user_id <= 0 or who.role not in APPROVER_ROLES:
        raise NotAnApprover(f"{who.username} ({who.role}) may not decide redemptions")


async def approve(
    session: AsyncSession, redemption_id: int, *, who: Principal, now: dt.datetime, note: str | None = None
) -> RedemptionResult:
    """The second person approves: stock is taken, the hold becomes a spend, vouchers or a shipment issue.

    Raises SameApprover, RedemptionAlreadyDecided, NotAnApprover or OutOfStock; then nothing changed,
    even if the caller goes on to commit (the work runs in a savepoint)."""
    _check_approver(who)
    async with session.begin_nested():
        redemption = await _decide(
            session, redemption_id, RedemptionState.COMPLETED, who=who, now=now, note=note, not_by_requester=True
        )
        await ledger.lock_account(session, redemption.member_id)
        item = (await session.execute(select(CatalogueItem).where(CatalogueItem.id == redemption.item_id))).scalar_one()
        await _take_stock(session, item.id, redemption.quantity)
        ref = f"redemption:{redemption.id}"
        await ledger.spend_held(session, redemption.member_id, redemption.points, ref=ref, who=who)
        return await _issue(session, redemption, item, now=now)


async def _release(
    session: AsyncSession, redemption: Redemption, *, who: Principal, now: dt.datetime, note: str | None
) -> ledger.ReleaseResult:
    if redemption.hold_entry_id is None:
        raise RuntimeError(f"redemption {redemption.id} awaits approval without a hold")
    return await ledger.release_held(
        session,
        redemption.member_id,
        redemption.hold_entry_id,
        now,
        ref=f"redemption:{redemption.id}",
        reason=note,
        who=who,
    )


async def reject(
    session: AsyncSession, redemption_id: int, *, who: Principal, now: dt.datetime, note: str | None = None
) -> ledger.ReleaseResult:
    """Staff turn the request down; the escrowed points go back to the member."""
    _check_approver(who)
    redemption = await _decide(
        session, redemption_id, RedemptionState.REJECTED, who=who, now=now, note=note, not_by_requester=False
    )
    return await _release(session, redemption, who=who, now=now, note=note)


async def cancel(
    session: AsyncSession, redemption_id: int, *, who: Principal, now: dt.datetime, note: str | None = None
) -> ledger.ReleaseResult:
    """The requester (or staff) withdraws a waiting request; the escrowed points go back."""
    requested_by = (
        await session.execute(select(Redemption.requested_by).where(Redemption.id == redemption_id))
    ).scalar_one_or_none()
    if who.role not in APPROVER_ROLES and (requested_by is None or requested_by != who.user_id):
        raise NotAnApprover(f"{who.username} may cancel only their own requests")
    redemption = await _decide(
        session, redemption_id, RedemptionState.CANCELLED, who=who, now=now, note=note, not_by_requester=False
    )
    return await _release(session, redemption, who=who, now=now, note=note)


# ---------------------------------------------------------------------------------------------- reading


async def awaiting_approval(session: AsyncSession, limit: int = 100) -> list[Redemption]:
    """The approval queue, oldest first."""
    rows = await session.execute(
        select(Redemption)
        .where(Redemption.state == RedemptionState.AWAITING_APPROVAL)
        .order_by(Redemption.requested_at, Redemption.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def reconcile_escrow(session: AsyncSession, member_id: int | None = None) -> list[ledger.Difference]:
    """Each account's `held` equals the points of its requests still awaiting approval."""
    open_points = select(Redemption.member_id, func.sum(Redemption.points).label("points")).where(
        Redemption.state == RedemptionState.AWAITING_APPROVAL
    )
    accounts = select(PointsAccount.member_id, PointsAccount.held)
    if member_id is not None:
        open_points = open_points.where(Redemption.member_id == member_id)
        accounts = accounts.where(PointsAccount.member_id == member_id)
    waiting = {
        row.member_id: int(row.points) for row in await session.execute(open_points.group_by(Redemption.member_id))
    }
    held = {row.member_id: int(row.held) for row in await session.execute(accounts)}
    return [
        ledger.Difference(member, "held (redemptions)", held.get(member, 0), waiting.get(member, 0))
        for member in sorted(set(waiting) | set(held))
        if held.get(member, 0) != waiting.get(member, 0)
    ]
