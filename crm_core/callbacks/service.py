"""Missed-call callbacks: dedupe per caller, priority, business-hours due time, atomic claim, attempts.

Every state change is a single conditional UPDATE (or an INSERT … ON CONFLICT on the partial unique
index of open callbacks), so two agents or two server processes can never claim or close one callback
twice, and a replayed missed-call event is a no-op.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Select, and_, case, cast, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks.models import Callback, CallbackAttempt, CallbackMiss
from crm_core.db import insert_for, utcnow
from crm_core.members.models import Member
from crm_core.phones import normalise
from crm_core.security.policy import Principal, apply_field_policy
from crm_core.settings import Settings

TIER_WEIGHT = {"diamond": 300, "gold": 200, "standard": 100}
OUTCOMES = frozenset({"reached", "no_answer", "busy", "wrong_number"})


class CallbackError(Exception):
    pass


class AlreadyClaimed(CallbackError):
    pass


@dataclass(frozen=True, slots=True)
class MissedCall:
    linkedid: str
    phone_raw: str
    source: str  # abandoned | no_answer | after_hours | queue_timeout
    missed_at: dt.datetime
    wait_s: float = 0.0
    queue: str | None = None
    member_id: int | None = None
    pbx: str = "default"


def priority(member_type: str | None, miss_count: int, longest_wait_s: float) -> int:
    """Higher first: the member's tier dominates, then how often and how long they waited."""
    return TIER_WEIGHT.get(member_type or "", 0) + min(miss_count, 9) * 10 + min(int(longest_wait_s // 30), 9)


async def record_missed(
    session: AsyncSession, missed: MissedCall, settings: Settings, calendar: BusinessCalendar
) -> int | None:
    """Fold a missed call into the caller's open callback (creating it); None for unusable numbers.

    Idempotent per call: the (pbx, linkedid) of each miss is unique, so a duplicate event adds nothing.
    """
    e164 = normalise(missed.phone_raw)
    if e164 is None:
        return None  # withheld or garbage caller ID: nobody to call back
    seen = await session.execute(
        select(CallbackMiss.callback_id).where(CallbackMiss.pbx == missed.pbx, CallbackMiss.linkedid == missed.linkedid)
    )
    if (row := seen.first()) is not None:
        return int(row[0])
    member_type = None
    if missed.member_id is not None:
        member_type = (
            await session.execute(select(Member.member_type).where(Member.id == missed.member_id))
        ).scalar_one_or_none()
    due = calendar.add_business_time(missed.missed_at, dt.timedelta(hours=settings.callback_sla_business_hours))
    now = utcnow()
    stmt = insert_for(session, Callback).values(
        phone_e164=e164,
        phone_raw=missed.phone_raw,
        member_id=missed.member_id,
        status="open",
        source=missed.source,
        queue=missed.queue,
        miss_count=1,
        longest_wait_s=missed.wait_s,
        priority=priority(member_type, 1, missed.wait_s),
        first_missed_at=missed.missed_at,
        last_missed_at=missed.missed_at,
        due_at=due,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    cb = Callback.__table__.c
    new_count = cb.miss_count + 1
    new_wait = (
        func.max(cb.longest_wait_s, missed.wait_s)
        if _is_sqlite(session)
        else func.greatest(cb.longest_wait_s, missed.wait_s)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["phone_e164"],
        index_where=text("status <> 'closed'"),
        set_={
            "miss_count": new_count,
            "last_missed_at": missed.missed_at,
            "longest_wait_s": new_wait,
            "member_id": func.coalesce(cb.member_id, missed.member_id),
            # A repeat miss is no later due than the first one promised, and rises in priority.
            "priority": priority(member_type, 0, 0) + _repeat_bonus(new_count, new_wait),
            "updated_at": now,
        },
    ).returning(Callback.id)
    # The upsert and the miss row commit together or not at all: two concurrent deliveries of the same
    # missed call both pass the check above, and the loser of the unique (pbx, linkedid) insert undoes
    # its miss_count increment by rolling back to the savepoint.
    savepoint = await session.begin_nested()
    callback_id = int((await session.execute(stmt)).scalar_one())
    inserted = await session.execute(
        insert_for(session, CallbackMiss)
        .values(
            callback_id=callback_id,
            pbx=missed.pbx,
            linkedid=missed.linkedid,
            source=missed.source,
            wait_s=missed.wait_s,
            missed_at=missed.missed_at,
        )
        .on_conflict_do_nothing()
        .returning(CallbackMiss.id)
    )
    if inserted.first() is None:
        await savepoint.rollback()
        return int((await session.execute(_miss_owner(missed))).scalar_one())
    await savepoint.commit()
    return callback_id


def _miss_owner(missed: MissedCall) -> Select[int]:
    return select(CallbackMiss.callback_id).where(
        CallbackMiss.pbx == missed.pbx, CallbackMiss.linkedid == missed.linkedid
    )


def _repeat_bonus(count: Any, wait: Any) -> Any:
    """SQL twin of priority()'s miss and wait terms, evaluated against the row being updated."""
    miss_term = case((count > 9, 9), else_=count) * 10
    wait_term = case((wait >= 300, 9), else_=cast(wait / 30, Integer))
    return miss_term + wait_term


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


async def claim(session: AsyncSession, principal: Principal, callback_id: int) -> None:
    """Take an open callback; exactly one of several concurrent claimers wins."""
    now = utcnow()
    result = await session.execute(
        update(Callback)
        .where(Callback.id == callback_id, Callback.status == "open")
        .values(status="claimed", claimed_by_user_id=principal.user_id, claimed_at=now, updated_at=now)
        .returning(Callback.id)
    )
    if result.first() is None:
        raise AlreadyClaimed(f"callback {callback_id} is not open")


async def claim_next(session: AsyncSession, principal: Principal, queues: list[str] | None = None) -> int | None:
    """The most urgent open callback that is due for an attempt, claimed for `principal`."""
    now = utcnow()
    candidates = (
        select(Callback.id)
        .where(
            Callback.status == "open",
            or_(Callback.next_attempt_at.is_(None), Callback.next_attempt_at <= now),
            *([Callback.queue.in_(queues)] if queues else []),
        )
        .order_by(Callback.priority.desc(), Callback.due_at, Callback.id)
        .limit(1)
    )
    if not _is_sqlite(session):
        candidates = candidates.with_for_update(skip_locked=True)
    for _ in range(5):  # on SQLite a concurrent claimer may win between the read and the update
        callback_id = (await session.execute(candidates)).scalar_one_or_none()
        if callback_id is None:
            return None
        try:
            await claim(session, principal, callback_id)
            return int(callback_id)
        except AlreadyClaimed:
            continue
    return None


async def release(session: AsyncSession, principal: Principal, callback_id: int) -> None:
    result = await session.execute(
        update(Callback)
        .where(
            Callback.id == callback_id, Callback.status == "claimed", Callback.claimed_by_user_id == principal.user_id
        )
        .values(status="open", claimed_by_user_id=None, claimed_at=None, updated_at=utcnow())
        .returning(Callback.id)
    )
    if result.first() is None:
        raise CallbackError(f"callback {callback_id} is not claimed by {principal.username}")


async def record_attempt(
    session: AsyncSession,
    principal: Principal,
    callback_id: int,
    outcome: str,
    settings: Settings,
    *,
    linkedid: str | None = None,
    note: str | None = None,
) -> str:
    """Log an attempt by the claiming agent; returns the callback's new status.

    reached / wrong number close it; otherwise it reopens for a retry after the retry delay, and is
    closed as unreachable after `callback_max_attempts` attempts.
    """
    if outcome not in OUTCOMES:
        raise CallbackError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
    callback = (
        await session.execute(select(Callback).where(Callback.id == callback_id).with_for_update())
    ).scalar_one_or_none()
    if callback is None:
        raise CallbackError(f"callback {callback_id} not found")
    attempt = CallbackAttempt(
        callback_id=callback_id, user_id=principal.user_id, outcome=outcome, linkedid=linkedid, note=note
    )
    if callback.status == "closed" and linkedid is not None and callback.closed_by_linkedid == linkedid:
        # The agent's own call already closed it (answered outbound) before the outcome was saved.
        session.add(attempt)
        callback.attempts += 1
        await session.flush()
        return callback.status
    if callback.status != "claimed" or callback.claimed_by_user_id != principal.user_id:
        raise CallbackError(f"callback {callback_id} is not claimed by {principal.username}")
    now = utcnow()
    session.add(attempt)
    callback.attempts += 1
    callback.updated_at = now
    callback.claimed_by_user_id = None
    callback.claimed_at = None
    if outcome in ("reached", "wrong_number"):
        _close(callback, outcome, now, linkedid)
    elif callback.attempts >= settings.callback_max_attempts:
        _close(callback, "unreachable", now, linkedid)
    else:
        callback.status = "open"
        callback.next_attempt_at = now + dt.timedelta(minutes=settings.callback_retry_minutes)
    await session.flush()
    return callback.status


def _close(callback: Callback, reason: str, now: dt.datetime, linkedid: str | None) -> None:
    callback.status = "closed"
    callback.close_reason = reason
    callback.closed_at = now
    callback.closed_by_linkedid = linkedid


async def open_callback_numbers(session: AsyncSession) -> set[str]:
    """The numbers (E.164) that have an open or claimed callback: the only ones an answered call can
    close, so the telephony side asks `close_for_answered_call` for these alone."""
    rows = await session.execute(select(Callback.phone_e164).where(Callback.status != "closed").distinct())
    return {phone for (phone,) in rows}


async def close_for_answered_call(
    session: AsyncSession, phone_raw: str | None, direction: str, linkedid: str
) -> int | None:
    """A later answered call with that number (either direction) means the member was reached."""
    e164 = normalise(phone_raw)
    if e164 is None:
        return None
    now = utcnow()
    result = await session.execute(
        update(Callback)
        .where(Callback.phone_e164 == e164, Callback.status != "closed")
        .values(
            status="closed",
            close_reason=f"answered_{direction}",
            closed_at=now,
            closed_by_linkedid=linkedid,
            claimed_by_user_id=None,
            updated_at=now,
        )
        .returning(Callback.id)
    )
    row = result.first()
    return None if row is None else int(row[0])


async def number_to_dial(session: AsyncSession, principal: Principal, callback_id: int) -> tuple[str, int | None]:
    """The callback's number and member, for the claiming agent's click-to-dial only: the agent dials
    it by id and never sees it unmasked."""
    callback = await session.get(Callback, callback_id)
    if callback is None:
        raise CallbackError(f"callback {callback_id} not found")
    if callback.status != "claimed" or callback.claimed_by_user_id != principal.user_id:
        raise CallbackError(f"claim callback {callback_id} before dialling it")
    return callback.phone_e164, callback.member_id


async def list_callbacks(
    session: AsyncSession,
    principal: Principal,
    *,
    mine: bool = False,
    queues: list[str] | None = None,
    include_closed: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """My callbacks (claimed by me) or the team queue (open ones in my queues), most urgent first."""
    now = utcnow()
    conditions = []
    if mine:
        conditions.append(and_(Callback.status == "claimed", Callback.claimed_by_user_id == principal.user_id))
    elif not include_closed:
        conditions.append(Callback.status != "closed")
    if queues:
        conditions.append(Callback.queue.in_(queues))
    rows = await session.execute(
        select(Callback, Member.name)
        .outerjoin(Member, Member.id == Callback.member_id)
        .where(*conditions)
        .order_by(Callback.priority.desc(), Callback.due_at, Callback.id)
        .limit(limit)
    )
    views = []
    for callback, member_name in rows:
        views.append(
            {
                "id": callback.id,
                # Agents see the number masked; they dial the callback by id, never by the number.
                "phone": apply_field_policy(principal, "contact", {"phone": callback.phone_e164}).get("phone"),
                "member_id": callback.member_id,
                "member_name": member_name,
                "status": callback.status,
                "source": callback.source,
                "queue": callback.queue,
                "miss_count": callback.miss_count,
                "priority": callback.priority,
                "attempts": callback.attempts,
                "due_at": callback.due_at.isoformat(),
                "overdue": callback.status != "closed" and callback.due_at < now,
                "claimed_by_user_id": callback.claimed_by_user_id,
                "close_reason": callback.close_reason,
            }
        )
    return views
