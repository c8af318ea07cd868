"""Seed the wallboard from the call log, so a restart of the process does not zero today's board.

One aggregate query over today's ended queue calls (any call that entered a queue, as the live
board counts), grouped by queue and hour of entry (the hour buckets are a CASE over today's hour
boundaries computed in the zone, so SQLite and PostgreSQL bucket the same way, DST included), plus
one small query for the calls still live in the log (at most the calls in progress), which the
tracker's resync will announce again and which must count once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.settings import QueuePolicy
from cti.wallboard import LiveCall, SeedCounts, Wallboard

__all__ = ["load_today", "seed_board"]


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _per_queue(board: Wallboard, attr: str) -> ColumnElement[Any]:
    """A queue's policy value as SQL (CASE on the queue name; unknown queues get the default)."""
    default = float(getattr(QueuePolicy(), attr))
    whens = {name: float(getattr(policy, attr)) for name, policy in board.policies.items()}
    if not whens:
        return literal(default)
    return case(whens, value=Call.queue, else_=default)


async def load_today(session: AsyncSession, board: Wallboard, pbx: str) -> tuple[list[SeedCounts], dict[str, LiveCall]]:
    """Today's counters and live calls as the call log has them (see docs/KPIS.md, "After a restart")."""
    starts = board.hour_starts()
    day_start = _utc(board.day_start)
    hour = case(
        (Call.started_at < day_start, -1),
        *((Call.started_at < _utc(t), i) for i, t in enumerate(starts[1:])),
        else_=len(starts) - 1,
    ).label("hour")
    entered_today = Call.started_at >= day_start
    answered = Call.outcome == "answered"
    sl = _per_queue(board, "service_level_seconds")
    short = _per_queue(board, "short_abandon_seconds")

    def count(cond: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((and_(entered_today, cond), 1), else_=0)), 0)

    def total(cond: ColumnElement[bool], value: Any) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((cond, func.coalesce(value, 0.0)), else_=0.0)), 0.0)

    ended_today = and_(answered, Call.ended_at >= day_start)
    query = (
        select(
            Call.queue,
            hour,
            count(Call.id.is_not(None)),
            count(answered),
            count(and_(answered, Call.wait_s <= sl)),
            count(Call.outcome == "abandoned"),
            count(and_(Call.outcome == "abandoned", Call.wait_s < short)),
            count(Call.outcome == "no_answer"),
            total(and_(entered_today, answered), Call.wait_s),
            func.coalesce(func.sum(case((ended_today, 1), else_=0)), 0),
            total(ended_today, Call.talk_s),
            total(ended_today, Call.wrapup_s),
        )
        .where(
            Call.pbx == pbx,
            Call.state == "ended",
            Call.queue.is_not(None),
            or_(entered_today, Call.ended_at >= day_start),
        )
        .group_by(Call.queue, hour)
    )
    groups = [
        SeedCounts(
            queue=row[0],
            hour=int(row[1]),
            offered=int(row[2]),
            answered=int(row[3]),
            answered_within=int(row[4]),
            abandoned=int(row[5]),
            short_abandoned=int(row[6]),
            timed_out=int(row[7]),
            answered_wait_sum=float(row[8]),
            handled=int(row[9]),
            talk_sum=float(row[10]),
            wrapup_sum=float(row[11]),
        )
        for row in await session.execute(query)
    ]
    live_rows = await session.execute(
        select(Call.linkedid, Call.queue, Call.started_at, Call.answered_at).where(
            Call.pbx == pbx,
            Call.state == "live",
            Call.queue.is_not(None),
            Call.started_at >= day_start,
        )
    )
    live: dict[str, LiveCall] = {}
    for linkedid, queue, started_at, answered_at in live_rows:
        if queue is None:  # excluded by the query; narrows the type
            continue
        entered = started_at.timestamp()
        bucket = board.bucket(entered)
        call = LiveCall(queue, entered, bucket, "answered" if answered_at is not None else "waiting")
        live[linkedid] = call
        wait = None if answered_at is None else max(0.0, answered_at.timestamp() - entered)
        groups.append(
            SeedCounts(
                queue=queue,
                hour=bucket,
                offered=1,
                answered=0 if wait is None else 1,
                answered_within=int(wait is not None and wait <= board.policy(queue).service_level_seconds),
                answered_wait_sum=wait or 0.0,
            )
        )
    return groups, live


async def seed_board(sessions: async_sessionmaker[AsyncSession], board: Wallboard, pbx: str) -> int:
    """Load today from the call log into ``board``; returns the number of offered calls seeded."""
    async with sessions() as session:
        groups, live = await load_today(session, board, pbx)
    board.seed(groups, live)
    return sum(g.offered for g in groups)
