"""The points ledger: every change to a member's points is a lot, an append-only entry and allocations,
with the member's balance row updated in the same transaction.

Concurrency. Every operation that consumes or re-states lots first locks the member's `points_accounts`
row (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the engine opens write transactions with
``BEGIN IMMEDIATE``, which serialises writers on the whole file), then reads and updates that member's
lots. Locks are always taken account-first, and the expiry job locks several accounts in member-id order,
so two operations cannot deadlock. Balances change only with ``UPDATE … SET x = x + :n`` — never
load-modify-save — and the ``valid >= 0`` check constraint is a last line of defence.

Spending order. Spends and manual deductions consume valid lots nearest expiry first (lots without an
expiry last, then oldest lot first), so the member loses as few points as possible to expiry.

Returns (shortfall policy, after Sifan: "deduct the points earned; if already spent and the balance is
short, the customer returns the gift or its cash value"):

1. every lot the returned purchase created is clawed back: its remaining points (valid or pending) are
   removed and the lot becomes ``clawed_back``; it no longer counts towards lifetime or qualifying points;
2. the part of those lots the member already *used* (spent, deducted, or drawn by an earlier return's
   shortfall) is the shortfall; the part that merely *expired* is not charged again — it was lost anyway;
3. the shortfall is taken from the member's other valid lots, nearest expiry first;
4. what is still short is recorded as debt (``points_accounts.debt`` and the entry's ``debt_change``):
   the member owes it back as the gift or its cash value; staff clear it with `settle_debt`.
   Debt never makes the valid balance negative and is not taken out of future earnings automatically.

Refunding the same purchase again finds no lots left to claw back and changes nothing, so a retried
return is harmless. A partial return reverses a number of the purchase's points (the POS import gives
the returned share of the sale's points): the lots keep the rest, count only ``amount − clawed_back``
towards lifetime and qualifying points, and become ``clawed_back`` once wholly reversed.

Escrow (redemption requests awaiting approval, see redemption.py). `hold` takes the points out of the
valid lots exactly like a spend (nearest expiry first, with allocations) and parks them in
``points_accounts.held``: they are neither spendable nor able to expire, because no lot holds them any
more. Approval turns the hold into a spend (`spend_held`). Rejection or cancellation (`release_held`)
gives every allocated point back as a new ``escrow_release`` lot that keeps the original lot's earn and
expiry dates, so the member ends exactly where they would have been without the request:

* points whose original expiry passed while they were held expire at the release itself (the release
  runs the expiry for that member at once) — escrow neither saves points from expiry nor costs any;
* release lots are not earnings: they never count towards lifetime or qualifying points again;
* a return of the purchase whose lot fed the hold charges those points as already used (shortfall
  policy above); releasing the hold later gives them back, so the member then holds them beside the debt.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from crm_core.db import insert_for, utcnow
from crm_core.loyalty.errors import InsufficientPoints, LotNotFound, LotNotPending
from crm_core.loyalty.models import (
    EntryKind,
    LotSource,
    LotState,
    PointsAccount,
    PointsAllocation,
    PointsEntry,
    PointsLot,
)
from crm_core.security.policy import Principal

_Stmt = TypeVar("_Stmt", bound=Select[*tuple[Any, ...]])
# The lots a return reverses: a purchase's, not yet wholly clawed back (refund and bulk_refund).
REVERSIBLE = (PointsLot.source == LotSource.PURCHASE) & (PointsLot.state != LotState.CLAWED_BACK)
_Summed = ColumnElement[int] | InstrumentedAttribute[int]


@dataclass(frozen=True, slots=True)
class Balances:
    valid: int = 0
    pending: int = 0
    lifetime: int = 0
    qualifying: int = 0
    debt: int = 0
    held: int = 0  # in escrow for redemption requests awaiting approval


@dataclass(frozen=True, slots=True)
class Allocation:
    lot_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class SpendResult:
    entry_id: int
    allocations: list[Allocation]


@dataclass(frozen=True, slots=True)
class RefundResult:
    """What a return took: from the purchase's own lots, from other lots, and what is left owed."""

    entry_id: int | None
    clawed_back: int
    recovered_from_other_lots: int
    debt: int


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    lots: int
    points: int


