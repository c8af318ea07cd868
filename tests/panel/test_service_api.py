"""The service desk through the panel: creating a request from a call (prefilled), bad payloads as
problem+json with nothing written, the queue and detail pages, role limits on assign/merge, the
member 360 listing open requests first, notifications, and the administrators' calendar and SLA
policy changes recomputing open requests."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_panel.keys import SESSIONS
from crm_core import calendar_store
from crm_core.service import escalation
from crm_core.service.models import ServiceRequest
from crm_core.settings import Settings
from tests.db import factories
from tests.panel.conftest import Panel, login

pytestmark = pytest.mark.db


async def test_request_from_a_call_then_worked_through_the_api(panel: Panel, settings: Settings) -> None:
    member = await factories.member(panel_sessions(panel), settings, name="王芳", mobile="13800138001")
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        h = {"X-CSRF-Token": csrf}
        bad = await client.post("/api/v1/service/requests", json={"type": "praise", "subject": ""}, headers=h)
        assert bad.status == 400 and bad.content_type == "application/problem+json"
        assert {e["loc"][0] for e in (await bad.json())["errors"]} == {"type", "subject"}
        not_json = await client.post(
            "/api/v1/service/requests", data="{", headers=h | {"Content-Type": "application/json"}
        )
        assert not_json.status == 400
        created = await client.post(
            "/api/v1/service/requests",
            json={
                "type": "complaint",
                "subject": "积分未到账",
                "call_id": "1732.5",
                "phone": "13800138001",
                "member_id": member.member_id,
            },
            headers=h,
        )
        assert created.status == 201, await created.text()
        body = await created.json()
        assert (
            body["call_id"] == "1732.5" and body["phone"] == "+8613800138001" and body["member_id"] == member.member_id
        )
        assert body["priority"] == "high" and body["state"] == "new" and body["sla"]["response_due_at"]
        rid = body["id"]

        claimed = await client.post(f"/api/v1/service/requests/{rid}/claim", json={}, headers=h)
        assert (await claimed.json())["owner_user_id"] == panel.principals["agent1"].user_id
        again = await client.post(f"/api/v1/service/requests/{rid}/claim", json={}, headers=h)
        assert again.status == 409
        merge = await client.post(f"/api/v1/service/requests/{rid}/merge", json={"into_id": rid + 1}, headers=h)
        assert merge.status == 403  # agents don't merge
        wrong = await client.post(f"/api/v1/service/requests/{rid}/state", json={"state": "merged"}, headers=h)
        assert wrong.status == 409
        resolved = await client.post(
            f"/api/v1/service/requests/{rid}/state", json={"state": "resolved", "note": "已补录积分"}, headers=h
        )
        assert (await resolved.json())["state"] == "resolved"

        page = await client.get("/service?state=resolved")
        assert page.status == 200 and body["no"] in await page.text()
        detail = await client.get(f"/service/{rid}")
        assert "已补录积分" in await detail.text()
        card = await client.get(f"/members/{member.member_id}")
        assert body["no"] in await card.text()

    async with panel.client() as other:  # another team's agent neither sees nor reaches it
        csrf = await login(other, "agent2")
        assert (await other.get(f"/api/v1/service/requests/{rid}")).status == 404
        listed = await (await other.get("/api/v1/service/requests?state=resolved")).json()
        assert listed["requests"] == []


def panel_sessions(panel: Panel) -> async_sessionmaker[AsyncSession]:
    return panel.app[SESSIONS]


async def test_member_360_lists_open_requests_first(panel: Panel, settings: Settings) -> None:
    member = await factories.member(panel_sessions(panel), settings, name="李雷", mobile="13800138002")
    async with panel.client() as client:
        h = {"X-CSRF-Token": await login(client, "agent1")}
        ids = []
        for subject in ("旧请求", "新请求"):
            r = await client.post(
                "/api/v1/service/requests",
                json={"type": "enquiry", "subject": subject, "member_id": member.member_id},
                headers=h,
            )
            ids.append((await r.json())["id"])
        await client.post(f"/api/v1/service/requests/{ids[1]}/state", json={"state": "closed"}, headers=h)
        view = await (await client.get(f"/api/v1/members/{member.member_id}/360")).json()
    assert view["service"]["open"] == 1
    assert [r["subject"] for r in view["service"]["recent"]] == ["旧请求", "新请求"]  # open first, then newest


async def test_notifications_and_admin_calendar(panel: Panel) -> None:
    sessions = panel_sessions(panel)
    async with panel.client() as client:
        h = {"X-CSRF-Token": await login(client, "agent1")}
        r = await client.post("/api/v1/service/requests", json={"type": "enquiry", "subject": "咨询"}, headers=h)
        rid = (await r.json())["id"]
        await client.post(f"/api/v1/service/requests/{rid}/claim", json={}, headers=h)
        async with sessions() as session:
            created = (
                await session.execute(select(ServiceRequest.created_at).where(ServiceRequest.id == rid))
            ).scalar_one()
        import datetime as dt

        await escalation.run_once(sessions, now=created + dt.timedelta(days=30))
        inbox = await (await client.get("/api/v1/notifications?unread=1")).json()
        assert inbox["unread"] >= 1 and all(n["link"] == f"/service/{rid}" for n in inbox["notifications"])
        listed = await (await client.get("/service")).text()
        assert 'id="notifications"' in listed and inbox["notifications"][0]["title"] in listed
        marked = await (await client.post("/api/v1/notifications/read", json={}, headers=h)).json()
        assert marked["marked"] == inbox["unread"]
        assert (await client.get("/api/v1/calendar")).status == 403

    async with panel.client() as admin:
        h = {"X-CSRF-Token": await login(admin, "admin1")}
        bad = await admin.put("/api/v1/calendar/teams/1/hours", json={"hours": [["18:00", "09:00"]]}, headers=h)
        assert bad.status == 400
        day = await admin.post(
            "/api/v1/calendar/days", json={"day": "2026-12-24", "working": False, "note": "盘点"}, headers=h
        )
        assert day.status == 200
        policy = await admin.post(
            "/api/v1/sla/policies",
            json={"type": "enquiry", "priority": "normal", "first_response_minutes": 30, "resolution_minutes": 600},
            headers=h,
        )
        assert policy.status == 200
        for _ in range(100):  # the recomputation runs in the background after each change
            async with sessions() as session:
                from crm_core.service.sla_models import SlaStatus

                status = await session.get(SlaStatus, rid)
            if status is not None and status.response_due_at is not None:
                break
            await asyncio.sleep(0.05)
        listed = await (await admin.get("/api/v1/calendar?year=2026")).json()
        assert listed["days"] == [{"day": "2026-12-24", "team_id": None, "working": False, "note": "盘点"}]
        assert (await admin.get("/service/admin")).status == 200
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(ServiceRequest))).scalar_one() == 1
    calendar_store.STORE.invalidate()
