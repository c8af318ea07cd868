"""Keeping `service_sla_status` equal to what the history says: after each change (`refresh`), for
every open request after a calendar or policy change (`recompute_open`), and the policies' defaults."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, null, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calendar_store import STORE
from crm_core.db import insert_for, utcnow
from crm_core.service import sla
from crm_core.service.models import OPEN_STATES, ServiceRequest, ServiceRequestEvent
from crm_core.service.sla_models import SlaPolicy, SlaStatus

# Only the created and priority events' data (type, priority) matter to the clocks; not decoding the
# JSON of every other event saved a fifth of a 100,000-request recomputation.
_DATA_THAT_MATTERS = case(
    (ServiceRequestEvent.kind.in_(("created", "priority")), ServiceRequestEvent.data), else_=null()
).label("data")
_STATUS_COLUMNS = (
    "response_due_at",
    "response_at",
    "response_breached",
    "resolution_due_at",
    "resolution_at",
    "resolution_breached",
    "resolution_used_s",
    "paused",
    "next_check_at",
    "computed_at",
)


async def targets(session: AsyncSession) -> sla.TargetsFor:
    rows = await session.execute(
        select(
            SlaPolicy.type,
            SlaPolicy.priority,
            SlaPolicy.first_response_minutes,
            SlaPolicy.resolution_minutes,
            SlaPolicy.warn_percent,
            SlaPolicy.escalate_percent,
        )
    )
    return sla.target_table([tuple(r) for r in rows.all()])  # type: ignore[misc]


def history_of(rows: Iterable[ServiceRequestEvent | Any]) -> list[sla.HistoryEvent]:
    return [sla.HistoryEvent(r.at, r.kind, r.to_state, r.data) for r in rows]


def status_row(request_id: int, result: sla.SlaResult, now: dt.datetime) -> dict[str, Any]:
    response, resolution = result.response, result.resolution
    return {
        "request_id": request_id,
        "response_due_at": response.due_at if response.running or response.breached else None,
        "response_at": response.done_at,
        "response_breached": response.breached,
        "resolution_due_at": resolution.due_at,
        "resolution_at": resolution.done_at,
        "resolution_breached": resolution.breached,
        "resolution_used_s": int(resolution.used_now.total_seconds()),
        "paused": result.paused,
        "next_check_at": result.next_check_at,
        "computed_at": now,
    }


async def _upsert(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    # One statement compiled once, sent with many parameter sets (asyncpg batches them): building a
    # VALUES list of thousands of rows per call cost more CPU than the SLA arithmetic itself.
    stmt = insert_for(session, SlaStatus.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["request_id"], set_={c: getattr(stmt.excluded, c) for c in _STATUS_COLUMNS}
    )
    await session.execute(stmt, rows)


async def compute_for(session: AsyncSession, request_id: int, *, now: dt.datetime | None = None) -> sla.SlaResult:
    now = now or utcnow()
    team_id = (
        await session.execute(select(ServiceRequest.team_id).where(ServiceRequest.id == request_id))
    ).scalar_one()
    events = await session.execute(
        select(ServiceRequestEvent.at, ServiceRequestEvent.kind, ServiceRequestEvent.to_state, ServiceRequestEvent.data)
        .where(ServiceRequestEvent.request_id == request_id)
        .order_by(ServiceRequestEvent.at, ServiceRequestEvent.id)
    )
    calendar = await STORE.for_team(session, team_id)
    return sla.compute(history_of(events.all()), await targets(session), calendar, now)


async def refresh(session: AsyncSession, request_id: int, *, now: dt.datetime | None = None) -> sla.SlaResult:
    now = now or utcnow()
    result = await compute_for(session, request_id, now=now)
    await _upsert(session, [status_row(request_id, result, now)])
    return result


async def recompute_open(
    sessions: async_sessionmaker[AsyncSession], *, now: dt.datetime | None = None, batch: int = 5_000
) -> int:
    """Every open (or paused) request's status from its history, in batches of `batch` requests, each
    batch one read of the requests, one of their events in order and one multi-row upsert."""
    now = now or utcnow()
    done, after = 0, 0
    async with sessions() as session:
        targets_for = await targets(session)
    while True:
        async with sessions() as session, session.begin():
            requests = (
                await session.execute(
                    select(ServiceRequest.id, ServiceRequest.team_id)
                    .where(ServiceRequest.id > after, ServiceRequest.state.in_([str(s) for s in OPEN_STATES]))
                    .order_by(ServiceRequest.id)
                    .limit(batch)
                )
            ).all()
            if not requests:
                return done
            ids = [r.id for r in requests]
            events: dict[int, list[sla.HistoryEvent]] = defaultdict(list)
            connection = await session.connection()  # Core rows: the ORM's row machinery cost a tenth here
            rows = await connection.execute(
                select(
                    ServiceRequestEvent.request_id,
                    ServiceRequestEvent.at,
                    ServiceRequestEvent.kind,
                    ServiceRequestEvent.to_state,
                    _DATA_THAT_MATTERS,
                )
                .where(ServiceRequestEvent.request_id >= ids[0], ServiceRequestEvent.request_id <= ids[-1])
                .order_by(ServiceRequestEvent.request_id, ServiceRequestEvent.at, ServiceRequestEvent.id)
            )
            for request_id, at, kind, to_state, data in rows.all():
                events[request_id].append(sla.HistoryEvent(at, kind, to_state, data))
            out = []
            for request_id, team_id in requests:
                calendar = await STORE.for_team(session, team_id)
                result = sla.compute(events[request_id], targets_for, calendar, now)
                out.append(status_row(request_id, result, now))
            await _upsert(session, out)
            done += len(out)
            after = ids[-1]


def status_fields(status: SlaStatus | None) -> dict[str, Any]:
    if status is None:
        return {"sla": None}
    return {
        "sla": {
            "response_due_at": status.response_due_at.isoformat() if status.response_due_at else None,
            "response_at": status.response_at.isoformat() if status.response_at else None,
            "response_breached": status.response_breached,
            "resolution_due_at": status.resolution_due_at.isoformat() if status.resolution_due_at else None,
            "resolution_at": status.resolution_at.isoformat() if status.resolution_at else None,
            "resolution_breached": status.resolution_breached,
            "resolution_used_s": status.resolution_used_s,
            "paused": status.paused,
        }
    }


async def seed_default_policies(session: AsyncSession) -> None:
    """The defaults of sla.DEFAULT_TARGETS as editable rows for every type ("*"), unless present."""
    existing = {(t, p) for t, p in (await session.execute(select(SlaPolicy.type, SlaPolicy.priority))).all()}
    for priority, t in sla.DEFAULT_TARGETS.items():
        if ("*", priority) not in existing:
            session.add(
                SlaPolicy(
                    type="*",
                    priority=priority,
                    first_response_minutes=int(t.response.total_seconds() // 60),
                    resolution_minutes=int(t.resolution.total_seconds() // 60),
                    warn_percent=t.warn_percent,
                    escalate_percent=t.escalate_percent,
                )
            )
    await session.flush()
