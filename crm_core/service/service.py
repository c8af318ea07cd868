"""Service requests: create, move through states, assign, transfer, merge; work orders; return visits.

Every change goes through `_change`, one conditional UPDATE (`WHERE id = … AND version = …`, plus
the caller's own condition) and one history event in the same transaction: of any number of
concurrent changes based on the same version, exactly one matches and the others get
ConcurrentChange; no request ever has two owners. The SLA status is refreshed after each change.

Who may act (documented in README): agents on requests of their own team (org unit and below) or
that they own or created; supervisors on their teams' requests, and only they (with CRM staff and
admins) assign to others, transfer and merge; CRM staff and admins on every request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import calendar_store
from crm_core.business_calendar import BusinessCalendar
from crm_core.db import utcnow
from crm_core.loyalty.models import TierDefinition
from crm_core.members.models import Member
from crm_core.phones import normalise as normalise_phone
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import Principal, Role
from crm_core.service import sla_store
from crm_core.service.errors import ConcurrentChange, InvalidTransition, NotAllowed, RequestNotFound, ServiceError
from crm_core.service.models import (
    OPEN_STATES,
    Priority,
    RequestState,
    RequestType,
    ReturnVisit,
    ReturnVisitState,
    ServiceRequest,
    ServiceRequestEvent,
    TeamRotation,
    WorkOrder,
    WorkOrderState,
)
from crm_core.service.priority import priority_for
from crm_core.service.schemas import RequestIn, WorkOrderIn

S = RequestState
TRANSITIONS: dict[str, frozenset[str]] = {
    S.NEW: frozenset({S.ASSIGNED, S.IN_PROGRESS, S.WAITING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.ASSIGNED: frozenset({S.NEW, S.IN_PROGRESS, S.WAITING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.IN_PROGRESS: frozenset({S.WAITING_CUSTOMER, S.RESOLVED, S.CLOSED}),
    S.WAITING_CUSTOMER: frozenset({S.IN_PROGRESS, S.RESOLVED, S.CLOSED}),
    S.RESOLVED: frozenset({S.IN_PROGRESS, S.CLOSED}),  # a reopen, or the customer confirms
    S.CLOSED: frozenset(),
    S.MERGED: frozenset(),
}
WORK_ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkOrderState.REGISTERED: frozenset({WorkOrderState.DISPATCHED, WorkOrderState.CANCELLED}),
    WorkOrderState.DISPATCHED: frozenset({WorkOrderState.IN_PROGRESS, WorkOrderState.CANCELLED}),
    WorkOrderState.IN_PROGRESS: frozenset({WorkOrderState.DONE, WorkOrderState.CANCELLED}),
    WorkOrderState.DONE: frozenset(),
    WorkOrderState.CANCELLED: frozenset(),
}
MANAGERS = frozenset({Role.SUPERVISOR, Role.CRM_STAFF, Role.ADMIN})


# ------------------------------------------------------------------------------------------- access


def visible(principal: Principal) -> ColumnElement[bool]:
    """WHERE clause: the requests `principal` may see (and, for their own team, act on)."""
    if principal.role in (Role.ADMIN, Role.CRM_STAFF):
        return true()
    mine = or_(
        ServiceRequest.owner_user_id == principal.user_id, ServiceRequest.created_by_user_id == principal.user_id
    )
    if principal.org_unit_path is None:
        return mine if principal.user_id else false()
    teams = select(OrgUnit.id).where(OrgUnit.path.startswith(principal.org_unit_path))
    return or_(mine, ServiceRequest.team_id.in_(teams))


async def _load(session: AsyncSession, principal: Principal, request_id: int) -> ServiceRequest:
    request = (
        await session.execute(
            select(ServiceRequest)
            .where(ServiceRequest.id == request_id, visible(principal))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if request is None:
        raise RequestNotFound(f"service request {request_id} not found")
    return request


def _require_manager(principal: Principal) -> None:
    if principal.role not in MANAGERS:
        raise NotAllowed("only supervisors, CRM staff and administrators may do this")


# ------------------------------------------------------------------------------------------ creating


async def _tier_rank(session: AsyncSession, member_id: int | None) -> int | None:
    if member_id is None:
        return None
    row = await session.execute(
        select(TierDefinition.rank)
        .join(Member, Member.member_type == TierDefinition.code)
        .where(Member.id == member_id)
    )
    return row.scalar_one_or_none()


async def _team_of(session: AsyncSession, principal: Principal, team_id: int | None) -> int:
    if team_id is None:
        if principal.org_unit_id is None:
            raise ServiceError("the request needs a team (team_id): you belong to none")
        return principal.org_unit_id
    if (
        await session.execute(select(OrgUnit.id).where(OrgUnit.id == team_id, OrgUnit.disabled.is_(False)))
    ).first() is None:
        raise ServiceError(f"no active team {team_id}")
    return team_id


async def create_request(
    session: AsyncSession, principal: Principal, data: RequestIn, *, now: dt.datetime | None = None
) -> ServiceRequest:
    """A new request (from a call: pass call_id and the caller's phone; the member is matched by the
    caller, the pop already knows it). Priority from the type and the member's tier unless given."""
    now = now or utcnow()
    if (
        data.member_id is not None
        and (await session.execute(select(Member.id).where(Member.id == data.member_id))).first() is None
    ):
        raise ServiceError(f"no member {data.member_id}")
    phone = normalise_phone(data.phone) if data.phone else None
    if data.phone and phone is None:
        raise ServiceError(f"not a phone number: {data.phone!r}")
    priority = data.priority or priority_for(data.type, await _tier_rank(session, data.member_id))
    request = ServiceRequest(
        no=f"T{uuid.uuid4().hex[:20]}",  # unique until replaced below, once the id is known
        type=data.type,
        priority=priority,
        state=S.NEW,
        team_id=await _team_of(session, principal, data.team_id),
        member_id=data.member_id,
        phone_e164=phone,
        call_id=data.call_id,
        subject=data.subject,
        description=data.description,
        categories=list(data.categories),
        created_by_user_id=principal.user_id or None,
        created_at=now,
        updated_at=now,
    )
    session.add(request)
    await session.flush()
    request.no = f"SR{now.astimezone(calendar_store.STORE.tz).strftime('%Y%m%d')}{request.id:06d}"
    session.add(
        ServiceRequestEvent(
            request_id=request.id,
            at=now,
            kind="created",
            to_state=S.NEW,
            actor_user_id=principal.user_id or None,
            data={"type": str(data.type), "priority": str(priority), "call_id": data.call_id},
        )
    )
    await session.flush()
    await sla_store.refresh(session, request.id, now=now)
    return request