@dataclass(frozen=True, slots=True)
class Difference:
    """One quantity whose recorded value disagrees with what the lots or the journal say."""

    member_id: int
    quantity: str
    recorded: int
    computed: int


# ---------------------------------------------------------------------------------------------- helpers


def _user_id(who: Principal | None) -> int | None:
    # SYSTEM (user 0) is a job, not a row in users.
    return who.user_id if who is not None and who.user_id > 0 else None


async def _ensure_account(session: AsyncSession, member_id: int) -> None:
    stmt = insert_for(session, PointsAccount.__table__).values(member_id=member_id)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["member_id"]))


async def _lock_account(session: AsyncSession, member_id: int) -> PointsAccount:
    """The member's account row, locked until the transaction ends (created on first use)."""
    stmt = (
        select(PointsAccount)
        .where(PointsAccount.member_id == member_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    account = (await session.execute(stmt)).scalar_one_or_none()
    if account is None:  # first use: one more round trip, once per member
        await _ensure_account(session, member_id)
        account = (await session.execute(stmt)).scalar_one()
    return account


async def _change_account(
    session: AsyncSession,
    member_id: int,
    *,
    valid: int = 0,
    pending: int = 0,
    lifetime: int = 0,
    qualifying: int = 0,
    debt: int = 0,
    held: int = 0,
) -> None:
    stmt = (
        update(PointsAccount)
        .where(PointsAccount.member_id == member_id)
        .values(
            valid=PointsAccount.valid + valid,
            pending=PointsAccount.pending + pending,
            lifetime=PointsAccount.lifetime + lifetime,
            qualifying=PointsAccount.qualifying + qualifying,
            debt=PointsAccount.debt + debt,
            held=PointsAccount.held + held,
            version=PointsAccount.version + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)


async def _append(session: AsyncSession, entry: PointsEntry) -> PointsEntry:
    session.add(entry)
    await session.flush()
    return entry


async def _take_from_lot(session: AsyncSession, entry_id: int, lot_id: int, amount: int) -> Allocation:
    # Guarded decrement: under the account lock it always matches; if it ever does not, fail loudly.
    result = await session.execute(
        update(PointsLot)
        .where(PointsLot.id == lot_id, PointsLot.remaining >= amount)
        .values(remaining=PointsLot.remaining - amount)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"points lot {lot_id} changed under the account lock")
    session.add(PointsAllocation(entry_id=entry_id, lot_id=lot_id, amount=amount))
    return Allocation(lot_id=lot_id, amount=amount)


async def _consume_valid_lots(session: AsyncSession, member_id: int, points: int, entry_id: int) -> list[Allocation]:
    """Take `points` from valid lots, nearest expiry first; the caller holds the account lock."""
    lots = await session.execute(
        select(PointsLot.id, PointsLot.remaining)
        .where(
            PointsLot.member_id == member_id,
            PointsLot.state == LotState.VALID,
            PointsLot.remaining > 0,
        )
        .order_by(PointsLot.expires_at.is_(None), PointsLot.expires_at, PointsLot.id)
    )
    allocations: list[Allocation] = []
    left = points
    for lot_id, remaining in lots:
        if left == 0:
            break
        take = min(left, remaining)
        allocations.append(await _take_from_lot(session, entry_id, lot_id, take))
        left -= take
    if left:
        raise RuntimeError(f"member {member_id}: account and lots disagree, {left} points not found in lots")
    await session.flush()
    return allocations


def user_id_of(who: Principal | None) -> int | None:
    """The users.id to record for `who` (None for jobs); shared by the loyalty modules."""
    return _user_id(who)


async def lock_account(session: AsyncSession, member_id: int) -> PointsAccount:
    """Take the member's points lock: every loyalty change for one member (tiers, redemptions) takes it
    first, so locks are always acquired in the same order."""
    return await _lock_account(session, member_id)


# ------------------------------------------------------------------------------------------- operations


async def _take_valid(
    session: AsyncSession,
    member_id: int,
    points: int,
    entry: PointsEntry,
    locked: PointsAccount | None,
    *,
    held: int = 0,
) -> SpendResult:
    """Take `points` out of the valid balance under `entry` (a spend, a deduction or an escrow hold,
    which moves them to `held`), consuming lots nearest expiry first; raises InsufficientPoints."""
    account = locked if locked is not None else await _lock_account(session, member_id)
    if account.valid < points:
        raise InsufficientPoints(member_id, points, account.valid)
    entry = await _append(session, entry)
    allocations = await _consume_valid_lots(session, member_id, points, entry.id)
    await _change_account(session, member_id, valid=-points, held=held)
    return SpendResult(entry_id=entry.id, allocations=allocations)


async def earn(
    session: AsyncSession,
    member_id: int,
    points: int,
    *,
    earned_at: dt.datetime,
    expires_at: dt.datetime | None,
    transaction_ref: str | None = None,
    pending: bool = False,
    qualifying: bool = True,
    reason: str | None = None,
    who: Principal | None = None,
    source: LotSource = LotSource.PURCHASE,
    name: str | None = None,
) -> int:
    """Book points a purchase (or an event rule) earned as a new lot; `pending` lots wait for `verify`
    (e.g. 购房类). Only purchase lots are reversed by a return.

    A purchase that earns 0 points books nothing: the caller skips it (a lot is never empty).
    Returns the lot id.
    """
    if points <= 0:
        raise ValueError("a lot holds a positive number of points")
    await _ensure_account(session, member_id)
    state = LotState.PENDING if pending else LotState.VALID
    lot = PointsLot(
        member_id=member_id,
        source=source,
        state=state,
        amount=points,
        remaining=points,
        qualifying=qualifying,
        earned_at=earned_at,
        expires_at=expires_at,
        transaction_ref=transaction_ref,
        name=name,
    )
    session.add(lot)
    await session.flush()
    await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.EARN,
            valid_change=0 if pending else points,
            pending_change=points if pending else 0,
            lot_id=lot.id,
            ref=transaction_ref,
            reason=reason,
            created_by=_user_id(who),
        ),
    )
    if pending:
        await _change_account(session, member_id, pending=points)
    else:
        await _change_account(session, member_id, valid=points, lifetime=points, qualifying=points if qualifying else 0)
    return lot.id


async def verify(session: AsyncSession, lot_id: int, *, who: Principal | None = None) -> None:
    """Confirm a pending lot (the sale and its payment matched): its points become valid and count."""
    member_id = (await session.execute(select(PointsLot.member_id).where(PointsLot.id == lot_id))).scalar()
    if member_id is None:
        raise LotNotFound(lot_id)
    await _lock_account(session, member_id)
    row = (
        await session.execute(
            select(
                PointsLot.state, PointsLot.amount, PointsLot.clawed_back, PointsLot.remaining, PointsLot.qualifying
            ).where(PointsLot.id == lot_id)
        )
    ).one()
    if row.state != LotState.PENDING:
        raise LotNotPending(f"lot {lot_id} is {row.state}")
    await session.execute(
        update(PointsLot)
        .where(PointsLot.id == lot_id)
        .values(state=LotState.VALID)
        .execution_options(synchronize_session=False)
    )
    await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.VERIFY,
            valid_change=row.remaining,
            pending_change=-row.remaining,
            lot_id=lot_id,
            created_by=_user_id(who),
        ),
    )
    await _change_account(
        session,
        member_id,
        valid=row.remaining,
        pending=-row.remaining,
        lifetime=row.amount - row.clawed_back,
        qualifying=row.amount - row.clawed_back if row.qualifying else 0,
    )


