"""Hourly heat map of queue traffic in local time: weekday × hour or date × hour, with offered,
answered, abandoned, missed and the abandon rate per cell.

The database groups by local hour number (`buckets.local_bucket`, at most 24 × 366 groups); folding
hours into weekdays or dates is done here, so both shapes come from one query.

Definitions (the wallboard's, docs/KPIS.md): offered = calls that entered a queue (`calls.queue`
set), by their start; answered / abandoned (the caller hung up waiting) / missed (= timed out,
outcome no_answer: the queue's timeout or no agents) by the call's outcome; a short abandon waited
less than the queue's `short_abandon_seconds` (default 0: none); abandon rate = (abandoned − short)
÷ (answered + abandoned − short + missed) × 100, i.e. over the calls that left the queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import Integer, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import Call
from crm_core.reports.buckets import HOUR, bucket_start, local_bucket, offset_segments
from crm_core.reports.period import Period
from crm_core.reports.table import Column, ReportTable, ratio
from crm_core.settings import QueuePolicy

NAME = "heatmap"
Shape = Literal["weekday", "date"]
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FIGURES = ("offered", "answered", "abandoned", "short_abandoned", "missed")

COLUMNS = [
    Column("day", "Day", "text"),
    Column("hour", "Hour", "count"),
    Column("offered", "Offered", "count"),
    Column("answered", "Answered", "count"),
    Column("abandoned", "Abandoned", "count"),
    Column("short_abandoned", "Short abandoned", "count"),
    Column("missed", "Missed", "count"),
    Column("abandon_pct", "Abandon rate", "percent"),
]


async def heatmap(
    session: AsyncSession,
    period: Period,
    *,
    shape: Shape = "weekday",
    queues: list[str] | None = None,
    queue: str | None = None,
    policies: Mapping[str, QueuePolicy] | None = None,
) -> ReportTable:
    """`queues`: the queues the reader may see (None: all); `policies`: per-queue short-abandon
    thresholds (settings.queues; queues not listed use the default policy)."""
    segments = offset_segments(period.utc_start, period.utc_end, period.timezone)
    policies = policies or {}
    default_short = QueuePolicy().short_abandon_seconds
    short_after = (
        case(
            {name: policy.short_abandon_seconds for name, policy in policies.items()},
            value=Call.queue,
            else_=default_short,
        )
        if policies
        else literal(default_short)
    )
    inner = select(
        local_bucket(Call.started_at, segments, HOUR).label("hour"),
        Call.outcome.label("outcome"),
        and_(Call.outcome == "abandoned", Call.wait_s < short_after).label("short"),
    ).where(
        Call.started_at >= period.utc_start,
        Call.started_at < period.utc_end,
        Call.queue.is_not(None),
    )
    if queue is not None:
        inner = inner.where(Call.queue == queue)
    if queues is not None:
        inner = inner.where(Call.queue.in_(queues))
    sub = inner.subquery()

    def count_of(outcome: str) -> Any:
        return func.sum(cast(sub.c.outcome == outcome, Integer))

    stmt = select(
        sub.c.hour,
        func.count(),
        count_of("answered"),
        count_of("abandoned"),
        func.sum(cast(sub.c.short, Integer)),
        count_of("no_answer"),
    ).group_by(sub.c.hour)
    labels = _row_labels(period, shape)
    cells: dict[tuple[str, int], dict[str, int]] = {}
    for hour_no, *counts in await session.execute(stmt):
        local = bucket_start(int(hour_no), HOUR)
        key = (_label(local.date(), shape), local.hour)
        cell = cells.setdefault(key, dict.fromkeys(FIGURES, 0))
        for name, value in zip(FIGURES, counts, strict=True):
            cell[name] += int(value or 0)
    rows = []
    grid = []
    peak = 0
    for label in labels:
        line = []
        for hour in range(24):
            cell = cells.get((label, hour), dict.fromkeys(FIGURES, 0))
            rate = abandon_rate(cell)
            shown = {"day": label, "hour": hour} | cell | {"abandon_pct": rate}
            peak = max(peak, cell["offered"])
            line.append(shown)
            rows.append(shown)
        grid.append({"label": label, "cells": line})
    totals = {name: sum(c[name] for c in cells.values()) for name in FIGURES}
    totals["abandon_pct"] = abandon_rate(totals)  # type: ignore[assignment]
    return ReportTable(
        NAME,
        period,
        COLUMNS,
        rows,
        totals={"day": "", "hour": ""} | totals,
        extra={"shape": shape, "grid": grid, "peak_offered": peak},
    )


def abandon_rate(cell: Mapping[str, int]) -> float | None:
    """The wallboard's abandon rate: counted abandons over the calls that left the queue."""
    counted = cell["abandoned"] - cell["short_abandoned"]
    return ratio(counted, counted + cell["answered"] + cell["missed"], scale=100)


def _label(day: dt.date, shape: Shape) -> str:
    return WEEKDAYS[day.weekday()] if shape == "weekday" else day.isoformat()


def _row_labels(period: Period, shape: Shape) -> list[str]:
    if shape == "weekday":
        return list(WEEKDAYS)
    return [(period.start + dt.timedelta(days=n)).isoformat() for n in range(period.days)]
