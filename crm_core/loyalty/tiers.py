"""Card tiers: immediate upgrade on qualifying points, downgrade only at the period review, a manual floor,
and an audit row for every change.

Reading of the pharmacy seed (DOMAIN.md §2.5, "任一自然季度消费满1200分" → 当年金卡, 5,000 → 当年钻石卡):

* qualifying points (升级积分) are the points of *qualifying* lots (purchases, not gifts) that became valid
  and were not clawed back, counted in the calendar period — quarter or year, Asia/Shanghai — in which they
  were earned (`PointsLot.earned_at`). They are separate from redeemable points: spending or expiry does
  not lower them; a return does (the clawed-back lot stops counting). Escrow-release lots never count;
* reaching a tier's threshold within one period upgrades the member at once (`apply_upgrade`, called by
  whoever earns or verifies points, in the same transaction);
* a tier reached is held to the end of that calendar year (当年), `held_until`. A return after an
  upgrade does not downgrade at once: downgrades happen only at the period review;
* the period review (`review_tiers`, an idempotent job) looks at members whose `held_until` has passed and
  sets them to the highest tier they qualify for in the current period, but never below a manual floor
  still in force; the new tier is held to the end of the year again (or to the floor's end);
* a manual floor (`set_floor`) keeps a member at least at a tier until a date, raising them at once if below.

Per-member changes lock the member's points account first (the same lock order as the ledger).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import insert_for, utcnow
from crm_core.loyalty.ledger import lock_account, user_id_of
from crm_core.loyalty.models import LotSource, LotState, MemberTier, PointsLot, TierChange, TierDefinition, TierPeriod
from crm_core.loyalty.rules import SHANGHAI
from crm_core.members.models import Member
from crm_core.security.policy import Principal


class TierChangeReason(enum.StrEnum):
    UPGRADE = "upgrade"  # qualifying points crossed a threshold
    PERIOD_REVIEW = "period_review"
    MANUAL_FLOOR = "manual_floor"


class UnknownTier(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Tier:
    code: str
    name: str
    rank: int
    threshold: int
    period: TierPeriod


# The pharmacy seed: 普通 → 金卡 at 1,200 qualifying points in a calendar quarter → 钻石卡 at 5,000.
SEED_TIERS = (
    Tier("standard", "普通", 0, 0, TierPeriod.QUARTER),
    Tier("gold", "金卡", 1, 1_200, TierPeriod.QUARTER),
    Tier("diamond", "钻石卡", 2, 5_000, TierPeriod.QUARTER),
)


@dataclass(frozen=True, slots=True)
class TierStatus:
    """What the 360 shows: the tier, how long it holds, and progress to the next one this period."""

    tier: str
    held_until: dt.datetime | None
    period_points: int
    next_tier: str | None
    points_to_next: int | None
    floor_tier: str | None
    floor_until: dt.datetime | None


def period_bounds(period: TierPeriod, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The calendar quarter or year (Asia/Shanghai) containing `at`, as UTC [start, end)."""
    local = at.astimezone(SHANGHAI)
    if period == TierPeriod.QUARTER:
        first_month = 3 * ((local.month - 1) // 3) + 1
        start = dt.datetime(local.year, first_month, 1, tzinfo=SHANGHAI)
        end = (
            dt.datetime(local.year + 1, 1, 1, tzinfo=SHANGHAI)
            if first_month == 10
            else dt.datetime(local.year, first_month + 3, 1, tzinfo=SHANGHAI)
        )
    else:
        start = dt.datetime(local.year, 1, 1, tzinfo=SHANGHAI)
        end = dt.datetime(local.year + 1, 1, 1, tzinfo=SHANGHAI)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def end_of_year(at: dt.datetime) -> dt.datetime:
    """当年: a tier reached at `at` holds until the next 1 January 00:00 Asia/Shanghai."""
    return dt.datetime(at.astimezone(SHANGHAI).year + 1, 1, 1, tzinfo=SHANGHAI).astimezone(dt.UTC)


def deserved_tier(tiers: list[Tier], points_by_period: dict[TierPeriod, int]) -> Tier:
    """The highest tier whose threshold the member's qualifying points in its period reach (pure)."""
    ordered = sorted(tiers, key=lambda tier: tier.rank)
    best = ordered[0]
    for tier in ordered:
        if points_by_period.get(tier.period, 0) >= tier.threshold:
            best = tier
    return best


async def seed_tiers(session: AsyncSession, tiers: tuple[Tier, ...] = SEED_TIERS) -> None:
    """Insert the tier table if it is missing (idempotent)."""
    for tier in tiers:
        stmt = insert_for(session, TierDefinition.__table__).values(
            code=tier.code, name=tier.name, rank=tier.rank, threshold=tier.threshold, period=tier.period
        )
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["code"]))


