"""Booking a purchase's points together with its consequence for the tier: the one entry point for
whoever earns points (the POS import, the API), so "immediate upgrade" cannot be forgotten."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.loyalty import ledger, tiers
from crm_core.loyalty.models import PointsLot
from crm_core.security.policy import Principal


async def earn_purchase(
    session: AsyncSession,
    member_id: int,
    points: int,
    *,
    earned_at: dt.datetime,
    expires_at: dt.datetime | None,
    transaction_ref: str | None = None,
    pending: bool = False,
    who: Principal | None = None,
) -> tuple[int, str | None]:
    """Book a purchase's points as a lot and upgrade the tier at once if its period's qualifying points
    now reach a higher threshold (pending lots count only once verified). Returns (lot id, new tier)."""
    lot_id = await ledger.earn(
        session,
        member_id,
        points,
        earned_at=earned_at,
        expires_at=expires_at,
        transaction_ref=transaction_ref,
        pending=pending,
        who=who,
    )
    upgraded = None if pending else await tiers.apply_upgrade(session, member_id, earned_at)
    return lot_id, upgraded


async def verify_purchase(session: AsyncSession, lot_id: int, *, who: Principal | None = None) -> str | None:
    """Confirm a pending lot; its points count towards the tier of the period they were earned in."""
    await ledger.verify(session, lot_id, who=who)
    member_id, earned_at = (
        await session.execute(select(PointsLot.member_id, PointsLot.earned_at).where(PointsLot.id == lot_id))
    ).one()
    return await tiers.apply_upgrade(session, member_id, earned_at)
