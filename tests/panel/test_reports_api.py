"""Reports through the panel (both engines): the JSON API with the reader's scope, problem+json for bad
requests, the CSV / XLSX downloads, and the /reports page with its htmx fragment and heat map."""

from __future__ import annotations

import csv
import io

import openpyxl
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import CallAgent
from crm_core.db import transaction
from tests.db.test_reports import call, local, state
from tests.panel.conftest import Panel, login

Sessions = async_sessionmaker[AsyncSession]
PERIOD = "from=2026-11-02&to=2026-11-04"


async def seed(panel: Panel, sessions: Sessions) -> None:
    """agent1 (team 310) answers two calls, agent2 (team 320) one; agent1 is ready an hour."""
    agent1, agent2 = panel.principals["agent1"].user_id, panel.principals["agent2"].user_id
    async with transaction(sessions) as session:
        calls = [
            call("p1", local(2, 9, 0), "answered", agent=agent1, talk=100, wrapup=20),
            call("p2", local(2, 9, 30), "answered", agent=agent1, talk=200, wrapup=40),
            call("p3", local(3, 0, 0), "abandoned", wait=30),
            call("p4", local(3, 14, 0), "answered", agent=agent2, talk=50, wrapup=10),
        ]
        session.add_all(calls)
        await session.flush()
        session.add_all(
            [
                CallAgent(call_id=calls[0].id, seq=1, agent_endpoint="webrtc2001", answered=True),
                CallAgent(call_id=calls[1].id, seq=1, agent_endpoint="webrtc2001", answered=True),
                CallAgent(call_id=calls[3].id, seq=1, agent_endpoint="webrtc2002", answered=True),
                state("webrtc2001", "ready", local(2, 8, 0), local(2, 8, 50)),
                state("webrtc2001", "on_call", local(2, 8, 50), local(2, 9, 0)),
                state("webrtc2001", "logged_out", local(2, 9, 0), local(2, 10, 0)),
            ]
        )


async def test_supervisor_gets_their_team_and_admin_everyone(panel: Panel, sessions: Sessions) -> None:
    await seed(panel, sessions)
    async with panel.client() as sup, panel.client() as admin:
        await login(sup, "sup1")
        await login(admin, "admin1")
        response = await sup.get(f"/api/v1/reports/agent-performance?{PERIOD}")
        assert response.status == 200
        body = await response.json()
        assert [r["agent"] for r in body["rows"]] == ["agent1"]
        row = body["rows"][0]
        assert (row["answered"], row["aht_s"], row["logged_in_s"], row["occupancy_pct"]) == (2, 180.0, 3600.0, 16.7)
        assert (body["from"], body["to"], body["timezone"]) == ("2026-11-02", "2026-11-04", "Asia/Shanghai")
        everyone = await (await admin.get(f"/api/v1/reports/agent-performance?{PERIOD}")).json()
        assert sorted(r["agent"] for r in everyone["rows"]) == ["agent1", "agent2"]
        heat = await (await sup.get(f"/api/v1/reports/heatmap?{PERIOD}&shape=date")).json()
        assert heat["grid"][1]["cells"][0]["abandoned"] == 1 and heat["totals"]["offered"] == 4


async def test_agents_and_crm_staff_may_not_read_reports(panel: Panel) -> None:
    routes = (
        "/reports",
        "/partials/reports?name=heatmap",
        f"/api/v1/reports/agent-performance?{PERIOD}",
        "/api/v1/reports/heatmap/export?format=csv",
    )
    for username in ("agent1", "staff1"):
        async with panel.client() as client:
            await login(client, username)
            for url in routes:
                response = await client.get(url)
                assert response.status == 403, (username, url)
                assert "your role may not use this" in await response.text()


async def test_bad_requests_are_problem_json(panel: Panel) -> None:
    async with panel.client() as sup:
        await login(sup, "sup1")
        cases = {
            "/api/v1/reports/agent-performance?from=2026-11-04&to=2026-11-02": (400, "Invalid period"),
            "/api/v1/reports/agent-performance?from=2026-13-01": (400, "Invalid period"),
            "/api/v1/reports/agent-performance?from=2024-01-01&to=2026-01-01": (400, "Invalid period"),
            "/api/v1/reports/callback-sla?queue=nonsense": (400, "Unknown queue"),
            "/api/v1/reports/heatmap?shape=round": (400, "Invalid shape"),
            "/api/v1/reports/payroll": (404, "Unknown report"),
            f"/api/v1/reports/heatmap/export?format=pdf&{PERIOD}": (400, "Invalid format"),
        }
        for url, (status, title) in cases.items():
            response = await sup.get(url)
            assert response.status == status, url
            assert response.content_type == "application/problem+json", url
            body = await response.json(content_type=None)
            assert (body["status"], body["title"]) == (status, title), url
            assert body["detail"]


async def test_exports_download_with_the_period_in_the_name(panel: Panel, sessions: Sessions) -> None:
    await seed(panel, sessions)
    async with panel.client() as sup:
        await login(sup, "sup1")
        response = await sup.get(f"/api/v1/reports/agent-performance/export?format=csv&{PERIOD}&lang=en")
        assert response.status == 200
        assert response.content_type == "text/csv"
        assert 'filename="agent-performance_2026-11-02_2026-11-03.csv"' in response.headers["Content-Disposition"]
        lines = list(csv.reader(io.StringIO((await response.read()).decode("utf-8-sig"))))
        assert lines[0][:2] == ["Agent", "Seat"]
        assert [line[0] for line in lines[1:]] == ["agent1"]
        assert dict(zip(lines[0], lines[1], strict=True))["AHT"] == "180.0"
        response = await sup.get(f"/api/v1/reports/callback-sla/export?format=xlsx&{PERIOD}")
        assert response.status == 200
        assert 'filename="callback-sla_2026-11-02_2026-11-03.xlsx"' in response.headers["Content-Disposition"]
        sheet = openpyxl.load_workbook(io.BytesIO(await response.read())).active
        header = next(sheet.iter_rows(values_only=True))
        assert header[0] == "日期"  # Chinese by default


async def test_reports_page_table_fragment_and_heat_map(panel: Panel, sessions: Sessions) -> None:
    await seed(panel, sessions)
    async with panel.client() as sup:
        await login(sup, "sup1")
        page = await sup.get(f"/reports?name=agent-performance&{PERIOD}&lang=en")
        html = await page.text()
        assert page.status == 200
        assert 'href="/reports"' in html and "<td>agent1</td>" in html and "agent2" not in html
        assert "/api/v1/reports/agent-performance/export?format=xlsx&amp;from=2026-11-02" in html
        heat = await sup.get(f"/partials/reports?name=heatmap&{PERIOD}&shape=weekday&lang=en")
        text = await heat.text()
        assert heat.status == 200
        assert 'class="report heatmap"' in text and "rgba(220, 38, 38, 0.85)" in text  # the busiest hour
        bad = await sup.get("/partials/reports?name=heatmap&from=2026-11-04&to=2026-11-01&lang=en")
        assert bad.status == 400 and "Invalid period" in await bad.text()