# ------------------------------------------------------------------------------------------ changing


async def _change(
    session: AsyncSession,
    principal: Principal,
    request: ServiceRequest,
    values: dict[str, Any],
    event: dict[str, Any],
    *,
    condition: ColumnElement[bool] | None = None,
    expected_version: int | None = None,
    now: dt.datetime,
) -> ServiceRequest:
    version = request.version if expected_version is None else expected_version
    result = await session.execute(
        update(ServiceRequest)
        .where(
            ServiceRequest.id == request.id,
            ServiceRequest.version == version,
            condition if condition is not None else true(),
        )
        .values(**values, version=version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentChange(f"request {request.no} was changed by someone else; reload it")
    session.add(ServiceRequestEvent(request_id=request.id, at=now, actor_user_id=principal.user_id or None, **event))
    await session.flush()
    await session.refresh(request)
    await sla_store.refresh(session, request.id, now=now)
    return request


async def change_state(
    session: AsyncSession,
    principal: Principal,
    request_id: int,
    to_state: RequestState,
    *,
    note: str | None = None,
    expected_version: int | None = None,
    now: dt.datetime | None = None,
    calendar: BusinessCalendar | None = None,
    return_visit_days: int = 3,
) -> ServiceRequest:
    """Move a request; resolving needs a note (处理结果); closing schedules its return visit on the
    team's calendar (the store's, unless `calendar` is given)."""
    now = now or utcnow()
    request = await _load(session, principal, request_id)
    if to_state not in TRANSITIONS[request.state]:
        raise InvalidTransition(f"{request.no}: {request.state} → {to_state} is not allowed")
    if to_state == S.RESOLVED and not (note or request.resolution):
        raise ServiceError("resolving a request needs the result (note)")
    values: dict[str, Any] = {"state": to_state}
    if to_state in (S.IN_PROGRESS, S.WAITING_CUSTOMER, S.RESOLVED, S.CLOSED) and request.first_response_at is None:
        values["first_response_at"] = now
    if to_state == S.RESOLVED:
        values["resolved_at"] = now
        values["resolution"] = note or request.resolution
    if to_state == S.IN_PROGRESS and request.state == S.RESOLVED:
        values["resolved_at"] = None
    if to_state == S.CLOSED:
        values["closed_at"] = now
    request = await _change(
        session,
        principal,
        request,
        values,
        {"kind": "state", "from_state": request.state, "to_state": to_state, "data": {"note": note} if note else None},
        expected_version=expected_version,
        now=now,
    )
    if to_state == S.CLOSED and request.type != RequestType.RETURN_VISIT:
        calendar = calendar or await calendar_store.STORE.for_team(session, request.team_id)
        await _schedule_return_visit(session, request, now, calendar, return_visit_days)
    return request


async def respond(
    session: AsyncSession, principal: Principal, request_id: int, note: str, *, now: dt.datetime | None = None
) -> ServiceRequest:
    """The agent contacted the customer (first response, when it is the first)."""
    now = now or utcnow()
    request = await _load(session, principal, request_id)
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    values: dict[str, Any] = {} if request.first_response_at else {"first_response_at": now}
    return await _change(session, principal, request, values, {"kind": "responded", "data": {"note": note}}, now=now)


async def comment(session: AsyncSession, principal: Principal, request_id: int, note: str) -> None:
    request = await _load(session, principal, request_id)
    session.add(
        ServiceRequestEvent(
            request_id=request.id, kind="comment", actor_user_id=principal.user_id or None, data={"note": note}
        )
    )
    await session.flush()


async def change_priority(
    session: AsyncSession,
    principal: Principal,
    request_id: int,
    priority: Priority,
    *,
    kind: RequestType | None = None,
    now: dt.datetime | None = None,
) -> ServiceRequest:
    """A manual priority (or type) change; the SLA targets switch from now on (see sla.py)."""
    now = now or utcnow()
    request = await _load(session, principal, request_id)
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    new_type = kind or RequestType(request.type)
    return await _change(
        session,
        principal,
        request,
        {"priority": priority, "type": new_type},
        {"kind": "priority", "data": {"priority": str(priority), "type": str(new_type)}},
        now=now,
    )


async def _active_member(session: AsyncSession, user_id: int, team_id: int) -> bool:
    team_path = select(OrgUnit.path).where(OrgUnit.id == team_id).scalar_subquery()
    row = await session.execute(
        select(User.id)
        .join(OrgUnit, OrgUnit.id == User.org_unit_id)
        .where(User.id == user_id, User.active.is_(True), OrgUnit.path.startswith(team_path))
    )
    return row.first() is not None


async def assign(
    session: AsyncSession,
    principal: Principal,
    request_id: int,
    owner_user_id: int,
    *,
    expected_version: int | None = None,
    now: dt.datetime | None = None,
) -> ServiceRequest:
    """Give the request to one member of its team (supervisors and staff; an agent may take it
    only for themselves, which is `claim`)."""
    now = now or utcnow()
    if owner_user_id != principal.user_id:
        _require_manager(principal)
    request = await _load(session, principal, request_id)
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    if not await _active_member(session, owner_user_id, request.team_id):
        raise ServiceError(f"user {owner_user_id} is not an active member of the request's team")
    values: dict[str, Any] = {"owner_user_id": owner_user_id}
    if request.state == S.NEW:
        values["state"] = S.ASSIGNED
    return await _change(
        session,
        principal,
        request,
        values,
        {
            "kind": "assigned",
            "from_state": request.state,
            "to_state": values.get("state"),
            "data": {"owner": owner_user_id, "previous": request.owner_user_id},
        },
        expected_version=expected_version,
        now=now,
    )


async def claim(
    session: AsyncSession, principal: Principal, request_id: int, *, now: dt.datetime | None = None
) -> ServiceRequest:
    """Take an unassigned request of one's team; of concurrent claims exactly one wins."""
    now = now or utcnow()
    request = await _load(session, principal, request_id)
    if request.owner_user_id is not None:
        raise ConcurrentChange(f"{request.no} already has an owner")
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    values: dict[str, Any] = {"owner_user_id": principal.user_id}
    if request.state == S.NEW:
        values["state"] = S.ASSIGNED
    return await _change(
        session,
        principal,
        request,
        values,
        {
            "kind": "assigned",
            "from_state": request.state,
            "to_state": values.get("state"),
            "data": {"owner": principal.user_id, "claimed": True},
        },
        condition=ServiceRequest.owner_user_id.is_(None),
        now=now,
    )


async def assign_round_robin(
    session: AsyncSession, principal: Principal, request_id: int, *, now: dt.datetime | None = None
) -> ServiceRequest:
    """The next active agent of the request's team after the last one given a request (the pointer
    row is locked, so two servers hand out in one order)."""
    request = await _load(session, principal, request_id)
    candidates = list(
        (
            await session.execute(
                select(User.id)
                .where(User.org_unit_id == request.team_id, User.active.is_(True), User.role == Role.AGENT)
                .order_by(User.id)
            )
        ).scalars()
    )
    if not candidates:
        raise ServiceError("the team has no active agents")
    dialect = session.bind.dialect.name if session.bind is not None else ""
    rotation_stmt = select(TeamRotation).where(TeamRotation.team_id == request.team_id)
    if dialect == "postgresql":
        rotation_stmt = rotation_stmt.with_for_update()
    rotation = (await session.execute(rotation_stmt)).scalar_one_or_none()
    if rotation is None:
        rotation = TeamRotation(team_id=request.team_id, last_user_id=None)
        session.add(rotation)
    following = [c for c in candidates if rotation.last_user_id is None or c > rotation.last_user_id]
    chosen = (following or candidates)[0]
    rotation.last_user_id = chosen
    await session.flush()
    return await assign(session, _as_manager(principal), request_id, chosen, now=now)


def _as_manager(principal: Principal) -> Principal:
    """Round-robin hands out on the system's behalf: the principal's role does not limit the owner."""
    return dataclasses.replace(principal, role=Role.SUPERVISOR) if principal.role == Role.AGENT else principal


async def transfer(
    session: AsyncSession,
    principal: Principal,
    request_id: int,
    team_id: int,
    *,
    note: str = "",
    now: dt.datetime | None = None,
) -> ServiceRequest:
    """To another team's queue: the owner is cleared and the request is new there."""
    now = now or utcnow()
    request = await _load(session, principal, request_id)
    if principal.role not in MANAGERS and request.owner_user_id != principal.user_id:
        raise NotAllowed("only the owner, supervisors and staff may transfer a request")
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    await _team_of(session, principal, team_id)
    state = S.NEW if request.state == S.ASSIGNED else request.state
    return await _change(
        session,
        principal,
        request,
        {"team_id": team_id, "owner_user_id": None, "state": state},
        {
            "kind": "transferred",
            "from_state": request.state,
            "to_state": state,
            "data": {"from_team": request.team_id, "to_team": team_id, "note": note},
        },
        now=now,
    )


async def merge(
    session: AsyncSession, principal: Principal, duplicate_id: int, into_id: int, *, now: dt.datetime | None = None
) -> ServiceRequest:
    """Close a duplicate into another open request; the duplicate's history stays with it."""
    now = now or utcnow()
    _require_manager(principal)
    if duplicate_id == into_id:
        raise ServiceError("a request cannot be merged into itself")
    duplicate = await _load(session, principal, duplicate_id)
    target = await _load(session, principal, into_id)
    if duplicate.state not in OPEN_STATES or target.state not in OPEN_STATES:
        raise InvalidTransition("only open requests can be merged")
    await _change(
        session,
        principal,
        duplicate,
        {"state": S.MERGED, "merged_into_id": target.id, "closed_at": now},
        {"kind": "state", "from_state": duplicate.state, "to_state": S.MERGED, "data": {"merged_into": target.no}},
        now=now,
    )
    session.add(
        ServiceRequestEvent(
            request_id=target.id,
            at=now,
            kind="merged",
            actor_user_id=principal.user_id or None,
            data={"duplicate": duplicate.no},
        )
    )
    await session.flush()
    return duplicate


# ---------------------------------------------------------------------------------- visits and orders


async def _schedule_return_visit(
    session: AsyncSession, request: ServiceRequest, now: dt.datetime, calendar: BusinessCalendar, days: int
) -> None:
    local = now.astimezone(calendar.tz)
    due_day = calendar.add_working_days(local.date(), days)
    due = dt.datetime.combine(due_day, dt.time(10, 0), calendar.tz).astimezone(dt.UTC)
    exists = (await session.execute(select(ReturnVisit.id).where(ReturnVisit.request_id == request.id))).first()
    if exists is None:
        session.add(ReturnVisit(request_id=request.id, due_at=due, owner_user_id=request.owner_user_id))
        await session.flush()


async def complete_return_visit(
    session: AsyncSession, principal: Principal, request_id: int, *, reached: bool, outcome: str, score: int | None
) -> ReturnVisit:
    await _load(session, principal, request_id)
    if score is not None and not 1 <= score <= 5:
        raise ServiceError("the score is 1 to 5")
    visit = (
        await session.execute(select(ReturnVisit).where(ReturnVisit.request_id == request_id).with_for_update())
    ).scalar_one_or_none()
    if visit is None or visit.state != ReturnVisitState.SCHEDULED:
        raise InvalidTransition("no scheduled return visit for this request")
    visit.state = ReturnVisitState.DONE if reached else ReturnVisitState.FAILED
    visit.outcome, visit.score, visit.done_at = outcome, score, utcnow()
    visit.owner_user_id = visit.owner_user_id or principal.user_id or None
    await session.flush()
    return visit


async def add_work_order(session: AsyncSession, principal: Principal, request_id: int, data: WorkOrderIn) -> WorkOrder:
    request = await _load(session, principal, request_id)
    if request.state not in OPEN_STATES:
        raise InvalidTransition(f"{request.no} is {request.state}")
    order = WorkOrder(
        request_id=request.id,
        no=f"W{uuid.uuid4().hex[:20]}",  # unique until replaced below
        kind=data.kind,
        owner_user_id=data.owner_user_id,
        planned_minutes=data.planned_minutes,
        note=data.note,
    )
    session.add(order)
    await session.flush()
    order.no = f"WO{request.no[2:]}-{order.id}"
    session.add(
        ServiceRequestEvent(
            request_id=request.id,
            kind="comment",
            actor_user_id=principal.user_id or None,
            data={"work_order": order.no},
        )
    )
    await session.flush()
    return order


async def change_work_order(
    session: AsyncSession,
    principal: Principal,
    order_id: int,
    to_state: WorkOrderState,
    *,
    result: str | None = None,
    actual_minutes: int | None = None,
) -> WorkOrder:
    order = (await session.execute(select(WorkOrder).where(WorkOrder.id == order_id))).scalar_one_or_none()
    if order is None:
        raise RequestNotFound(f"work order {order_id} not found")
    await _load(session, principal, order.request_id)
    if to_state not in WORK_ORDER_TRANSITIONS[order.state]:
        raise InvalidTransition(f"{order.no}: {order.state} → {to_state} is not allowed")
    now = utcnow()
    done = await session.execute(
        update(WorkOrder)
        .where(WorkOrder.id == order.id, WorkOrder.state == order.state)
        .values(
            state=to_state,
            updated_at=now,
            actual_start=now if to_state == WorkOrderState.IN_PROGRESS else WorkOrder.actual_start,
            actual_end=now if to_state == WorkOrderState.DONE else WorkOrder.actual_end,
            result=result if result is not None else WorkOrder.result,
            actual_minutes=actual_minutes if actual_minutes is not None else WorkOrder.actual_minutes,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentChange(f"{order.no} was changed by someone else")
    await session.refresh(order)
    return order


# ------------------------------------------------------------------------------------------- reading


def request_fields(r: ServiceRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "no": r.no,
        "type": r.type,
        "priority": r.priority,
        "state": r.state,
        "team_id": r.team_id,
        "owner_user_id": r.owner_user_id,
        "member_id": r.member_id,
        "phone": r.phone_e164,
        "call_id": r.call_id,
        "subject": r.subject,
        "description": r.description,
        "categories": r.categories,
        "resolution": r.resolution,
        "created_at": r.created_at.isoformat(),
        "first_response_at": r.first_response_at.isoformat() if r.first_response_at else None,
        "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
        "closed_at": r.closed_at.isoformat() if r.closed_at else None,
        "merged_into_id": r.merged_into_id,
        "version": r.version,
    }


async def list_requests(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str | None = None,
    open_only: bool = False,
    type_: str | None = None,
    priority: str | None = None,
    team_id: int | None = None,
    owner: str | None = None,  # "me" | "none" | a user id
    overdue: bool = False,
    member_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """A queue view, oldest due first for open requests (newest first otherwise), with SLA dues."""
    from crm_core.service.sla_models import SlaStatus

    conditions: list[ColumnElement[bool]] = [visible(principal)]
    if state:
        conditions.append(ServiceRequest.state == state)
    if open_only:
        conditions.append(ServiceRequest.state.in_([str(s) for s in OPEN_STATES]))
    if type_:
        conditions.append(ServiceRequest.type == type_)
    if priority:
        conditions.append(ServiceRequest.priority == priority)
    if team_id is not None:
        conditions.append(ServiceRequest.team_id == team_id)
    if member_id is not None:
        conditions.append(ServiceRequest.member_id == member_id)
    if owner == "me":
        conditions.append(ServiceRequest.owner_user_id == principal.user_id)
    elif owner == "none":
        conditions.append(ServiceRequest.owner_user_id.is_(None))
    elif owner:
        conditions.append(ServiceRequest.owner_user_id == int(owner))
    if overdue:
        conditions.append(
            or_(SlaStatus.resolution_due_at <= (now or utcnow()), SlaStatus.response_due_at <= (now or utcnow()))
        )
        conditions.append(ServiceRequest.state.in_([str(s) for s in OPEN_STATES]))
    stmt = (
        select(ServiceRequest, SlaStatus)
        .outerjoin(SlaStatus, SlaStatus.request_id == ServiceRequest.id)
        .where(and_(*conditions))
    )
    if open_only or overdue:
        due = func.coalesce(SlaStatus.resolution_due_at, ServiceRequest.created_at)
        stmt = stmt.order_by(due, ServiceRequest.id)
    else:
        stmt = stmt.order_by(ServiceRequest.created_at.desc(), ServiceRequest.id.desc())
    rows = await session.execute(stmt.limit(min(max(limit, 1), 500)).offset(max(offset, 0)))
    return [request_fields(r) | sla_store.status_fields(s) for r, s in rows.all()]


async def request_detail(session: AsyncSession, principal: Principal, request_id: int) -> dict[str, Any]:
    from crm_core.service.sla_models import SlaStatus

    request = await _load(session, principal, request_id)
    events = (
        await session.execute(
            select(ServiceRequestEvent)
            .where(ServiceRequestEvent.request_id == request.id)
            .order_by(ServiceRequestEvent.at, ServiceRequestEvent.id)
        )
    ).scalars()
    orders = (
        await session.execute(select(WorkOrder).where(WorkOrder.request_id == request.id).order_by(WorkOrder.id))
    ).scalars()
    visit = (
        await session.execute(select(ReturnVisit).where(ReturnVisit.request_id == request.id))
    ).scalar_one_or_none()
    status = (await session.execute(select(SlaStatus).where(SlaStatus.request_id == request.id))).scalar_one_or_none()
    return (
        request_fields(request)
        | sla_store.status_fields(status)
        | {
            "history": [
                {
                    "at": e.at.isoformat(),
                    "kind": e.kind,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "actor_user_id": e.actor_user_id,
                    "data": e.data,
                }
                for e in events
            ],
            "work_orders": [
                {
                    "id": o.id,
                    "no": o.no,
                    "kind": o.kind,
                    "state": o.state,
                    "owner_user_id": o.owner_user_id,
                    "planned_minutes": o.planned_minutes,
                    "actual_minutes": o.actual_minutes,
                    "result": o.result,
                }
                for o in orders
            ],
            "return_visit": None
            if visit is None
            else {
                "due_at": visit.due_at.isoformat(),
                "state": visit.state,
                "outcome": visit.outcome,
                "score": visit.score,
            },
        }
    )
