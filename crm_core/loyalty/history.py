"""What the panel's points pages read: a member's journal, the catalogue with stock, their redemptions,
and the approval queue with item and member names. Plain rows; the routes pass them through the field
policy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.loyalty.models import (
    CatalogueItem,
    CatalogueStock,
    PointsEntry,
    PointsLot,
    Redemption,
    RedemptionState,
)
from crm_core.members.models import Member


async def entries(session: AsyncSession, member_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The member's journal, newest first, with the lot an entry created or drew on (its name, expiry)."""
    rows = await session.execute(
        select(PointsEntry, PointsLot.name, PointsLot.expires_at)
        .outerjoin(PointsLot, PointsLot.id == PointsEntry.lot_id)
        .where(PointsEntry.member_id == member_id)
        .order_by(PointsEntry.created_at.desc(), PointsEntry.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": e.id,
            "kind": e.kind,
            "valid_change": e.valid_change,
            "pending_change": e.pending_change,
            "held_change": e.held_change,
            "debt_change": e.debt_change,
            "ref": e.ref,
            "reason": e.reason or name,
            "expires_at": expires_at,
            "created_at": e.created_at,
        }
        for e, name, expires_at in rows
    ]


async def catalogue(session: AsyncSession) -> list[dict[str, Any]]:
    """Active items with their stock left, cheapest first."""
    stock = func.coalesce(func.sum(CatalogueStock.stock), 0).label("stock")
    rows = await session.execute(
        select(CatalogueItem.code, CatalogueItem.name, CatalogueItem.kind, CatalogueItem.points, stock)
        .outerjoin(CatalogueStock, CatalogueStock.item_id == CatalogueItem.id)
        .where(CatalogueItem.active.is_(True))
        .group_by(CatalogueItem.id, CatalogueItem.code, CatalogueItem.name, CatalogueItem.kind, CatalogueItem.points)
        .order_by(CatalogueItem.points, CatalogueItem.code)
    )
    return [dict(row._mapping) for row in rows]


async def redemptions(session: AsyncSession, member_id: int, limit: int = 50) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Redemption, CatalogueItem.name)
        .join(CatalogueItem, CatalogueItem.id == Redemption.item_id)
        .where(Redemption.member_id == member_id)
        .order_by(Redemption.requested_at.desc(), Redemption.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "item": name,
            "quantity": r.quantity,
            "points": r.points,
            "state": r.state,
            "approval_reason": r.approval_reason,
            "requested_at": r.requested_at,
            "decided_at": r.decided_at,
        }
        for r, name in rows
    ]


async def queue(session: AsyncSession, limit: int = 100) -> list[tuple[Redemption, str, str]]:
    """Requests awaiting approval, oldest first, with the item's and the member's names."""
    rows = await session.execute(
        select(Redemption, CatalogueItem.name, Member.name)
        .join(CatalogueItem, CatalogueItem.id == Redemption.item_id)
        .join(Member, Member.id == Redemption.member_id)
        .where(Redemption.state == RedemptionState.AWAITING_APPROVAL)
        .order_by(Redemption.requested_at, Redemption.id)
        .limit(limit)
    )
    return [(r, item, member) for r, item, member in rows]
