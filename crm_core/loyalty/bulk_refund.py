"""Many returns at once (the POS import's batches): the same outcome as `ledger.refund` one by one, in a
fixed number of statements for the common case.

The common case is a return whose points are all still in its sale's lots: nothing was spent from them,
so there is no shortfall, no other lot is touched and no debt arises. Those are booked together: one
entry each, their allocations, one UPDATE per lot touched and one per account. A member with any other
return in the batch (points already used, a lot expired) has all of its returns go through
`ledger.refund` in order, so the shortfall policy lives in one place.

The caller holds the accounts' locks (the import locks every account of its batch first), so the lots
read here cannot change before they are written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, case, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import insert_for, utcnow
from crm_core.loyalty import ledger
from crm_core.loyalty.models import (
    EntryKind,
    LotState,
    PointsAccount,
    PointsAllocation,
    PointsEntry,
    PointsLot,
)

_LOTS = cast(Table, PointsLot.__table__)
_PAIRS_PER_QUERY = 400  # two parameters each: well inside SQLite's limit
_ACCOUNTS = cast(Table, PointsAccount.__table__)


@dataclass(frozen=True, slots=True)
class Return:
    member_id: int
    transaction_ref: str
    points: int  # to reverse; more than is left reverses what is left (as ledger.refund)
    reason: str


@dataclass(slots=True)
class _Lot:
    id: int
    state: str
    amount: int
    remaining: int
    clawed_back: int
    qualifying: bool


@dataclass(slots=True)
class _Plan:
    takes: list[tuple[int, int, int]]  # (lot id, points reversed, taken from the lot)
    valid: int = 0
    pending: int = 0
    lifetime: int = 0
    qualifying: int = 0


def _plan(ret: Return, lots: list[_Lot]) -> _Plan | None:
    """The return taken wholly from its lots' own points, or None when it needs the shortfall policy.
    Updates `lots` as the booking will, for the member's next return of the same sale."""
    left = min(ret.points, sum(lot.amount - lot.clawed_back for lot in lots))
    plan = _Plan(takes=[])
    for lot in lots:
        if left == 0:
            break
        reversed_here = min(left, lot.amount - lot.clawed_back)
        if reversed_here == 0:
            continue
        if lot.remaining < reversed_here or lot.state not in (LotState.VALID, LotState.PENDING):
            return None
        plan.takes.append((lot.id, reversed_here, reversed_here))
        if lot.state == LotState.PENDING:
            plan.pending += reversed_here
        else:
            plan.valid += reversed_here
            plan.lifetime += reversed_here
            plan.qualifying += reversed_here if lot.qualifying else 0
        left -= reversed_here
    for lot_id, reversed_here, _ in plan.takes:
        lot = next(lot for lot in lots if lot.id == lot_id)
        lot.remaining -= reversed_here
        lot.clawed_back += reversed_here
    return plan


async def refund_many(session: AsyncSession, returns: list[Return]) -> list[ledger.RefundResult]:
    """Book `returns` (in the order given for each member); results in the same order."""
    if not returns:
        return []
    pairs = sorted({(ret.member_id, ret.transaction_ref) for ret in returns})
    lots: dict[tuple[int, str], list[_Lot]] = defaultdict(list)
    for start in range(0, len(pairs), _PAIRS_PER_QUERY):
        await _load_lots(session, pairs[start : start + _PAIRS_PER_QUERY], lots)
    plans: dict[int, _Plan | None] = {}
    complex_members: set[int] = set()
    for index, ret in enumerate(returns):
        if ret.member_id in complex_members:
            continue
        plan = _plan(ret, lots[(ret.member_id, ret.transaction_ref)])
        if plan is None:
            complex_members.add(ret.member_id)
        plans[index] = plan
    simple = [
        (index, plan)
        for index, plan in plans.items()
        if plan is not None and plan.takes and returns[index].member_id not in complex_members
    ]
    results: dict[int, ledger.RefundResult] = {}
    if simple:
        await _book(session, returns, simple, results)
    for index, ret in enumerate(returns):
        if ret.member_id in complex_members:
            results[index] = await ledger.refund(
                session, ret.member_id, ret.transaction_ref, points=ret.points, reason=ret.reason
            )
    nothing = ledger.RefundResult(entry_id=None, clawed_back=0, recovered_from_other_lots=0, debt=0)
    return [results.get(index, nothing) for index in range(len(returns))]