async def spend(
    session: AsyncSession,
    member_id: int,
    points: int,
    *,
    ref: str | None = None,
    reason: str | None = None,
    who: Principal | None = None,
    kind: EntryKind = EntryKind.SPEND,
    locked: PointsAccount | None = None,
) -> SpendResult:
    """Redeem `points` (积分消费) from valid lots, nearest expiry first; raises InsufficientPoints.

    `locked`: the account row the caller already locked in this transaction (saves the round trip)."""
    if points <= 0:
        raise ValueError("spend a positive number of points")
    entry = PointsEntry(
        member_id=member_id, kind=kind, valid_change=-points, ref=ref, reason=reason, created_by=_user_id(who)
    )
    return await _take_valid(session, member_id, points, entry, locked)


async def manual_deduct(
    session: AsyncSession, member_id: int, points: int, *, reason: str, who: Principal | None = None
) -> SpendResult:
    """Staff correction (价值调整) taking points away; consumes lots like a spend, with a required reason."""
    if not reason.strip():
        raise ValueError("a manual deduction needs a reason")
    return await spend(session, member_id, points, reason=reason, who=who, kind=EntryKind.MANUAL_DEDUCT)


async def manual_grant(
    session: AsyncSession,
    member_id: int,
    points: int,
    *,
    name: str,
    expires_at: dt.datetime | None,
    granted_at: dt.datetime | None = None,
    reason: str | None = None,
    qualifying: bool = False,
    who: Principal | None = None,
) -> int:
    """Staff grant (手工增加积分 / 积分赠送), e.g. 注册赠送 1,000 points expiring 2009-12-31.

    Grants are valid at once and not qualifying by default: a gift should not promote a member.
    Returns the lot id.
    """
    if points <= 0:
        raise ValueError("grant a positive number of points")
    if not name.strip():
        raise ValueError("a manual grant needs a name (积分来源)")
    await _ensure_account(session, member_id)
    lot = PointsLot(
        member_id=member_id,
        source=LotSource.MANUAL_GRANT,
        state=LotState.VALID,
        amount=points,
        remaining=points,
        qualifying=qualifying,
        earned_at=granted_at or utcnow(),
        expires_at=expires_at,
        name=name,
    )
    session.add(lot)
    await session.flush()
    await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.MANUAL_GRANT,
            valid_change=points,
            lot_id=lot.id,
            reason=reason or name,
            created_by=_user_id(who),
        ),
    )
    await _change_account(session, member_id, valid=points, lifetime=points, qualifying=points if qualifying else 0)
    return lot.id


