"""Points liability: what the programme owes its members now, what expires soon, earn and burn by month.

Outstanding points are read from the balance rows (the ledger keeps them equal to the lots, and
`ledger.reconcile` proves it); expiring points from valid lots by expiry date. Earn and burn come from
the journal, grouped by local calendar month (settings.timezone):

* earned — points booked by EARN (valid or pending) and MANUAL_GRANT;
* burned — points spent: SPEND, MANUAL_DEDUCT and ESCROW_SPEND (an approved redemption);
* expired — EXPIRE; clawed back — REFUND_CLAWBACK (taken back from lots by a return).

Escrow holds and releases only move points between valid and held, so they are neither earn nor burn.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict, dataclass

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.loyalty.fraud import local_period
from crm_core.loyalty.models import EntryKind, LotState, PointsAccount, PointsEntry, PointsLot

EXPIRY_WINDOWS = (30, 90)


@dataclass(frozen=True, slots=True)
class Outstanding:
    valid: int
    pending: int
    held: int
    debt: int
    expiring_30_days: int
    expiring_90_days: int
    members: int  # members holding valid, pending or held points


@dataclass(frozen=True, slots=True)
class Month:
    month: str  # YYYY-MM, local
    earned: int
    burned: int
    expired: int
    clawed_back: int


async def outstanding(session: AsyncSession, now: dt.datetime) -> Outstanding:
    totals = (
        await session.execute(
            select(
                func.coalesce(func.sum(PointsAccount.valid), 0),
                func.coalesce(func.sum(PointsAccount.pending), 0),
                func.coalesce(func.sum(PointsAccount.held), 0),
                func.coalesce(func.sum(PointsAccount.debt), 0),
                func.count().filter((PointsAccount.valid + PointsAccount.pending + PointsAccount.held) > 0),
            )
        )
    ).one()
    expiring = []
    for days in EXPIRY_WINDOWS:
        total = await session.execute(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.state == LotState.VALID,
                PointsLot.expires_at > now,
                PointsLot.expires_at <= now + dt.timedelta(days=days),
            )
        )
        expiring.append(int(total.scalar_one()))
    valid, pending, held, debt, members = (int(v) for v in totals)
    return Outstanding(valid, pending, held, debt, expiring[0], expiring[1], members)


def _sum_when(kinds: tuple[EntryKind, ...], amount: ColumnElement[int]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((PointsEntry.kind.in_(kinds), amount), else_=0)), 0)


async def by_month(
    session: AsyncSession, timezone: str, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[Month]:
    """Earn / burn / expiry / clawback per local month, oldest first, months with any of them only."""
    month = local_period(session, PointsEntry.created_at, timezone, month=True).label("month")
    query = select(
        month,
        _sum_when((EntryKind.EARN, EntryKind.MANUAL_GRANT), PointsEntry.valid_change + PointsEntry.pending_change),
        _sum_when((EntryKind.SPEND, EntryKind.MANUAL_DEDUCT), -PointsEntry.valid_change),
        _sum_when((EntryKind.ESCROW_SPEND,), -PointsEntry.held_change),
        _sum_when((EntryKind.EXPIRE,), -PointsEntry.valid_change),
        _sum_when((EntryKind.REFUND_CLAWBACK,), -(PointsEntry.valid_change + PointsEntry.pending_change)),
    ).where(
        PointsEntry.kind.in_(
            [
                EntryKind.EARN,
                EntryKind.MANUAL_GRANT,
                EntryKind.SPEND,
                EntryKind.MANUAL_DEDUCT,
                EntryKind.ESCROW_SPEND,
                EntryKind.EXPIRE,
                EntryKind.REFUND_CLAWBACK,
            ]
        )
    )
    if since is not None:
        query = query.where(PointsEntry.created_at >= since)
    if until is not None:
        query = query.where(PointsEntry.created_at < until)
    rows = await session.execute(query.group_by(month).order_by(month))
    return [Month(str(row[0]), int(row[1]), int(row[2]) + int(row[3]), int(row[4]), int(row[5])) for row in rows]


def to_csv(totals: Outstanding, months: list[Month]) -> str:
    """One CSV: the outstanding figures, a blank line, then the months (UTF-8 with BOM for Excel)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["measure", "points"])
    for name, value in asdict(totals).items():
        writer.writerow([name, value])
    writer.writerow([])
    writer.writerow(["month", "earned", "burned", "expired", "clawed_back"])
    for m in months:
        writer.writerow([m.month, m.earned, m.burned, m.expired, m.clawed_back])
    return "\ufeff" + out.getvalue()
