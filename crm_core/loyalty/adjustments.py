"""Manual point adjustments (手工增加 / 扣减积分) with a second person above a threshold.

A grant or deduction needs a reason; a grant an expiry (or an explicit "never"). Up to
`threshold` points it is booked at once by the ledger (manual_grant / manual_deduct). Above it the
request waits in `loyalty_adjustments` for a CRM staff member or administrator who did not ask for
it; approval is a conditional UPDATE from `awaiting_approval`, so concurrent approvals book it
once. A waiting deduction holds nothing: at approval it takes what the member then has, and fails
(the request stays waiting, to be rejected) when that is not enough — a deduction is a correction,
not a purchase, so reserving points for it would block the member's own spending for no gain.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow
from crm_core.loyalty import ledger
from crm_core.loyalty.errors import LoyaltyError, NotAnApprover, SameApprover
from crm_core.security.policy import Principal, Role

APPROVERS = frozenset({Role.CRM_STAFF, Role.ADMIN})


class AdjustmentDecided(LoyaltyError):
    """Approve and reject act once, on an adjustment still awaiting approval."""


class Adjustment(Base):
    __tablename__ = "loyalty_adjustments"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # grant | deduct
    points: Mapped[int]
    reason: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime | None]  # grants only; None: never expires
    state: Mapped[str] = mapped_column(String(20), default="awaiting_approval", index=True)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None]
    note: Mapped[str | None] = mapped_column(String(200))


async def _book(
    session: AsyncSession,
    member_id: int,
    kind: str,
    points: int,
    reason: str,
    expires_at: dt.datetime | None,
    who: Principal | None,
) -> None:
    if kind == "grant":
        await ledger.manual_grant(
            session, member_id, points, name=reason, reason=reason, expires_at=expires_at, who=who
        )
    else:
        await ledger.manual_deduct(session, member_id, points, reason=reason, who=who)


async def request_adjustment(
    session: AsyncSession,
    who: Principal,
    member_id: int,
    *,
    kind: str,
    points: int,
    reason: str,
    expires_at: dt.datetime | None,
    threshold: int,
) -> Adjustment:
    """Book at once (state `booked`) or wait for a second person (`awaiting_approval`)."""
    if kind not in ("grant", "deduct") or points <= 0 or not reason.strip():
        raise ValueError("an adjustment is a grant or deduct of positive points with a reason")
    adjustment = Adjustment(
        member_id=member_id,
        kind=kind,
        points=points,
        reason=reason.strip(),
        expires_at=expires_at if kind == "grant" else None,
        requested_by=who.user_id or None,
    )
    if points <= threshold:
        await _book(session, member_id, kind, points, adjustment.reason, adjustment.expires_at, who)
        adjustment.state, adjustment.decided_at = "booked", utcnow()
    session.add(adjustment)
    await session.flush()
    return adjustment


async def decide(
    session: AsyncSession, who: Principal, adjustment_id: int, *, approve: bool, note: str | None = None
) -> Adjustment:
    if who.role not in APPROVERS or who.user_id <= 0:
        raise NotAnApprover(f"{who.username} may not decide point adjustments")
    adjustment = await session.get(Adjustment, adjustment_id, populate_existing=True)
    if adjustment is None or adjustment.state != "awaiting_approval":
        raise AdjustmentDecided(f"adjustment {adjustment_id} is not awaiting approval")
    if adjustment.requested_by == who.user_id:
        raise SameApprover(f"adjustment {adjustment_id}: a second person must approve")
    decided = await session.execute(
        update(Adjustment)
        .where(Adjustment.id == adjustment_id, Adjustment.state == "awaiting_approval")
        .values(state="booked" if approve else "rejected", decided_by=who.user_id, decided_at=utcnow(), note=note)
        .execution_options(synchronize_session=False)
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        raise AdjustmentDecided(f"adjustment {adjustment_id} was decided by someone else")
    if approve:
        await _book(
            session,
            adjustment.member_id,
            adjustment.kind,
            adjustment.points,
            adjustment.reason,
            adjustment.expires_at,
            who,
        )
    await session.refresh(adjustment)
    return adjustment


async def awaiting(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Adjustment).where(Adjustment.state == "awaiting_approval").order_by(Adjustment.requested_at)
    )
    return [
        {
            "id": a.id,
            "member_id": a.member_id,
            "kind": a.kind,
            "points": a.points,
            "reason": a.reason,
            "expires_at": a.expires_at.isoformat() if a.expires_at else None,
            "requested_by": a.requested_by,
            "requested_at": a.requested_at.isoformat(),
        }
        for a in rows.scalars()
    ]