async def refund(
    session: AsyncSession,
    member_id: int,
    transaction_ref: str,
    *,
    points: int | None = None,
    reason: str | None = None,
    who: Principal | None = None,
) -> RefundResult:
    """Reverse `points` of what a returned purchase earned (all that is left of it when None or when
    fewer are left), following the shortfall policy in the module doc.

    A partial return reverses the purchase's lots in lot order. Within a lot, points still in it are
    taken first; the rest is charged as a shortfall up to what the member *used* of that lot (spent,
    deducted, or drawn by an earlier return), never for points that merely expired. Taking a lot's own
    points first and charging use before expiry makes a sale returned in parts cost exactly what one
    whole return would have.
    """
    account = await _lock_account(session, member_id)
    lots = (
        await session.execute(
            select(
                PointsLot.id,
                PointsLot.state,
                PointsLot.amount,
                PointsLot.remaining,
                PointsLot.clawed_back,
                PointsLot.qualifying,
            )
            .where(
                PointsLot.member_id == member_id,
                PointsLot.transaction_ref == transaction_ref,
                REVERSIBLE,
            )
            .order_by(PointsLot.id)
        )
    ).all()
    if points is not None and points < 0:
        raise ValueError("a return reverses a non-negative number of points")
    reversible = sum(lot.amount - lot.clawed_back for lot in lots)
    wanted = reversible if points is None else min(points, reversible)
    if wanted == 0:
        return RefundResult(entry_id=None, clawed_back=0, recovered_from_other_lots=0, debt=0)
    expired_rows = await session.execute(
        select(PointsAllocation.lot_id, func.sum(PointsAllocation.amount))
        .join(PointsEntry, PointsEntry.id == PointsAllocation.entry_id)
        .where(PointsAllocation.lot_id.in_([lot.id for lot in lots]), PointsEntry.kind == EntryKind.EXPIRE)
        .group_by(PointsAllocation.lot_id)
    )
    expired_by_lot = {lot_id: int(expired) for lot_id, expired in expired_rows}
    plan: list[tuple[int, int, int]] = []  # (lot id, points reversed, taken from the lot itself)
    valid_taken = pending_taken = shortfall = lifetime = qualifying = 0
    left = wanted
    for lot in lots:
        if left == 0:
            break
        reversed_here = min(left, lot.amount - lot.clawed_back)
        taken = min(reversed_here, lot.remaining)
        used = max(0, lot.amount - lot.remaining - expired_by_lot.get(lot.id, 0) - lot.clawed_back)
        left -= reversed_here
        plan.append((lot.id, reversed_here, taken))
        if lot.state == LotState.PENDING:
            pending_taken += taken
            continue
        if lot.state == LotState.VALID:
            valid_taken += taken
        shortfall += min(reversed_here - taken, used)
        lifetime += reversed_here
        qualifying += reversed_here if lot.qualifying else 0
    recovered = min(shortfall, account.valid - valid_taken)
    debt = shortfall - recovered
    entry = await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.REFUND_CLAWBACK,
            valid_change=-(valid_taken + recovered),
            pending_change=-pending_taken,
            debt_change=debt,
            ref=transaction_ref,
            reason=reason,
            created_by=_user_id(who),
        ),
    )
    for lot_id, reversed_here, taken in plan:
        if taken:
            await _take_from_lot(session, entry.id, lot_id, taken)
        await session.execute(
            update(PointsLot)
            .where(PointsLot.id == lot_id)
            .values(
                clawed_back=PointsLot.clawed_back + reversed_here,
                state=case(
                    (PointsLot.clawed_back + reversed_here == PointsLot.amount, LotState.CLAWED_BACK.value),
                    else_=PointsLot.state,
                ),
            )
            .execution_options(synchronize_session=False)
        )
    if recovered:
        await _consume_valid_lots(session, member_id, recovered, entry.id)
    await session.flush()
    await _change_account(
        session,
        member_id,
        valid=-(valid_taken + recovered),
        pending=-pending_taken,
        lifetime=-lifetime,
        qualifying=-qualifying,
        debt=debt,
    )
    return RefundResult(
        entry_id=entry.id, clawed_back=valid_taken + pending_taken, recovered_from_other_lots=recovered, debt=debt
    )


