"""Service-desk reports over requests created in the period, per team, type and priority.

* service-requests: created, and where they stand now (open, waiting for the customer, resolved,
  closed, merged), with work orders raised.
* service-sla: the seeds' KPIs (DOMAIN.md: "1小时回复率、24小时解决率") per policy: first responses
  and resolutions within target (from `service_sla_status`, i.e. the history in business time),
  still-open requests past due, and warnings / breaches / escalations fired (each once per level).
  Attainment = met ÷ (met + missed), over requests whose clock has stopped; open ones past due are
  counted apart, not as missed yet.

Scoped like the service desk itself (crm_core.service.service.visible): a supervisor sees the teams
below their unit, an administrator all.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import utcnow
from crm_core.reports.period import Period
from crm_core.reports.table import Column, ReportTable, ratio
from crm_core.security.models import OrgUnit
from crm_core.security.policy import Principal
from crm_core.service.models import OPEN_STATES, ServiceRequest, WorkOrder
from crm_core.service.service import visible
from crm_core.service.sla_models import SlaEscalation, SlaStatus

REQUESTS = "service-requests"
SLA = "service-sla"
KEYS = [Column("team", "Team", "text"), Column("type", "Type", "text"), Column("priority", "Priority", "text")]
REQUEST_COLUMNS = [
    *KEYS,
    Column("created", "Created"),
    Column("open", "Open"),
    Column("waiting", "Waiting for the customer"),
    Column("resolved", "Resolved"),
    Column("closed", "Closed"),
    Column("merged", "Merged"),
    Column("work_orders", "Work orders"),
]
SLA_COLUMNS = [
    *KEYS,
    Column("created", "Created"),
    Column("response_met", "First response in time"),
    Column("response_pct", "First-response rate", "percent"),
    Column("resolution_met", "Resolved in time"),
    Column("resolution_pct", "Resolution rate", "percent"),
    Column("open_overdue", "Open and overdue"),
    Column("warnings", "Warnings"),
    Column("breaches", "Breaches"),
    Column("escalations", "Escalations"),
]


def _flag(condition: Any) -> Any:
    return func.sum(cast(case((condition, 1), else_=0), Integer))


async def _grouped(session: AsyncSession, principal: Principal, period: Period, columns: list[Any]) -> list[Any]:
    stmt = (
        select(OrgUnit.code, ServiceRequest.type, ServiceRequest.priority, func.count(), *columns)
        .join(OrgUnit, OrgUnit.id == ServiceRequest.team_id)
        .outerjoin(SlaStatus, SlaStatus.request_id == ServiceRequest.id)
        .where(
            ServiceRequest.created_at >= period.utc_start,
            ServiceRequest.created_at < period.utc_end,
            visible(principal),
        )
        .group_by(OrgUnit.code, ServiceRequest.type, ServiceRequest.priority)
        .order_by(OrgUnit.code, ServiceRequest.type, ServiceRequest.priority)
    )
    return list((await session.execute(stmt)).all())


def _table(name: str, period: Period, columns: list[Column], rows: list[dict[str, Any]]) -> ReportTable:
    totals: dict[str, Any] = {"team": "", "type": "", "priority": ""}
    for column in columns[3:]:
        if column.kind == "count":
            totals[column.key] = sum(int(r[column.key]) for r in rows)
    for pct, met, missed in (
        ("response_pct", "response_met", "_response_missed"),
        ("resolution_pct", "resolution_met", "_resolution_missed"),
    ):
        if pct in {c.key for c in columns}:
            done = totals[met] + sum(r.pop(missed, 0) for r in rows)
            totals[pct] = ratio(totals[met], done, scale=100)
    return ReportTable(name, period, columns, rows, totals=totals)


async def service_requests(session: AsyncSession, principal: Principal, period: Period) -> ReportTable:
    orders = select(func.count()).where(WorkOrder.request_id == ServiceRequest.id).scalar_subquery()
    open_states = [str(s) for s in OPEN_STATES if s != "waiting_customer"]
    rows = []
    for team, kind, priority, created, *counts in await _grouped(
        session,
        principal,
        period,
        [
            _flag(ServiceRequest.state.in_(open_states)),
            _flag(ServiceRequest.state == "waiting_customer"),
            _flag(ServiceRequest.state == "resolved"),
            _flag(ServiceRequest.state == "closed"),
            _flag(ServiceRequest.state == "merged"),
            func.sum(orders),
        ],
    ):
        keys = ("open", "waiting", "resolved", "closed", "merged", "work_orders")
        rows.append(
            {"team": team, "type": kind, "priority": priority, "created": int(created)}
            | {k: int(v or 0) for k, v in zip(keys, counts, strict=True)}
        )
    return _table(REQUESTS, period, REQUEST_COLUMNS, rows)


async def service_sla(session: AsyncSession, principal: Principal, period: Period) -> ReportTable:
    now = utcnow()
    stopped_response = SlaStatus.response_at.is_not(None)
    stopped_resolution = SlaStatus.resolution_at.is_not(None)
    is_open = ServiceRequest.state.in_([str(s) for s in OPEN_STATES])
    grouped = await _grouped(
        session,
        principal,
        period,
        [
            _flag(and_(stopped_response, SlaStatus.response_breached.is_(False))),
            _flag(and_(stopped_response, SlaStatus.response_breached.is_(True))),
            _flag(and_(stopped_resolution, SlaStatus.resolution_breached.is_(False), ~is_open)),
            _flag(and_(stopped_resolution, SlaStatus.resolution_breached.is_(True), ~is_open)),
            _flag(and_(is_open, SlaStatus.resolution_due_at < now)),
        ],
    )
    fired: dict[tuple[str, str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    escalations = (
        select(OrgUnit.code, ServiceRequest.type, ServiceRequest.priority, SlaEscalation.level, func.count())
        .join(ServiceRequest, ServiceRequest.id == SlaEscalation.request_id)
        .join(OrgUnit, OrgUnit.id == ServiceRequest.team_id)
        .where(
            ServiceRequest.created_at >= period.utc_start,
            ServiceRequest.created_at < period.utc_end,
            visible(principal),
        )
        .group_by(OrgUnit.code, ServiceRequest.type, ServiceRequest.priority, SlaEscalation.level)
    )
    for team, kind, priority, level, count in await session.execute(escalations):
        fired[team, kind, priority][int(level)] = int(count)
    rows = []
    for team, kind, priority, created, r_met, r_missed, s_met, s_missed, overdue in grouped:
        levels = fired[team, kind, priority]
        r_met, r_missed, s_met, s_missed = (int(v or 0) for v in (r_met, r_missed, s_met, s_missed))
        rows.append(
            {
                "team": team,
                "type": kind,
                "priority": priority,
                "created": int(created),
                "response_met": r_met,
                "response_pct": ratio(r_met, r_met + r_missed, scale=100),
                "resolution_met": s_met,
                "resolution_pct": ratio(s_met, s_met + s_missed, scale=100),
                "open_overdue": int(overdue or 0),
                "warnings": levels[0],
                "breaches": levels[1],
                "escalations": levels[2],
                "_response_missed": r_missed,
                "_resolution_missed": s_missed,
            }
        )
    table = _table(SLA, period, SLA_COLUMNS, rows)
    for row in table.rows:
        row.pop("_response_missed", None)
        row.pop("_resolution_missed", None)
    return table
