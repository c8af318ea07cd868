"""Callback SLA per local day (of creation) and queue: how many missed callers were called back, how
many within their due time, with how many attempts, and what is still open.

Definitions (docs/KPIS.md, "Reports"):
- created: callbacks created that day (a caller's later misses fold into the same callback);
- reached: closed because someone spoke to the caller: an agent logged `reached`, or a later
  answered call with the number closed it (`answered_inbound` / `answered_outbound`);
- reached in time: reached with closed_at ≤ due_at; SLA % = reached in time ÷ created × 100;
- mean attempts to reach: mean of `attempts` over the reached ones (0 when the caller rang back);
- unreachable: closed after the maximum attempts; wrong number: closed as such;
- open: not closed yet; overdue: open and past its due time now.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.callbacks.models import Callback
from crm_core.db import utcnow
from crm_core.reports.buckets import DAY, bucket_start, local_bucket, offset_segments
from crm_core.reports.period import Period
from crm_core.reports.table import Column, ReportTable, ratio

NAME = "callback-sla"
REACHED_REASONS = ("reached", "answered_inbound", "answered_outbound")

COLUMNS = [
    Column("day", "Day", "text"),
    Column("queue", "Queue", "text"),
    Column("created", "Created", "count"),
    Column("reached", "Reached", "count"),
    Column("reached_in_time", "Reached in time", "count"),
    Column("sla_pct", "On-time rate", "percent"),
    Column("mean_attempts", "Mean attempts to reach", "number"),
    Column("unreachable", "Unreachable", "count"),
    Column("wrong_number", "Wrong number", "count"),
    Column("open", "Still open", "count"),
    Column("overdue", "Overdue", "count"),
]
_COUNTS = (
    "created",
    "reached",
    "reached_in_time",
    "reached_attempts",
    "unreachable",
    "wrong_number",
    "open",
    "overdue",
)


async def callback_sla(
    session: AsyncSession,
    period: Period,
    *,
    queues: list[str] | None = None,
    queue: str | None = None,
    now: dt.datetime | None = None,
) -> ReportTable:
    """`queues`: the queues the reader may see (None: all); callbacks without a queue are site-wide."""
    now = now or utcnow()
    segments = offset_segments(period.utc_start, period.utc_end, period.timezone)
    day = local_bucket(Callback.created_at, segments, DAY).label("day")
    reached = Callback.close_reason.in_(REACHED_REASONS)
    is_open = Callback.status != "closed"
    inner = select(
        day,
        Callback.queue.label("queue"),
        reached.label("reached"),
        and_(reached, Callback.closed_at <= Callback.due_at).label("in_time"),
        Callback.attempts.label("attempts"),
        (Callback.close_reason == "unreachable").label("unreachable"),
        (Callback.close_reason == "wrong_number").label("wrong_number"),
        is_open.label("open"),
        and_(is_open, Callback.due_at < now).label("overdue"),
    ).where(Callback.created_at >= period.utc_start, Callback.created_at < period.utc_end)
    if queue is not None:
        inner = inner.where(Callback.queue == queue)
    if queues is not None:
        inner = inner.where(or_(Callback.queue.in_(queues), Callback.queue.is_(None)))
    sub = inner.subquery()

    def flag(column: Any) -> Any:
        return func.sum(cast(column, Integer))

    stmt = (
        select(
            sub.c.day,
            sub.c.queue,
            func.count(),
            flag(sub.c.reached),
            flag(sub.c.in_time),
            func.sum(cast(sub.c.reached, Integer) * sub.c.attempts),
            flag(sub.c.unreachable),
            flag(sub.c.wrong_number),
            flag(sub.c.open),
            flag(sub.c.overdue),
        )
        .group_by(sub.c.day, sub.c.queue)
        .order_by(sub.c.day, sub.c.queue)
    )
    rows: list[dict[str, Any]] = []
    totals = dict.fromkeys(_COUNTS, 0)
    for day_no, queue_name, *counts in await session.execute(stmt):
        figures = dict(zip(_COUNTS, (int(c or 0) for c in counts), strict=True))
        for key, value in figures.items():
            totals[key] += value
        rows.append(
            {"day": bucket_start(int(day_no), DAY).date().isoformat(), "queue": queue_name or ""} | _shown(figures)
        )
    return ReportTable(NAME, period, COLUMNS, rows, totals={"day": "", "queue": ""} | _shown(totals))


def _shown(figures: dict[str, int]) -> dict[str, Any]:
    return {
        "created": figures["created"],
        "reached": figures["reached"],
        "reached_in_time": figures["reached_in_time"],
        "sla_pct": ratio(figures["reached_in_time"], figures["created"], scale=100),
        "mean_attempts": ratio(figures["reached_attempts"], figures["reached"]),
        "unreachable": figures["unreachable"],
        "wrong_number": figures["wrong_number"],
        "open": figures["open"],
        "overdue": figures["overdue"],
    }