async def settle_debt(
    session: AsyncSession, member_id: int, points: int, *, reason: str, who: Principal | None = None
) -> None:
    """Record that the member returned the gift or paid its cash value for `points` of debt."""
    if points <= 0:
        raise ValueError("settle a positive number of points")
    account = await _lock_account(session, member_id)
    if points > account.debt:
        raise ValueError(f"member {member_id} owes {account.debt} points, not {points}")
    await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.DEBT_SETTLED,
            debt_change=-points,
            reason=reason,
            created_by=_user_id(who),
        ),
    )
    await _change_account(session, member_id, debt=-points)


async def expire(session: AsyncSession, now: dt.datetime, *, member_id: int | None = None) -> ExpiryResult:
    """Expire valid lots whose `expires_at` has passed (the annual clearing job); running it twice is a no-op.

    Pending lots do not expire: they are verified or clawed back first. Accounts are locked in member-id
    order so the job never deadlocks with spends. One entry per lot keeps the statement readable per lot.
    """
    due = select(PointsLot.member_id).where(PointsLot.state == LotState.VALID, PointsLot.expires_at <= now)
    if member_id is not None:
        due = due.where(PointsLot.member_id == member_id)
    member_ids = sorted(set((await session.execute(due.distinct())).scalars()))
    lots_expired = points_expired = 0
    for member in member_ids:
        await _lock_account(session, member)
        lots = (
            await session.execute(
                select(PointsLot.id, PointsLot.remaining)
                .where(
                    PointsLot.member_id == member,
                    PointsLot.state == LotState.VALID,
                    PointsLot.expires_at <= now,
                )
                .order_by(PointsLot.id)
            )
        ).all()
        member_points = 0
        for lot_id, remaining in lots:
            entry = await _append(
                session,
                PointsEntry(member_id=member, kind=EntryKind.EXPIRE, valid_change=-remaining, lot_id=lot_id),
            )
            if remaining:
                await _take_from_lot(session, entry.id, lot_id, remaining)
            member_points += remaining
        await session.execute(
            update(PointsLot)
            .where(PointsLot.id.in_([lot_id for lot_id, _ in lots]))
            .values(state=LotState.EXPIRED)
            .execution_options(synchronize_session=False)
        )
        await session.flush()
        await _change_account(session, member, valid=-member_points)
        lots_expired += len(lots)
        points_expired += member_points
    return ExpiryResult(lots=lots_expired, points=points_expired)


