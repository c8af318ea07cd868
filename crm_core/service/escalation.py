"""Warnings and escalations, each fired exactly once per (request, clock, level).

The job reads the requests whose `next_check_at` has come, recomputes their clocks from the history
and, for every level crossed by now, inserts an `sla_escalations` row with ON CONFLICT DO NOTHING:
only the insert that lands tells anyone, so two servers running the job at once (or a job re-run
after a crash) never notify twice. Who is told, per level:

* 0 warning: the owner (or, with none, the team lead);
* 1 breached: the team lead, i.e. the active supervisors of the request's team unit;
* 2 escalated: the supervisors of the units above the team, and the administrators.

Only open requests escalate: a request resolved late was late, which the SLA report shows, but
nobody needs to be woken for it any more.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core import notifications
from crm_core.db import insert_for, utcnow
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import Role
from crm_core.service import sla_store
from crm_core.service.models import OPEN_STATES, ServiceRequest, ServiceRequestEvent
from crm_core.service.sla_models import SlaEscalation, SlaStatus

log = logging.getLogger(__name__)
LEVEL_NAMES = {0: "warning", 1: "breached", 2: "escalated"}
CLOCK_NAMES = {"response": "首次响应", "resolution": "解决"}
LEVEL_TITLES = {0: "即将超时", 1: "已超时", 2: "超时升级"}

Push = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Fired:
    request_id: int
    clock: str
    level: int
    user_ids: tuple[int, ...]


async def _supervisors(session: AsyncSession, unit_ids: list[int]) -> list[int]:
    if not unit_ids:
        return []
    rows = await session.execute(
        select(User.id).where(User.org_unit_id.in_(unit_ids), User.role == Role.SUPERVISOR, User.active.is_(True))
    )
    return list(rows.scalars())


async def recipients(session: AsyncSession, request: ServiceRequest, level: int) -> list[int]:
    if level == 0 and request.owner_user_id is not None:
        return [request.owner_user_id]
    if level <= 1:
        return await _supervisors(session, [request.team_id])
    unit = (await session.execute(select(OrgUnit.path).where(OrgUnit.id == request.team_id))).scalar_one()
    above = [int(part) for part in unit.strip("/").split("/") if part and int(part) != request.team_id]
    admins = await session.execute(select(User.id).where(User.role == Role.ADMIN, User.active.is_(True)))
    return await _supervisors(session, above) + list(admins.scalars())


async def escalate_request(
    session: AsyncSession, request_id: int, *, now: dt.datetime, push: Push | None = None
) -> list[Fired]:
    request = (await session.execute(select(ServiceRequest).where(ServiceRequest.id == request_id))).scalar_one()
    result = await sla_store.refresh(session, request_id, now=now)
    if request.state not in OPEN_STATES:
        return []
    fired: list[Fired] = []
    for name, clock in (("response", result.response), ("resolution", result.resolution)):
        for level, at in sorted(clock.crossed.items()):
            if at > now:
                continue
            inserted = await session.execute(
                insert_for(session, SlaEscalation.__table__)
                .values(request_id=request_id, clock=name, level=level, fired_at=now)
                .on_conflict_do_nothing(index_elements=["request_id", "clock", "level"])
                .returning(SlaEscalation.__table__.c.id)
            )
            if inserted.first() is None:
                continue  # fired before, here or on another server
            users = await recipients(session, request, level)
            session.add(
                ServiceRequestEvent(
                    request_id=request_id,
                    at=now,
                    kind="escalated",
                    data={"clock": name, "level": level, "crossed_at": at.isoformat(), "notified": users},
                )
            )
            title = f"{request.no} {CLOCK_NAMES[name]}{LEVEL_TITLES[level]}"
            rows = await notifications.notify(
                session,
                users,
                kind=f"sla_{LEVEL_NAMES[level]}",
                title=title,
                body=request.subject,
                link=f"/service/{request_id}",
            )
            if push is not None:
                for row in rows:
                    push(row.user_id, notifications.as_dict(row))
            fired.append(Fired(request_id, name, level, tuple(users)))
    await session.flush()
    return fired


async def run_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: dt.datetime | None = None,
    push: Push | None = None,
    limit: int = 1_000,
) -> list[Fired]:
    """One pass over the requests due a check; each request in its own transaction."""
    now = now or utcnow()
    async with sessions() as session:
        due = list(
            (
                await session.execute(
                    select(SlaStatus.request_id)
                    .join(ServiceRequest, ServiceRequest.id == SlaStatus.request_id)
                    .where(SlaStatus.next_check_at <= now, ServiceRequest.state.in_([str(s) for s in OPEN_STATES]))
                    .order_by(SlaStatus.next_check_at)
                    .limit(limit)
                )
            ).scalars()
        )
    fired: list[Fired] = []
    pending: list[tuple[int, dict[str, Any]]] = []
    for request_id in due:
        async with sessions() as session, session.begin():
            fired += await escalate_request(
                session, request_id, now=now, push=(lambda u, d: pending.append((u, d))) if push else None
            )
    if push is not None:  # only after the commits: a frame must never announce a rolled-back row
        for user_id, data in pending:
            push(user_id, data)
    if fired:
        log.info("SLA: %d warnings/escalations fired", len(fired))
    return fired