async def _load_lots(
    session: AsyncSession, pairs: list[tuple[int, str]], lots: dict[tuple[int, str], list[_Lot]]
) -> None:
    rows = await session.execute(
        select(
            PointsLot.member_id,
            PointsLot.transaction_ref,
            PointsLot.id,
            PointsLot.state,
            PointsLot.amount,
            PointsLot.remaining,
            PointsLot.clawed_back,
            PointsLot.qualifying,
        )
        .where(
            tuple_(PointsLot.member_id, PointsLot.transaction_ref).in_(pairs),
            ledger.REVERSIBLE,
        )
        .order_by(PointsLot.id)
    )
    for member_id, ref, lot_id, state, amount, remaining, clawed_back, qualifying in rows:
        lots[(member_id, ref or "")].append(_Lot(lot_id, state, amount, remaining, clawed_back, qualifying))


async def _book(
    session: AsyncSession,
    returns: list[Return],
    simple: list[tuple[int, _Plan]],
    results: dict[int, ledger.RefundResult],
) -> None:
    now = utcnow()
    entry_ids = (
        (
            await session.execute(
                insert_for(session, PointsEntry.__table__).returning(
                    PointsEntry.__table__.c.id, sort_by_parameter_order=True
                ),
                [
                    {
                        "member_id": returns[index].member_id,
                        "kind": EntryKind.REFUND_CLAWBACK,
                        "valid_change": -plan.valid,
                        "pending_change": -plan.pending,
                        "debt_change": 0,
                        "held_change": 0,
                        "lot_id": None,
                        "ref": returns[index].transaction_ref,
                        "reason": returns[index].reason,
                        "created_by": None,
                        "created_at": now,
                    }
                    for index, plan in simple
                ],
            )
        )
        .scalars()
        .all()
    )
    allocations: list[dict[str, int]] = []
    lot_changes: list[dict[str, int]] = []
    per_member: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (index, plan), entry_id in zip(simple, entry_ids, strict=True):
        for lot_id, reversed_here, taken in plan.takes:
            allocations.append({"entry_id": entry_id, "lot_id": lot_id, "amount": taken})
            lot_changes.append({"l_id": lot_id, "taken": taken, "reversed": reversed_here})
        totals = per_member[returns[index].member_id]
        for position, value in enumerate((plan.valid, plan.pending, plan.lifetime, plan.qualifying)):
            totals[position] += value
        results[index] = ledger.RefundResult(
            entry_id=entry_id, clawed_back=plan.valid + plan.pending, recovered_from_other_lots=0, debt=0
        )
    await session.execute(insert_for(session, PointsAllocation.__table__), allocations)
    clawed = _LOTS.c.clawed_back + bindparam("reversed")
    await session.execute(
        update(_LOTS)
        .where(_LOTS.c.id == bindparam("l_id"))
        .values(
            remaining=_LOTS.c.remaining - bindparam("taken"),
            clawed_back=clawed,
            state=case((clawed == _LOTS.c.amount, LotState.CLAWED_BACK.value), else_=_LOTS.c.state),
        ),
        lot_changes,
    )
    await session.execute(
        update(_ACCOUNTS)
        .where(_ACCOUNTS.c.member_id == bindparam("m_id"))
        .values(
            valid=_ACCOUNTS.c.valid - bindparam("valid"),
            pending=_ACCOUNTS.c.pending - bindparam("pending"),
            lifetime=_ACCOUNTS.c.lifetime - bindparam("lifetime"),
            qualifying=_ACCOUNTS.c.qualifying - bindparam("qualifying"),
            version=_ACCOUNTS.c.version + 1,
            updated_at=now,
        ),
        [
            {"m_id": member_id, "valid": v, "pending": p, "lifetime": lt, "qualifying": q}
            for member_id, (v, p, lt, q) in sorted(per_member.items())
        ],
    )