async def load_tiers(session: AsyncSession) -> list[Tier]:
    rows = (await session.execute(select(TierDefinition).order_by(TierDefinition.rank))).scalars()
    return [Tier(row.code, row.name, row.rank, row.threshold, TierPeriod(row.period)) for row in rows]


async def qualifying_points(session: AsyncSession, member_id: int, period: TierPeriod, at: dt.datetime) -> int:
    """Qualifying points earned in the calendar period containing `at` (valid or since expired)."""
    start, end = period_bounds(period, at)
    total = await session.execute(
        select(func.coalesce(func.sum(PointsLot.amount - PointsLot.clawed_back), 0)).where(
            PointsLot.member_id == member_id,
            PointsLot.qualifying.is_(True),
            PointsLot.source != LotSource.ESCROW_RELEASE,
            PointsLot.state.in_([LotState.VALID, LotState.EXPIRED]),
            PointsLot.earned_at >= start,
            PointsLot.earned_at < end,
        )
    )
    return int(total.scalar_one())


async def _points_by_period(
    session: AsyncSession, member_id: int, tiers: list[Tier], at: dt.datetime
) -> dict[TierPeriod, int]:
    return {period: await qualifying_points(session, member_id, period, at) for period in {t.period for t in tiers}}


async def _state(session: AsyncSession, member_id: int) -> tuple[str, MemberTier | None]:
    current = (await session.execute(select(Member.member_type).where(Member.id == member_id))).scalar_one()
    row = (
        await session.execute(
            select(MemberTier).where(MemberTier.member_id == member_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return current, row


async def _change_tier(
    session: AsyncSession,
    member_id: int,
    from_tier: str,
    to_tier: str,
    reason: TierChangeReason,
    held_until: dt.datetime | None,
    *,
    note: str | None = None,
    who: Principal | None = None,
) -> None:
    if from_tier != to_tier:
        await session.execute(
            update(Member)
            .where(Member.id == member_id)
            .values(member_type=to_tier)
            .execution_options(synchronize_session=False)
        )
        session.add(
            TierChange(
                member_id=member_id,
                from_tier=from_tier,
                to_tier=to_tier,
                reason=reason,
                note=note,
                changed_by=user_id_of(who),
            )
        )
    stmt = insert_for(session, MemberTier.__table__).values(member_id=member_id, held_until=held_until)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["member_id"], set_={"held_until": held_until, "updated_at": utcnow()}
        )
    )


def _rank(tiers: list[Tier], code: str) -> int:
    for tier in tiers:
        if tier.code == code:
            return tier.rank
    raise UnknownTier(code)


async def apply_upgrade(session: AsyncSession, member_id: int, at: dt.datetime) -> str | None:
    """Upgrade at once if the qualifying points of the period containing `at` reach a higher tier.

    Returns the new tier code, or None when nothing changed. Never downgrades. Reaching the member's
    current tier again extends how long it holds (to the end of `at`'s year).
    """
    await lock_account(session, member_id)
    tiers = await load_tiers(session)
    if not tiers:
        return None  # no tier table configured: nothing to upgrade to
    current, row = await _state(session, member_id)
    deserved = deserved_tier(tiers, await _points_by_period(session, member_id, tiers, at))
    if deserved.rank < _rank(tiers, current) or deserved.rank == tiers[0].rank:
        return None
    held_until = end_of_year(at)
    if row is not None and row.held_until is not None and row.held_until > held_until:
        held_until = row.held_until
    if deserved.code == current:
        if row is None or row.held_until != held_until:
            await _change_tier(session, member_id, current, current, TierChangeReason.UPGRADE, held_until)
        return None
    await _change_tier(
        session,
        member_id,
        current,
        deserved.code,
        TierChangeReason.UPGRADE,
        held_until,
        note=f"{deserved.threshold} qualifying points in the {deserved.period}",
    )
    return deserved.code


async def set_floor(
    session: AsyncSession,
    member_id: int,
    tier_code: str,
    until: dt.datetime,
    *,
    reason: str,
    who: Principal | None = None,
) -> None:
    """Keep the member at least at `tier_code` until `until`; raises them at once if they are below."""
    if not reason.strip():
        raise ValueError("a tier floor needs a reason")
    await lock_account(session, member_id)
    tiers = await load_tiers(session)
    floor_rank = _rank(tiers, tier_code)
    current, row = await _state(session, member_id)
    held_until = row.held_until if row is not None else None
    if floor_rank > _rank(tiers, current):
        held_until = until if held_until is None else max(held_until, until)
        await _change_tier(
            session, member_id, current, tier_code, TierChangeReason.MANUAL_FLOOR, held_until, note=reason, who=who
        )
    values = {"floor_tier": tier_code, "floor_until": until, "floor_reason": reason, "held_until": held_until}
    stmt = insert_for(session, MemberTier.__table__).values(member_id=member_id, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["member_id"], set_=values))