# ----------------------------------------------------------------------------------------------- escrow


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    entry_id: int
    returned: int
    expired_at_release: int


async def hold(
    session: AsyncSession,
    member_id: int,
    points: int,
    *,
    ref: str,
    who: Principal | None = None,
    locked: PointsAccount | None = None,
) -> SpendResult:
    """Move `points` from valid lots into escrow (nearest expiry first); raises InsufficientPoints."""
    if points <= 0:
        raise ValueError("hold a positive number of points")
    entry = PointsEntry(
        member_id=member_id,
        kind=EntryKind.ESCROW_HOLD,
        valid_change=-points,
        held_change=points,
        ref=ref,
        created_by=_user_id(who),
    )
    return await _take_valid(session, member_id, points, entry, locked, held=points)


async def spend_held(
    session: AsyncSession, member_id: int, points: int, *, ref: str, who: Principal | None = None
) -> int:
    """Turn escrowed points into a spend (the redemption was approved). Returns the entry id."""
    entry = await _append(
        session,
        PointsEntry(
            member_id=member_id, kind=EntryKind.ESCROW_SPEND, held_change=-points, ref=ref, created_by=_user_id(who)
        ),
    )
    await _change_account(session, member_id, held=-points)
    return entry.id


async def release_held(
    session: AsyncSession,
    member_id: int,
    hold_entry_id: int,
    now: dt.datetime,
    *,
    ref: str,
    reason: str | None = None,
    who: Principal | None = None,
) -> ReleaseResult:
    """Give a hold's points back as lots with the original dates; what expired meanwhile expires now."""
    await _lock_account(session, member_id)
    rows = (
        await session.execute(
            select(PointsLot.earned_at, PointsLot.expires_at, func.sum(PointsAllocation.amount))
            .join(PointsAllocation, PointsAllocation.lot_id == PointsLot.id)
            .where(PointsAllocation.entry_id == hold_entry_id)
            .group_by(PointsLot.id, PointsLot.earned_at, PointsLot.expires_at)
            .order_by(PointsLot.id)
        )
    ).all()
    total = sum(int(points) for _, _, points in rows)
    if total <= 0:
        raise ValueError(f"entry {hold_entry_id} holds no points")
    entry = await _append(
        session,
        PointsEntry(
            member_id=member_id,
            kind=EntryKind.ESCROW_RELEASE,
            valid_change=total,
            held_change=-total,
            ref=ref,
            reason=reason,
            created_by=_user_id(who),
        ),
    )
    for earned_at, expires_at, points in rows:
        session.add(
            PointsLot(
                member_id=member_id,
                source=LotSource.ESCROW_RELEASE,
                state=LotState.VALID,
                amount=int(points),
                remaining=int(points),
                qualifying=False,
                earned_at=earned_at,
                expires_at=expires_at,
                transaction_ref=ref,
            )
        )
    await session.flush()
    await _change_account(session, member_id, valid=total, held=-total)
    expired = 0
    if any(expires_at is not None and expires_at <= now for _, expires_at, _ in rows):
        expired = (await expire(session, now, member_id=member_id)).points
    return ReleaseResult(entry_id=entry.id, returned=total, expired_at_release=expired)


# ---------------------------------------------------------------------------------------------- reading


