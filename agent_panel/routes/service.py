"""Service desk in the panel: the request queue and detail pages, the JSON API behind their buttons
and the screen pop's "new request", notifications, and the administrators' calendar and SLA policies.

Roles: every signed-in role may list, create and work requests it can see (crm_core.service.service
decides which); assigning to others, transfer and merge are for supervisors, CRM staff and admins;
the calendar and the SLA policies for admins. The escalation job runs here every `sla_check_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from agent_panel.auth import ALL_ROLES, allow, session_of
from agent_panel.keys import HUB, SESSIONS, SETTINGS
from agent_panel.payloads import Strict, parse_body
from agent_panel.problems import problem, refused
from agent_panel.render import render
from crm_core import calendar_store, notifications
from crm_core.db import read_session, transaction
from crm_core.members.errors import MemberNotFound
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import PermissionDenied, Role
from crm_core.service import escalation, service, sla_store
from crm_core.service.errors import ServiceError
from crm_core.service.models import Priority, RequestState, RequestType, WorkOrderState
from crm_core.service.schemas import RequestIn, WorkOrderIn
from crm_core.service.sla_models import SlaPolicy

log = logging.getLogger(__name__)
ADMINS = (Role.ADMIN,)
REQUEST = "/api/v1/service/requests/{request_id:\\d+}"


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/service/requests", list_api)
    r.add_post("/api/v1/service/requests", create_api)
    r.add_get(REQUEST, detail_api)
    r.add_post(REQUEST + "/{action:state|respond|comment|claim|assign|transfer|merge|priority}", act_api)
    r.add_post(REQUEST + "/work-orders", work_order_api)
    r.add_post("/api/v1/service/work-orders/{order_id:\\d+}/state", work_order_state_api)
    r.add_post(REQUEST + "/return-visit", return_visit_api)
    r.add_get("/api/v1/notifications", notifications_api)
    r.add_post("/api/v1/notifications/read", notifications_read_api)
    r.add_get("/api/v1/calendar", calendar_api)
    r.add_post("/api/v1/calendar/days", calendar_day_api)
    r.add_put("/api/v1/calendar/teams/{team_id:\\d+}/hours", team_hours_api)
    r.add_get("/api/v1/sla/policies", policies_api)
    r.add_post("/api/v1/sla/policies", policy_set_api)
    r.add_get("/service", queue_page)
    r.add_get("/service/{request_id:\\d+}", detail_page)
    r.add_get("/service/admin", admin_page)
    app.cleanup_ctx.append(_escalation_loop)


class StateIn(Strict):
    state: RequestState
    note: str | None = Field(default=None, max_length=5_000)
    version: int | None = None


class NoteIn(Strict):
    note: str = Field(min_length=1, max_length=5_000)


class AssignIn(Strict):
    owner_user_id: int | None = None
    round_robin: bool = False
    version: int | None = None


class TransferIn(Strict):
    team_id: int
    note: str = Field(default="", max_length=500)


class MergeIn(Strict):
    into_id: int


class PriorityIn(Strict):
    priority: Priority
    type: RequestType | None = None


class WorkOrderStateIn(Strict):
    state: WorkOrderState
    result: str | None = Field(default=None, max_length=5_000)
    actual_minutes: int | None = Field(default=None, ge=0, le=100_000)


class ReturnVisitIn(Strict):
    reached: bool
    outcome: str = Field(min_length=1, max_length=2_000)
    score: int | None = Field(default=None, ge=1, le=5)


class ReadIn(Strict):
    id: int | None = None


class DayIn(Strict):
    day: dt.date
    working: bool | None  # None removes the override
    team_id: int | None = None
    note: str = Field(default="", max_length=100)


class HoursIn(Strict):
    hours: list[tuple[str, str]] = Field(min_length=1, max_length=6)


class PolicyIn(Strict):
    type: RequestType | Literal["*"]
    priority: Priority
    first_response_minutes: int = Field(gt=0, le=100_000)
    resolution_minutes: int = Field(gt=0, le=1_000_000)
    warn_percent: int = Field(default=80, gt=0, lt=100)
    escalate_percent: int = Field(default=150, gt=100, le=1_000)


def _refusal(exc: Exception) -> web.Response:
    if isinstance(exc, ServiceError):
        return refused(exc.status, str(exc))
    return refused(404 if isinstance(exc, MemberNotFound) else 403, str(exc))


REFUSED = (ServiceError, MemberNotFound, PermissionDenied)


# ---------------------------------------------------------------------------------------------- requests
def _filters(query: Any) -> dict[str, Any]:
    def number(name: str) -> int | None:
        value = query.get(name, "")
        return int(value) if value.isdigit() else None

    return {
        "state": query.get("state") or None,
        "open_only": query.get("open") in ("1", "true"),
        "type_": query.get("type") or None,
        "priority": query.get("priority") or None,
        "team_id": number("team"),
        "owner": query.get("owner")
        if query.get("owner") in ("me", "none")
        else (str(number("owner")) if number("owner") else None),
        "overdue": query.get("overdue") in ("1", "true"),
        "member_id": number("member"),
        "limit": min(number("limit") or 50, 500),
        "offset": number("offset") or 0,
    }


@allow(*ALL_ROLES)
async def list_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        rows = await service.list_requests(session, principal, **_filters(request.query))
    return web.json_response({"requests": rows})


@allow(*ALL_ROLES)
async def create_api(request: web.Request) -> web.Response:
    """From a call (call_id, phone, member from the pop), a member page, or by hand."""
    principal = session_of(request).principal
    data = await parse_body(request, RequestIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            created = await service.create_request(session, principal, data)
            body = await service.request_detail(session, principal, created.id)
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body, status=201)


@allow(*ALL_ROLES)
async def detail_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    try:
        async with read_session(request.app[SESSIONS]) as session:
            body = await service.request_detail(session, principal, int(request.match_info["request_id"]))
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def act_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    request_id = int(request.match_info["request_id"])
    action = request.match_info["action"]
    models: dict[str, type[BaseModel]] = {
        "state": StateIn,
        "respond": NoteIn,
        "comment": NoteIn,
        "claim": Strict,
        "assign": AssignIn,
        "transfer": TransferIn,
        "merge": MergeIn,
        "priority": PriorityIn,
    }
    data = await parse_body(request, models[action])
    if isinstance(data, web.Response):
        return data
    settings = request.app[SETTINGS]
    try:
        async with transaction(request.app[SESSIONS]) as session:
            match data:
                case StateIn():
                    await service.change_state(
                        session,
                        principal,
                        request_id,
                        data.state,
                        note=data.note,
                        expected_version=data.version,
                        return_visit_days=settings.service_return_visit_days,
                    )
                case NoteIn() if action == "respond":
                    await service.respond(session, principal, request_id, data.note)
                case NoteIn():
                    await service.comment(session, principal, request_id, data.note)
                case AssignIn() if data.round_robin:
                    await service.assign_round_robin(session, principal, request_id)
                case AssignIn() if data.owner_user_id is not None:
                    await service.assign(
                        session, principal, request_id, data.owner_user_id, expected_version=data.version
                    )
                case AssignIn():
                    return problem(400, "invalid request", "give owner_user_id or round_robin")
                case TransferIn():
                    await service.transfer(session, principal, request_id, data.team_id, note=data.note)
                case MergeIn():
                    await service.merge(session, principal, request_id, data.into_id)
                case PriorityIn():
                    await service.change_priority(session, principal, request_id, data.priority, kind=data.type)
                case _:
                    await service.claim(session, principal, request_id)
            body = await service.request_detail(session, principal, request_id)
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def work_order_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    data = await parse_body(request, WorkOrderIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            order = await service.add_work_order(session, principal, int(request.match_info["request_id"]), data)
            body = {"id": order.id, "no": order.no, "state": order.state}
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body, status=201)


@allow(*ALL_ROLES)
async def work_order_state_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    data = await parse_body(request, WorkOrderStateIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            order = await service.change_work_order(
                session,
                principal,
                int(request.match_info["order_id"]),
                data.state,
                result=data.result,
                actual_minutes=data.actual_minutes,
            )
            body = {"id": order.id, "no": order.no, "state": order.state}
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def return_visit_api(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    data = await parse_body(request, ReturnVisitIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            visit = await service.complete_return_visit(
                session,
                principal,
                int(request.match_info["request_id"]),
                reached=data.reached,
                outcome=data.outcome,
                score=data.score,
            )
            body = {"state": visit.state, "score": visit.score}
    except REFUSED as exc:
        return _refusal(exc)
    return web.json_response(body)


# ------------------------------------------------------------------------------------------ notifications
@allow(*ALL_ROLES)
async def notifications_api(request: web.Request) -> web.Response:
    user_id = session_of(request).principal.user_id
    async with read_session(request.app[SESSIONS]) as session:
        rows = await notifications.list_for(session, user_id, unread_only=request.query.get("unread") == "1")
    return web.json_response({"notifications": rows, "unread": sum(1 for r in rows if not r["read"])})


@allow(*ALL_ROLES)
async def notifications_read_api(request: web.Request) -> web.Response:
    data = await parse_body(request, ReadIn)
    if isinstance(data, web.Response):
        return data
    async with transaction(request.app[SESSIONS]) as session:
        changed = await notifications.mark_read(session, session_of(request).principal.user_id, data.id)
    return web.json_response({"marked": changed})


# ------------------------------------------------------------------------------------ calendar and SLA
async def _recompute(app: web.Application) -> None:
    calendar_store.STORE.invalidate()
    count = await sla_store.recompute_open(app[SESSIONS])
    log.info("SLA: %d open requests recomputed after a calendar or policy change", count)


def _recompute_soon(request: web.Request) -> None:
    task = asyncio.create_task(_recompute(request.app), name="sla-recompute")
    request.app[RECOMPUTES].add(task)
    task.add_done_callback(request.app[RECOMPUTES].discard)


@allow(*ADMINS)
async def calendar_api(request: web.Request) -> web.Response:
    year = int(request.query.get("year", "0") or 0) or dt.date.today().year
    async with read_session(request.app[SESSIONS]) as session:
        days = await calendar_store.list_days(session, year)
        hours = (await session.execute(select(calendar_store.TeamHours))).scalars().all()
    return web.json_response({"year": year, "days": days, "team_hours": {h.team_id: h.hours for h in hours}})


@allow(*ADMINS)
async def calendar_day_api(request: web.Request) -> web.Response:
    data = await parse_body(request, DayIn)
    if isinstance(data, web.Response):
        return data
    async with transaction(request.app[SESSIONS]) as session:
        await calendar_store.set_day(session, data.day, data.working, team_id=data.team_id, note=data.note)
    _recompute_soon(request)
    return web.json_response({"day": data.day.isoformat(), "working": data.working, "team_id": data.team_id})


@allow(*ADMINS)
async def team_hours_api(request: web.Request) -> web.Response:
    data = await parse_body(request, HoursIn)
    if isinstance(data, web.Response):
        return data
    spans = [list(span) for span in data.hours]
    try:
        calendar_store.parse_hours(spans)
    except ValueError as exc:
        return problem(400, "invalid request", str(exc))
    team_id = int(request.match_info["team_id"])
    async with transaction(request.app[SESSIONS]) as session:
        if await session.get(OrgUnit, team_id) is None:
            return problem(404, "not found", f"no team {team_id}")
        await calendar_store.set_team_hours(session, team_id, spans)
    _recompute_soon(request)
    return web.json_response({"team_id": team_id, "hours": spans})


@allow(*ALL_ROLES)
async def policies_api(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        rows = (await session.execute(select(SlaPolicy).order_by(SlaPolicy.type, SlaPolicy.priority))).scalars()
        body = [
            {
                "type": p.type,
                "priority": p.priority,
                "first_response_minutes": p.first_response_minutes,
                "resolution_minutes": p.resolution_minutes,
                "warn_percent": p.warn_percent,
                "escalate_percent": p.escalate_percent,
            }
            for p in rows
        ]
    return web.json_response({"policies": body})


@allow(*ADMINS)
async def policy_set_api(request: web.Request) -> web.Response:
    data = await parse_body(request, PolicyIn)
    if isinstance(data, web.Response):
        return data
    async with transaction(request.app[SESSIONS]) as session:
        row = (
            await session.execute(
                select(SlaPolicy).where(SlaPolicy.type == str(data.type), SlaPolicy.priority == data.priority)
            )
        ).scalar_one_or_none()
        if row is None:
            row = SlaPolicy(type=str(data.type), priority=str(data.priority))
            session.add(row)
        row.first_response_minutes, row.resolution_minutes = data.first_response_minutes, data.resolution_minutes
        row.warn_percent, row.escalate_percent = data.warn_percent, data.escalate_percent
    _recompute_soon(request)
    return web.json_response(data.model_dump(mode="json"))


# ------------------------------------------------------------------------------------------------ pages
async def _teams(request: web.Request) -> list[dict[str, Any]]:
    async with read_session(request.app[SESSIONS]) as session:
        rows = await session.execute(
            select(OrgUnit.id, OrgUnit.code, OrgUnit.name).where(OrgUnit.disabled.is_(False)).order_by(OrgUnit.path)
        )
        return [{"id": i, "code": c, "name": n} for i, c, n in rows.all()]


async def _users(request: web.Request) -> dict[int, str]:
    async with read_session(request.app[SESSIONS]) as session:
        rows = await session.execute(select(User.id, User.display_name))
        return {i: n for i, n in rows.all()}


@allow(*ALL_ROLES)
async def queue_page(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    filters = _filters(request.query)
    if not any(request.query.get(k) for k in ("state", "open", "overdue")):
        filters["open_only"] = True
    async with read_session(request.app[SESSIONS]) as session:
        rows = await service.list_requests(session, principal, **filters)
        unread = await notifications.list_for(session, principal.user_id, unread_only=True, limit=20)
    return render(
        request,
        "service_queue.html",
        {
            "rows": rows,
            "notifications": unread,
            "query": request.query,
            "teams": await _teams(request),
            "users": await _users(request),
            "states": list(RequestState),
            "types": list(RequestType),
            "priorities": list(Priority),
        },
    )


@allow(*ALL_ROLES)
async def detail_page(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    try:
        async with read_session(request.app[SESSIONS]) as session:
            body = await service.request_detail(session, principal, int(request.match_info["request_id"]))
    except REFUSED:
        raise web.HTTPNotFound() from None
    return render(
        request,
        "service_detail.html",
        {
            "r": body,
            "teams": await _teams(request),
            "users": await _users(request),
            "next_states": sorted(service.TRANSITIONS[body["state"]]),
            "manager": principal.role in service.MANAGERS,
            "priorities": list(Priority),
        },
    )


@allow(*ADMINS)
async def admin_page(request: web.Request) -> web.Response:
    year = dt.date.today().year
    async with read_session(request.app[SESSIONS]) as session:
        days = await calendar_store.list_days(session, year)
        policies = (
            (await session.execute(select(SlaPolicy).order_by(SlaPolicy.type, SlaPolicy.priority))).scalars().all()
        )
    return render(
        request,
        "service_admin.html",
        {
            "days": days,
            "policies": policies,
            "teams": await _teams(request),
            "year": year,
            "types": list(RequestType),
            "priorities": list(Priority),
        },
    )


# ----------------------------------------------------------------------------------- escalation loop
RECOMPUTES: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("sla_recomputes")


async def _escalation_loop(app: web.Application) -> AsyncIterator[None]:
    app[RECOMPUTES] = set()
    every = app[SETTINGS].sla_check_seconds

    def push(user_id: int, data: dict[str, Any]) -> None:
        app[HUB].send_to_user(user_id, "notification", data)

    async def loop() -> None:
        while True:
            try:
                await escalation.run_once(app[SESSIONS], push=push)
            except Exception:  # a dropped database must not end the loop: the next pass retries
                log.exception("SLA escalation pass failed")
            await asyncio.sleep(every)

    task = asyncio.create_task(loop(), name="sla-escalation")
    yield
    task.cancel()
    for pending in [task, *app[RECOMPUTES]]:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
