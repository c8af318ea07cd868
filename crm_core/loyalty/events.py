"""Event points (其他积分规则): joining, birthdays and referrals, each given at most once per occasion.

The rule in force at the event's moment decides the points and their expiry (rule_book.py). Once-only is
the unique (member, event, occasion) row in `loyalty_event_awards`, inserted before the lot is booked: a
birthday job run twice, two servers running it at once, or a referral submitted twice cannot grant twice.
Event lots are redeemable but not qualifying: the seeds' tiers count spend (任一自然季度消费满1200分).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, extract, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import insert_for, transaction
from crm_core.loyalty import ledger, rule_book
from crm_core.loyalty.models import EventAward, LotSource
from crm_core.loyalty.rules import SHANGHAI
from crm_core.members.models import Member
from crm_core.security.policy import Principal


@dataclass(frozen=True, slots=True)
class Award:
    member_id: int
    event: str
    occasion: str
    points: int
    lot_id: int
    expires_at: dt.datetime | None


async def award(
    session: AsyncSession,
    book: rule_book.RuleBook,
    member_id: int,
    event: str,
    occasion: str,
    at: dt.datetime,
    *,
    who: Principal | None = None,
) -> Award | None:
    """Grant `event`'s points for `occasion` if a rule gives any and they were not granted before."""
    member = (
        await session.execute(select(Member.customer_type, Member.created_at).where(Member.id == member_id))
    ).one_or_none()
    if member is None:
        raise ValueError(f"member {member_id} not found")
    joined_on = member.created_at.astimezone(SHANGHAI).date()
    grant = book.event_grant(event, at, customer_type=member.customer_type, joined_on=joined_on)
    if grant is None:
        return None
    inserted = await session.execute(
        insert_for(session, EventAward)
        .values(member_id=member_id, event=event, occasion=occasion, rule_id=grant.rule_id, points=grant.points)
        .on_conflict_do_nothing(index_elements=["member_id", "event", "occasion"])
        .returning(EventAward.id)
    )
    award_id = inserted.scalar()
    if award_id is None:
        return None
    lot_id = await ledger.earn(
        session,
        member_id,
        grant.points,
        earned_at=at,
        expires_at=grant.expires_at,
        transaction_ref=f"{event}:{occasion}",
        qualifying=False,
        reason=grant.name,
        who=who,
        source=LotSource.EVENT,
        name=grant.name,
    )
    await session.execute(update(EventAward).where(EventAward.id == award_id).values(lot_id=lot_id))
    return Award(member_id, event, occasion, grant.points, lot_id, grant.expires_at)


async def award_join(session: AsyncSession, member_id: int, at: dt.datetime) -> Award | None:
    """注册赠送: called when a member becomes a full member (members.service.approve)."""
    return await award(session, await rule_book.load(session), member_id, "join", "join", at)


async def award_referral(
    session: AsyncSession, referrer_id: int, referred_id: int, at: dt.datetime, *, who: Principal | None
) -> Award | None:
    """推荐客户赠送 to the referrer, once per referred member."""
    if referrer_id == referred_id:
        raise ValueError("a member cannot refer themselves")
    exists = (await session.execute(select(Member.id).where(Member.id == referred_id))).scalar()
    if exists is None:
        raise ValueError(f"referred member {referred_id} not found")
    book = await rule_book.load(session)
    return await award(session, book, referrer_id, "referral", f"referral:{referred_id}", at, who=who)


def _birthdays_on(day: dt.date) -> list[tuple[int, int]]:
    """(month, day) pairs celebrated on `day`: 02-29 birthdays are kept on 02-28 in common years."""
    pairs = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and not _leap(day.year):
        pairs.append((2, 29))
    return pairs


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


async def award_birthdays(sessions: async_sessionmaker[AsyncSession], now: dt.datetime, *, batch: int = 500) -> int:
    """Birthday points for every active member whose birthday is today (Shanghai), once per year.
    Runs from the nightly job; members are granted in batches of `batch`, each its own transaction."""
    today = now.astimezone(SHANGHAI).date()
    async with transaction(sessions) as session:
        book = await rule_book.load(session)
        if not any(isinstance(r.params, rule_book.EventParams) and r.params.event == "birthday" for r in book.rules):
            return 0
        match = or_(
            *(
                and_(extract("month", Member.birthday) == month, extract("day", Member.birthday) == day)
                for month, day in _birthdays_on(today)
            )
        )
        member_ids = list(
            (await session.execute(select(Member.id).where(Member.status == "active", match).order_by(Member.id)))
            .scalars()
            .all()
        )
    granted = 0
    for start in range(0, len(member_ids), batch):
        async with transaction(sessions) as session:
            for member_id in member_ids[start : start + batch]:
                granted += await award(session, book, member_id, "birthday", str(today.year), now) is not None
    return granted