async def review_tiers(session: AsyncSession, now: dt.datetime) -> int:
    """The period review: members whose tier's hold has ended get the tier they deserve now (the floor
    still in force is the minimum). Idempotent: a second run at the same `now` finds nobody. Returns the
    number of tier changes."""
    tiers = await load_tiers(session)
    base = tiers[0]
    due = (
        await session.execute(
            select(MemberTier.member_id).where(MemberTier.held_until <= now).order_by(MemberTier.member_id)
        )
    ).scalars()
    changes = 0
    for member_id in list(due):
        await lock_account(session, member_id)
        current, row = await _state(session, member_id)
        if row is None or row.held_until is None or row.held_until > now:
            continue  # changed since we listed it
        target = deserved_tier(tiers, await _points_by_period(session, member_id, tiers, now))
        held_until: dt.datetime | None = end_of_year(now) if target.rank > base.rank else None
        floor_in_force = row.floor_tier is not None and row.floor_until is not None and row.floor_until > now
        if floor_in_force and row.floor_tier is not None and _rank(tiers, row.floor_tier) > target.rank:
            target = next(tier for tier in tiers if tier.code == row.floor_tier)
            held_until = row.floor_until
        await _change_tier(
            session,
            member_id,
            current,
            target.code,
            TierChangeReason.PERIOD_REVIEW,
            held_until,
            note=f"{target.period} review",
        )
        changes += current != target.code
    return changes


async def tier_status(session: AsyncSession, member_id: int, now: dt.datetime) -> TierStatus:
    """The member's tier, its hold, and how many qualifying points this period still lack for the next."""
    tiers = await load_tiers(session)
    current, row = await _state(session, member_id)
    ranks = {tier.code: tier.rank for tier in tiers}
    # A site whose tier table is not seeded yet (the nightly job seeds it) or a member on a tier since
    # removed: no next tier to show, rather than a failed 360.
    higher = [tier for tier in tiers if current in ranks and tier.rank > ranks[current]]
    next_tier = higher[0] if higher else None
    period = next_tier.period if next_tier else (tiers[-1].period if tiers else None)
    period_points = await qualifying_points(session, member_id, period, now) if period else 0
    return TierStatus(
        tier=current,
        held_until=row.held_until if row else None,
        period_points=period_points,
        next_tier=next_tier.code if next_tier else None,
        points_to_next=max(0, next_tier.threshold - period_points) if next_tier else None,
        floor_tier=row.floor_tier if row else None,
        floor_until=row.floor_until if row else None,
    )


async def tier_history(session: AsyncSession, member_id: int) -> list[TierChange]:
    rows = await session.execute(
        select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.changed_at, TierChange.id)
    )
    return list(rows.scalars())