async def balances(session: AsyncSession, member_id: int) -> Balances:
    """The member's balances as recorded (zeros for a member who never had points)."""
    account = (
        await session.execute(
            select(PointsAccount).where(PointsAccount.member_id == member_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if account is None:
        return Balances()
    return Balances(
        valid=account.valid,
        pending=account.pending,
        lifetime=account.lifetime,
        qualifying=account.qualifying,
        debt=account.debt,
        held=account.held,
    )


async def expiring(session: AsyncSession, member_id: int, now: dt.datetime, days: int) -> int:
    """Valid points whose lots expire within `days` of `now` (the 360's "expiring soon")."""
    total = await session.execute(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id,
            PointsLot.state == LotState.VALID,
            PointsLot.expires_at > now,
            PointsLot.expires_at <= now + dt.timedelta(days=days),
        )
    )
    return int(total.scalar_one())


async def reconcile(session: AsyncSession, member_id: int | None = None) -> list[Difference]:
    """Recompute balances from the lots and from the journal and list every disagreement (empty = sound).

    Checks each lot's remaining against its allocations, each account against its lots, and each account
    against the sums of its entries. Meant for a nightly job and for the tests' invariants.
    """

    def scoped(stmt: _Stmt, column: InstrumentedAttribute[int]) -> _Stmt:
        return stmt if member_id is None else stmt.where(column == member_id)

    recorded = {
        row.member_id: row
        for row in (await session.execute(scoped(select(PointsAccount), PointsAccount.member_id))).scalars()
    }
    counted = PointsLot.state.in_([LotState.VALID, LotState.EXPIRED]) & (PointsLot.source != LotSource.ESCROW_RELEASE)

    def total(condition: ColumnElement[bool], value: _Summed) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

    from_lots = {
        row.member_id: row
        for row in await session.execute(
            scoped(
                select(
                    PointsLot.member_id,
                    total(PointsLot.state == LotState.VALID, PointsLot.remaining).label("valid"),
                    total(PointsLot.state == LotState.PENDING, PointsLot.remaining).label("pending"),
                    total(counted, PointsLot.amount - PointsLot.clawed_back).label("lifetime"),
                    total(counted & PointsLot.qualifying, PointsLot.amount - PointsLot.clawed_back).label("qualifying"),
                ).group_by(PointsLot.member_id),
                PointsLot.member_id,
            )
        )
    }
    from_entries = {
        row.member_id: row
        for row in await session.execute(
            scoped(
                select(
                    PointsEntry.member_id,
                    func.sum(PointsEntry.valid_change).label("valid"),
                    func.sum(PointsEntry.pending_change).label("pending"),
                    func.sum(PointsEntry.debt_change).label("debt"),
                    func.sum(PointsEntry.held_change).label("held"),
                ).group_by(PointsEntry.member_id),
                PointsEntry.member_id,
            )
        )
    }
    differences: list[Difference] = []

    def compare(member: int, quantity: str, recorded_value: int, computed_value: int) -> None:
        if int(recorded_value) != int(computed_value):
            differences.append(Difference(member, quantity, int(recorded_value), int(computed_value)))

    for member in sorted(set(recorded) | set(from_lots) | set(from_entries)):
        account = recorded.get(member)
        lots = from_lots.get(member)
        entries = from_entries.get(member)
        for quantity in ("valid", "pending", "lifetime", "qualifying"):
            compare(
                member,
                f"{quantity} (lots)",
                getattr(account, quantity, 0),
                getattr(lots, quantity, 0) if lots is not None else 0,
            )
        for quantity in ("valid", "pending", "debt", "held"):
            compare(
                member,
                f"{quantity} (entries)",
                getattr(account, quantity, 0),
                getattr(entries, quantity, 0) if entries is not None else 0,
            )

    allocated = (
        select(PointsAllocation.lot_id, func.sum(PointsAllocation.amount).label("allocated"))
        .group_by(PointsAllocation.lot_id)
        .subquery()
    )
    lot_rows = await session.execute(
        scoped(
            select(PointsLot.id, PointsLot.member_id, PointsLot.amount, PointsLot.remaining, allocated.c.allocated)
            .outerjoin(allocated, allocated.c.lot_id == PointsLot.id)
            .order_by(PointsLot.id),
            PointsLot.member_id,
        )
    )
    for lot_id, member, amount, remaining, allocated_points in lot_rows:
        compare(member, f"lot {lot_id} remaining", remaining, amount - int(allocated_points or 0))
    return differences
