"""Service requests on both engines: created from a call with the member's tier setting the priority,
states with one history event each, claim/assign races (one owner, ever), round-robin, transfer,
merge, return visits after closure on working days, work orders, the SLA status kept with them,
escalations firing exactly once per level even with concurrent jobs, and an exact recomputation after
the administrator closes a day."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core import calendar_store, notifications
from crm_core.business_calendar import BusinessCalendar
from crm_core.db import transaction
from crm_core.loyalty import tiers
from crm_core.security import service as security
from crm_core.security.policy import Principal, Role
from crm_core.service import escalation, service, sla_store
from crm_core.service.errors import ConcurrentChange, InvalidTransition, NotAllowed, RequestNotFound, ServiceError
from crm_core.service.models import (
    Priority,
    RequestState,
    ReturnVisit,
    ServiceRequest,
    ServiceRequestEvent,
    WorkOrderState,
)
from crm_core.service.schemas import RequestIn, WorkOrderIn
from crm_core.service.sla_models import SlaEscalation, SlaStatus
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db
SH = ZoneInfo("Asia/Shanghai")
Sessions = async_sessionmaker[AsyncSession]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH).astimezone(dt.UTC)


class Desk:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def setup(self) -> Desk:
        await factories.org_tree(self.sessions)
        self.agent = await factories.principal(self.sessions, "a1", Role.AGENT, "310")
        self.agent2 = await factories.principal(self.sessions, "a2", Role.AGENT, "310")
        self.agent3 = await factories.principal(self.sessions, "a3", Role.AGENT, "310")
        self.other_team = await factories.principal(self.sessions, "b1", Role.AGENT, "320")
        self.lead = await factories.principal(self.sessions, "lead310", Role.SUPERVISOR, "310")
        self.head = await factories.principal(self.sessions, "head300", Role.SUPERVISOR, "300")
        self.admin = await factories.principal(self.sessions, "root", Role.ADMIN)
        async with transaction(self.sessions) as session:
            self.team = (await security.org_unit_by_code(session, "310")).id
            self.team_b = (await security.org_unit_by_code(session, "320")).id
        return self

    async def create(self, who: Principal, now: dt.datetime | None = None, **fields: object) -> ServiceRequest:
        data = RequestIn(**({"type": "repair", "subject": "电子狗无法充电"} | fields))  # type: ignore[arg-type]
        async with transaction(self.sessions) as session:
            return await service.create_request(session, who, data, now=now)


@pytest.fixture
async def desk(sessions: Sessions) -> Desk:
    return await Desk(sessions).setup()


async def test_created_from_a_call_with_priority_from_the_tier(desk: Desk, settings: Settings) -> None:
    async with transaction(desk.sessions) as session:
        await tiers.seed_tiers(session)
    diamond = await factories.member(desk.sessions, settings, name="王芳", mobile="13800138001", member_type="diamond")
    plain = await factories.member(desk.sessions, settings, name="李雷", mobile="13800138002")
    complaint = await desk.create(
        desk.agent, type="complaint", member_id=diamond.member_id, phone="138 0013 8001", call_id="1732.77"
    )
    assert complaint.priority == Priority.URGENT and complaint.team_id == desk.team
    assert complaint.phone_e164 == "+8613800138001" and complaint.call_id == "1732.77"
    assert complaint.no.startswith("SR") and complaint.state == RequestState.NEW
    assert (await desk.create(desk.agent, type="complaint", member_id=plain.member_id)).priority == Priority.HIGH
    assert (await desk.create(desk.agent, type="enquiry", member_id=plain.member_id)).priority == Priority.NORMAL
    assert (await desk.create(desk.agent, type="suggestion", priority="high")).priority == Priority.HIGH
    async with transaction(desk.sessions) as session:
        events = (
            (await session.execute(select(ServiceRequestEvent).where(ServiceRequestEvent.request_id == complaint.id)))
            .scalars()
            .all()
        )
        status = await session.get(SlaStatus, complaint.id)
    assert [e.kind for e in events] == ["created"] and events[0].data["priority"] == "urgent"  # type: ignore[index]
    assert status is not None and status.response_due_at is not None


async def test_bad_input_is_refused_with_a_clear_error(desk: Desk) -> None:
    with pytest.raises(ValidationError):
        RequestIn(type="praise", subject="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RequestIn(type="repair", subject="")  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match="not a phone"):
        await desk.create(desk.agent, phone="not a number")
    with pytest.raises(ServiceError, match="no member"):
        await desk.create(desk.agent, member_id=999_999)
    with pytest.raises(ServiceError, match="no active team"):
        await desk.create(desk.agent, team_id=999_999)
    async with desk.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(ServiceRequest))).scalar_one() == 0


async def test_states_history_and_visibility(desk: Desk) -> None:
    request = await desk.create(desk.agent)
    async with transaction(desk.sessions) as session:
        with pytest.raises(ServiceError, match="result"):
            await service.change_state(session, desk.agent, request.id, RequestState.RESOLVED)
    async with transaction(desk.sessions) as session:
        await service.change_state(session, desk.agent, request.id, RequestState.IN_PROGRESS)
        await service.change_state(session, desk.agent, request.id, RequestState.RESOLVED, note="更换充电器")
    async with transaction(desk.sessions) as session:
        with pytest.raises(InvalidTransition):
            await service.change_state(session, desk.agent, request.id, RequestState.NEW)
    async with transaction(desk.sessions) as session:
        with pytest.raises(RequestNotFound):  # another team's agent does not see it
            await service.change_state(session, desk.other_team, request.id, RequestState.CLOSED)
    async with transaction(desk.sessions) as session:
        detail = await service.request_detail(session, desk.head, request.id)  # the centre's supervisor does
    assert [(h["kind"], h["to_state"]) for h in detail["history"]] == [
        ("created", "new"),
        ("state", "in_progress"),
        ("state", "resolved"),
    ]
    assert detail["resolution"] == "更换充电器" and detail["first_response_at"] is not None
    async with transaction(desk.sessions) as session:
        assert await service.list_requests(session, desk.other_team) == []
        assert [r["id"] for r in await service.list_requests(session, desk.agent2)] == [request.id]


async def test_fifty_concurrent_claims_give_one_owner(desk: Desk) -> None:
    request = await desk.create(desk.agent)
    contenders = [desk.agent, desk.agent2, desk.agent3, desk.lead] * 13

    async def claim(who: Principal) -> str:
        try:
            async with transaction(desk.sessions) as session:
                await service.claim(session, who, request.id)
            return "won"
        except ConcurrentChange:
            return "lost"

    outcomes = await asyncio.gather(*(claim(who) for who in contenders[:50]))
    assert outcomes.count("won") == 1
    async with desk.sessions() as session:
        owner_events = (
            await session.execute(
                select(func.count()).where(
                    ServiceRequestEvent.request_id == request.id, ServiceRequestEvent.kind == "assigned"
                )
            )
        ).scalar_one()
        row = await session.get(ServiceRequest, request.id)
    assert owner_events == 1 and row is not None and row.owner_user_id is not None and row.state == "assigned"


async def test_concurrent_assignments_from_one_version_give_one_owner(desk: Desk) -> None:
    request = await desk.create(desk.agent)
    owners = [desk.agent.user_id, desk.agent2.user_id, desk.agent3.user_id] * 10

    async def assign(owner: int) -> bool:
        try:
            async with transaction(desk.sessions) as session:
                await service.assign(session, desk.lead, request.id, owner, expected_version=request.version)
            return True
        except ConcurrentChange:
            return False

    assert sum(await asyncio.gather(*(assign(o) for o in owners))) == 1
    async with transaction(desk.sessions) as session:
        with pytest.raises(NotAllowed):  # agents only claim for themselves
            await service.assign(session, desk.agent, request.id, desk.agent2.user_id)


async def test_round_robin_transfer_and_merge(desk: Desk) -> None:
    requests = [await desk.create(desk.agent) for _ in range(4)]
    owners = []
    for r in requests:
        async with transaction(desk.sessions) as session:
            owners.append((await service.assign_round_robin(session, desk.lead, r.id)).owner_user_id)
    agents = [desk.agent.user_id, desk.agent2.user_id, desk.agent3.user_id]
    assert owners == [*agents, agents[0]]

    async with transaction(desk.sessions) as session:
        moved = await service.transfer(session, desk.lead, requests[0].id, desk.team_b, note="转二组")
    assert moved.team_id == desk.team_b and moved.owner_user_id is None and moved.state == "new"
    async with transaction(desk.sessions) as session:
        assert [r["id"] for r in await service.list_requests(session, desk.other_team)] == [requests[0].id]

    async with transaction(desk.sessions) as session:
        with pytest.raises(NotAllowed):
            await service.merge(session, desk.agent, requests[2].id, requests[1].id)
        await service.merge(session, desk.lead, requests[2].id, requests[1].id)
    async with transaction(desk.sessions) as session:
        dup = await service.request_detail(session, desk.lead, requests[2].id)
        target = await service.request_detail(session, desk.lead, requests[1].id)
    assert dup["state"] == "merged" and dup["merged_into_id"] == requests[1].id
    assert target["history"][-1]["kind"] == "merged" and target["history"][-1]["data"]["duplicate"] == dup["no"]


async def test_closure_schedules_a_return_visit_on_working_days_and_work_orders(desk: Desk) -> None:
    # Closed Tue 2025-09-30, before National Day: 3 working days later is 10-11 (Thu 9, Fri 10, 调休 Sat 11).
    request = await desk.create(desk.agent, now=at("2025-09-30 10:00"))
    async with transaction(desk.sessions) as session:
        order = await service.add_work_order(
            session, desk.agent, request.id, WorkOrderIn(kind="repair", planned_minutes=120)
        )
        for state in (WorkOrderState.DISPATCHED, WorkOrderState.IN_PROGRESS):
            await service.change_work_order(session, desk.agent, order.id, state)
        done = await service.change_work_order(
            session, desk.agent, order.id, WorkOrderState.DONE, result="已修复", actual_minutes=300
        )
        with pytest.raises(InvalidTransition):
            await service.change_work_order(session, desk.agent, order.id, WorkOrderState.IN_PROGRESS)
    assert done.state == "done" and done.actual_minutes == 300 and order.no.startswith("WO")
    async with transaction(desk.sessions) as session:
        await service.change_state(
            session, desk.agent, request.id, RequestState.RESOLVED, note="已修复", now=at("2025-09-30 11:00")
        )
        await service.change_state(
            session,
            desk.agent,
            request.id,
            RequestState.CLOSED,
            now=at("2025-09-30 15:00"),
            calendar=BusinessCalendar(),
        )
    async with desk.sessions() as session:
        visit = (await session.execute(select(ReturnVisit).where(ReturnVisit.request_id == request.id))).scalar_one()
    assert visit.due_at.astimezone(SH).strftime("%Y-%m-%d %H:%M") == "2025-10-11 10:00"  # Thu 9, Fri 10, Sat 11 (调休)
    async with transaction(desk.sessions) as session:
        with pytest.raises(ServiceError):
            await service.complete_return_visit(session, desk.agent, request.id, reached=True, outcome="满意", score=6)
        visit = await service.complete_return_visit(
            session, desk.agent, request.id, reached=True, outcome="满意", score=5
        )
    assert visit.state == "done" and visit.score == 5


async def test_escalations_fire_once_per_level_even_from_concurrent_jobs(desk: Desk) -> None:
    created_at = at("2025-10-09 09:00")  # normal: respond within 1 h, resolve within 24 business hours
    request = await desk.create(desk.agent, type="enquiry", now=created_at)
    async with transaction(desk.sessions) as session:
        await service.claim(session, desk.agent2, request.id, now=at("2025-10-09 09:10"))
    pushed: list[tuple[int, dict[str, object]]] = []

    # 09:50: the response warning (48 min) is due: four jobs at once fire it once, to the owner.
    runs = await asyncio.gather(
        *(
            escalation.run_once(desk.sessions, now=at("2025-10-09 09:50"), push=lambda u, d: pushed.append((u, d)))
            for _ in range(4)
        )
    )
    fired = [f for run in runs for f in run]
    assert [(f.clock, f.level, f.user_ids) for f in fired] == [("response", 0, (desk.agent2.user_id,))]
    assert [u for u, _ in pushed] == [desk.agent2.user_id]
    # 10:40: breached (team lead); 10:40 is also past 150 % (90 min at 10:30): supervisors above + admins.
    fired = await escalation.run_once(desk.sessions, now=at("2025-10-09 10:40"))
    assert sorted((f.clock, f.level, f.user_ids) for f in fired) == [
        ("response", 1, (desk.lead.user_id,)),
        ("response", 2, (desk.head.user_id, desk.admin.user_id)),
    ]
    assert await escalation.run_once(desk.sessions, now=at("2025-10-09 11:00")) == []
    async with transaction(desk.sessions) as session:
        await service.respond(session, desk.agent2, request.id, "已致电客户", now=at("2025-10-09 11:00"))
    async with desk.sessions() as session:
        rows = (await session.execute(select(SlaEscalation.clock, SlaEscalation.level))).all()
        lead_inbox = await notifications.list_for(session, desk.lead.user_id)
        events = (
            await session.execute(
                select(func.count()).where(
                    ServiceRequestEvent.request_id == request.id, ServiceRequestEvent.kind == "escalated"
                )
            )
        ).scalar_one()
    assert sorted(rows) == [("response", 0), ("response", 1), ("response", 2)] and events == 3
    assert lead_inbox[0]["title"].endswith("首次响应已超时") and lead_inbox[0]["link"] == f"/service/{request.id}"
    async with transaction(desk.sessions) as session:
        assert await notifications.mark_read(session, desk.lead.user_id) == 1
        assert await notifications.list_for(session, desk.lead.user_id, unread_only=True) == []


async def test_recomputation_after_a_calendar_change_is_exact(desk: Desk) -> None:
    request = await desk.create(desk.agent, now=at("2025-09-26 17:00"))
    async with desk.sessions() as session:
        before = await session.get(SlaStatus, request.id)
    assert before is not None and before.resolution_due_at == at("2025-09-30 17:00")
    async with transaction(desk.sessions) as session:
        await calendar_store.set_day(session, dt.date(2025, 9, 29), False, note="盘点")
    calendar_store.STORE.invalidate()
    try:
        assert await sla_store.recompute_open(desk.sessions, now=at("2025-09-26 17:30"), batch=1) == 1
        async with desk.sessions() as session:
            after = await session.get(SlaStatus, request.id, populate_existing=True)
        assert after is not None and after.resolution_due_at == at("2025-10-09 17:00")
        async with transaction(desk.sessions) as session:
            await calendar_store.set_team_hours(session, desk.team, [["08:00", "20:00"]])
            await calendar_store.set_day(session, dt.date(2025, 9, 29), None)
        calendar_store.STORE.invalidate()
        await sla_store.recompute_open(desk.sessions, now=at("2025-09-26 17:30"))
        async with desk.sessions() as session:
            team_hours = await session.get(SlaStatus, request.id, populate_existing=True)
        # 12 h days: Fri 17–20 3 h, Sun 12 h (15), Mon 9 h → Mon 08:00 + 9 h = 17:00.
        assert team_hours is not None and team_hours.resolution_due_at == at("2025-09-29 17:00")
    finally:
        calendar_store.STORE.invalidate()


async def test_reports_by_team_type_state_and_sla_attainment(desk: Desk, settings: Settings) -> None:
    from crm_core.reports.period import Period
    from crm_core.reports.run import run_report

    day = "2025-10-09 09:00"
    fast = await desk.create(desk.agent, type="enquiry", now=at(day))  # normal: 1 h / 24 h
    slow = await desk.create(desk.agent, type="enquiry", now=at(day))
    other = await desk.create(desk.other_team, type="repair", now=at(day))
    async with transaction(desk.sessions) as session:
        await service.change_state(session, desk.agent, fast.id, RequestState.IN_PROGRESS, now=at("2025-10-09 09:30"))
        await service.add_work_order(session, desk.other_team, other.id, WorkOrderIn(kind="repair"))
    # 10:45: slow has had no response for 105 min: warned (48), breached (60), escalated (90), once each.
    fired = await escalation.run_once(desk.sessions, now=at("2025-10-09 10:45"))
    assert sorted((f.request_id, f.clock, f.level) for f in fired if f.request_id != other.id) == [
        (slow.id, "response", 0),
        (slow.id, "response", 1),
        (slow.id, "response", 2),
    ]
    async with transaction(desk.sessions) as session:
        await service.change_state(
            session, desk.agent, fast.id, RequestState.RESOLVED, note="ok", now=at("2025-10-09 11:00")
        )
        await service.change_state(session, desk.agent, slow.id, RequestState.IN_PROGRESS, now=at("2025-10-09 11:00"))
        await service.change_state(
            session, desk.agent, slow.id, RequestState.WAITING_CUSTOMER, now=at("2025-10-09 11:30")
        )
    period = Period(dt.date(2025, 10, 9), dt.date(2025, 10, 10), "Asia/Shanghai")
    async with transaction(desk.sessions) as session:
        requests = await run_report(session, desk.admin, settings, "service-requests", period)
        sla = await run_report(session, desk.admin, settings, "service-sla", period)
        team_only = await run_report(session, desk.lead, settings, "service-requests", period)
    by_team = {(r["team"], r["type"]): r for r in requests.rows}
    assert {k: by_team["310", "enquiry"][k] for k in ("created", "open", "waiting", "resolved", "work_orders")} == {
        "created": 2,
        "open": 0,
        "waiting": 1,
        "resolved": 1,
        "work_orders": 0,
    }
    assert by_team["320", "repair"]["open"] == 1 and by_team["320", "repair"]["work_orders"] == 1
    assert [r["team"] for r in team_only.rows] == ["310"]  # the team lead sees their team only
    enquiries = next(r for r in sla.rows if r["team"] == "310")
    # fast answered in 30 min (met), slow after 2 h (missed): 50 %; fast resolved in 2 h (met): 100 %.
    assert (enquiries["response_met"], enquiries["response_pct"]) == (1, 50.0)
    assert (enquiries["resolution_met"], enquiries["resolution_pct"]) == (1, 100.0)
    assert (enquiries["warnings"], enquiries["breaches"], enquiries["escalations"]) == (1, 1, 1)
