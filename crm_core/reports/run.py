"""One entry point for every report: name, reader, period and filters in, a `ReportTable` out."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, get_args

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import make_engine, make_sessionmaker, read_session
from crm_core.reports import agent_performance, callback_sla, export, heatmap, service_desk, survey_scores
from crm_core.reports.period import Period
from crm_core.reports.scope import visible_queues
from crm_core.reports.table import ReportTable
from crm_core.security.policy import PermissionDenied, Principal
from crm_core.security.service import principal_by_username
from crm_core.settings import Settings

ReportName = Literal["agent-performance", "callback-sla", "heatmap", "service-requests", "service-sla", "survey-scores"]
REPORT_NAMES: tuple[str, ...] = get_args(ReportName)


class UnknownReport(ValueError):
    pass


async def run_report(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    name: str,
    period: Period,
    *,
    queue: str | None = None,
    shape: heatmap.Shape = "weekday",
    now: dt.datetime | None = None,
) -> ReportTable:
    """Run report `name` as `principal` sees it; a queue outside the reader's scope is refused."""
    if name not in REPORT_NAMES:
        raise UnknownReport(f"unknown report {name!r}; expected one of {', '.join(REPORT_NAMES)}")
    queues = await visible_queues(session, principal, settings)
    if queue is not None and queues is not None and queue not in queues:
        raise PermissionDenied(f"queue {queue} is outside your teams")
    async with _without_jit(session):
        if name == agent_performance.NAME:
            return await agent_performance.agent_performance(session, principal, period, queue=queue, now=now)
        if name == service_desk.REQUESTS:
            return await service_desk.service_requests(session, principal, period)
        if name == service_desk.SLA:
            return await service_desk.service_sla(session, principal, period)
        if name == survey_scores.NAME:
            return await survey_scores.survey_scores(session, period, queues=queues, queue=queue)
        if name == callback_sla.NAME:
            return await callback_sla.callback_sla(session, period, queues=queues, queue=queue, now=now)
        return await heatmap.heatmap(session, period, shape=shape, queues=queues, queue=queue, policies=settings.queues)


@asynccontextmanager
async def _without_jit(session: AsyncSession) -> AsyncIterator[None]:
    """PostgreSQL's JIT compiles these aggregates (high estimated cost) for seconds, far more than it
    saves: the 30-day agent report over 330k calls and 1.2M state rows took a median 3.5 s with JIT
    and 1.5 s without (scripts/bench/reports.py; JIT emission alone was 2.9 s of one query).
    Off for the report's queries, back to the server's setting after."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    await session.execute(text("SET jit = off"))
    try:
        yield
    finally:
        # In a transaction that failed, RESET cannot run, but the rollback reverts the SET anyway.
        with contextlib.suppress(SQLAlchemyError):
            await session.execute(text("RESET jit"))


async def export_report_file(
    settings: Settings,
    name: str,
    period: Period,
    fmt: export.Format,
    *,
    username: str,
    directory: Path | None = None,
    output: Path | None = None,
    queue: str | None = None,
    shape: heatmap.Shape = "weekday",
) -> Path:
    """`cti report`: write report `name` as `username` sees it; returns the file written (by default
    `<name>_<from>_<to>.<fmt>` in `directory`). Headers are in English (the panel translates its own)."""
    engine = make_engine(settings.database_url)
    try:
        sessions = make_sessionmaker(engine)
        async with read_session(sessions) as session:
            principal = await principal_by_username(session, username)
            table = await run_report(session, principal, settings, name, period, queue=queue, shape=shape)
    finally:
        await engine.dispose()
    target = output or (directory or Path.cwd()) / export.filename(table, fmt)
    body = await asyncio.to_thread(export.render, table, fmt)
    await asyncio.to_thread(target.write_bytes, body)
    return target
