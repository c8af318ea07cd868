"""Call-log review through the panel on both engines: who sees which call in the list, the detail and
the exports; bad input as problem+json; keyset pages; QA scoring and criteria administration."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import aiohttp
import pytest
from openpyxl import load_workbook
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.qa import DEFAULT_CRITERIA
from crm_core.db import transaction
from crm_core.security.policy import Level, Role
from crm_core.security.service import set_field_permission
from crm_core.settings import Settings
from tests.db import call_factory, factories
from tests.db.call_factory import BASE, call
from tests.panel.conftest import Panel, login

FULL = {code: top for code, _, _, top in DEFAULT_CRITERIA}


async def _calls(panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> dict[str, int]:
    p = panel.principals
    member = await factories.member(sessions, settings, name="王芳", mobile="13800138000")
    ids = await call_factory.add_calls(
        sessions,
        call(agent=p["agent1"], member_id=member.member_id, disposition="resolved", recording_file="a.wav"),
        call(agent=p["agent2"], started_at=BASE + dt.timedelta(minutes=5), outcome="answered"),
        call(outcome="abandoned", started_at=BASE + dt.timedelta(minutes=10)),
    )
    return {"agent1": ids[0], "agent2": ids[1], "abandoned": ids[2]}


async def _signed_in(panel: Panel, username: str) -> tuple[aiohttp.ClientSession, str]:
    client = panel.client()
    return client, await login(client, username)


async def _listed(client: aiohttp.ClientSession, query: str = "") -> set[int]:
    response = await client.get(f"/api/v1/calls{query}")
    assert response.status == 200, await response.text()
    return {c["id"] for c in (await response.json())["calls"]}


async def test_each_role_lists_and_opens_only_its_calls(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await _calls(panel, sessions, settings)
    expected = {
        "agent1": {ids["agent1"]},
        "agent2": {ids["agent2"]},
        "sup1": {ids["agent1"]},  # team 310; agent2 is in 320
        "admin1": set(ids.values()),
    }
    for username, visible in expected.items():
        client, _ = await _signed_in(panel, username)
        async with client:
            assert await _listed(client) == visible, username
            for call_id in ids.values():
                detail = await client.get(f"/api/v1/calls/{call_id}")
                assert detail.status == (200 if call_id in visible else 404), (username, call_id)
                page = await client.get(f"/calls/{call_id}")
                assert page.status == (200 if call_id in visible else 404), (username, call_id)
    client, _ = await _signed_in(panel, "staff1")
    async with client:
        assert (await client.get("/api/v1/calls")).status == 403
        assert (await client.get("/calls")).status == 403


async def test_bad_filters_cursor_and_limit_answer_problem_json(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await _calls(panel, sessions, settings)
    client, _ = await _signed_in(panel, "admin1")
    async with client:
        filters = (
            "?number=abc",
            "?date_from=2026-13-01",
            "?outcome=no_answer",
            "?colour=red",
            "?min_talk=9&max_talk=1",
        )
        paging = ("?cursor=zzz", "?limit=0", "?limit=201", "?limit=x")
        cases = [(p, q) for p in ("/api/v1/calls", "/api/v1/calls/export") for q in filters]
        cases += [("/api/v1/calls", q) for q in paging] + [("/api/v1/calls/export", "?format=pdf")]
        for path, query in cases:
            response = await client.get(path + query)
            assert response.status == 400, (path, query)
            assert response.content_type == "application/problem+json"
            body = await response.json()
            assert body["status"] == 400 and body["title"], body
        body = await (await client.get("/api/v1/calls?number=abc")).json()
        assert body["errors"][0]["field"] == "number"
        page = await client.get("/calls?number=abc")
        assert page.status == 400 and "number" in await page.text()


async def test_api_keyset_pages_and_the_more_fragment(panel: Panel, sessions: async_sessionmaker[AsyncSession]) -> None:
    agent = panel.principals["agent1"]
    ids = await call_factory.add_calls(sessions, *(call(agent=agent) for _ in range(5)))
    client, _ = await _signed_in(panel, "sup1")
    async with client:
        seen: list[int] = []
        cursor = ""
        while True:
            body = await (await client.get(f"/api/v1/calls?limit=2&agent={agent.user_id}{cursor}")).json()
            seen += [c["id"] for c in body["calls"]]
            if body["next_cursor"] is None:
                break
            cursor = f"&cursor={body['next_cursor']}"
        assert seen == sorted(ids, reverse=True)  # same started_at: id breaks the tie
        page = await (await client.get("/calls?limit=2&date_from=2026-03-01")).text()
        assert 'hx-get="/partials/calls?' in page and "/calls/" in page and 'href="/calls"' in page
        fragment = await client.get("/partials/calls?limit=2&cursor=" + body_cursor(seen[1], BASE))
        rows = await fragment.text()
        assert f'data-call-id="{seen[2]}"' in rows and f'data-call-id="{seen[1]}"' not in rows


def body_cursor(call_id: int, started_at: dt.datetime) -> str:
    from crm_core.calllog.review import encode_cursor

    return encode_cursor(started_at, call_id)


async def _csv(client: aiohttp.ClientSession, query: str = "") -> list[dict[str, str]]:
    response = await client.get(f"/api/v1/calls/export?format=csv{query}")
    assert response.status == 200, await response.text()
    assert response.content_type == "text/csv"
    raw = await response.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


async def test_exports_mask_numbers_per_role_and_show_local_times(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await _calls(panel, sessions, settings)
    client, _ = await _signed_in(panel, "agent1")
    async with client:
        rows = await _csv(client)
        assert [(r["call_id"], r["caller"], r["member_name"]) for r in rows] == [
            (str(ids["agent1"]), "138****8000", "王芳")
        ]
        assert rows[0]["started_at"] == "2026-03-10 09:00:00"  # BASE is 01:00 UTC
        assert rows[0]["talk_s"] == "128" and rows[0]["has_recording"] == "yes"
        xlsx = await client.get("/api/v1/calls/export?format=xlsx")
        assert xlsx.status == 200 and xlsx.headers["X-Export-Capped"] == "false"
        sheet = load_workbook(io.BytesIO(await xlsx.read()), read_only=True).active
        assert sheet is not None
        table = [list(r) for r in sheet.iter_rows(values_only=True)]
        header, first = table[0], dict(zip(table[0], table[1], strict=True))
        assert len(table) == 2 and "caller" in header
        assert first["caller"] == "138****8000" and first["started_at"] == "2026-03-10 09:00:00"
    client, _ = await _signed_in(panel, "admin1")
    async with client:
        rows = await _csv(client, "&outcome=answered")
        assert {r["caller"] for r in rows} == {"13800138000"} and len(rows) == 2
        assert [r["call_id"] for r in await _csv(client, "&outcome=abandoned")] == [str(ids["abandoned"])]


async def test_xlsx_export_is_capped_and_says_so(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_core.calllog import export

    await call_factory.add_calls(sessions, *(call(agent=panel.principals["agent1"]) for _ in range(4)))
    original = export.write_xlsx

    async def small_cap(*args: Any, **kwargs: Any) -> Any:
        return await original(*args, **kwargs | {"max_rows": 3})

    monkeypatch.setattr("agent_panel.routes.calls.write_xlsx", small_cap)
    client, _ = await _signed_in(panel, "admin1")
    async with client:
        response = await client.get("/api/v1/calls/export?format=xlsx")
        assert response.headers["X-Export-Capped"] == "true" and response.headers["X-Export-Rows"] == "3"
        sheet = load_workbook(io.BytesIO(await response.read()), read_only=True).active
        assert sheet is not None
        table = [r for r in sheet.iter_rows(values_only=True)]
        assert len(table) == 1 + 3 + 1 and str(table[-1][0]).startswith("capped at 3 rows")


async def test_qa_scoring_through_the_api_and_the_page_form(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await _calls(panel, sessions, settings)
    call_id = ids["agent1"]
    client, csrf = await _signed_in(panel, "sup1")
    async with client:
        headers = {"X-CSRF-Token": csrf}
        saved = await client.put(f"/api/v1/calls/{call_id}/qa", json={"scores": FULL, "comment": "好"}, headers=headers)
        assert saved.status == 200, await saved.text()
        assert (await saved.json())["score_pct"] == 100
        bad = await client.put(f"/api/v1/calls/{call_id}/qa", json={"scores": FULL | {"solution": 9}}, headers=headers)
        assert bad.status == 400 and bad.content_type == "application/problem+json"
        other_team = await client.put(f"/api/v1/calls/{ids['agent2']}/qa", json={"scores": FULL}, headers=headers)
        assert other_team.status == 404
        no_csrf = await client.put(f"/api/v1/calls/{call_id}/qa", json={"scores": FULL})
        assert no_csrf.status == 403
        # The page form: solution (weight 4 of 10) at 0 -> 60 %, replacing the review above.
        form = {f"score_{k}": str(v) for k, v in (FULL | {"solution": 0}).items()} | {"comment": "未解决"}
        fragment = await client.post(f"/calls/{call_id}/qa", data=form | {"csrf_token": csrf})
        text = await fragment.text()
        assert fragment.status == 200 and "60%" in text and "未解决" in text
        page = await (await client.get(f"/calls/{call_id}")).text()
        assert f'<div id="call-recording" hx-get="/calls/{call_id}/recording" hx-trigger="load"></div>' in page
        assert 'name="score_solution"' in page and "60%" in page
        listed = await (await client.get(f"/api/v1/calls/{call_id}/qa")).json()
        assert [(r["reviewer"], r["score_pct"]) for r in listed["reviews"]] == [("sup1", 60)]
    client, csrf = await _signed_in(panel, "agent1")
    async with client:
        assert (await client.get(f"/api/v1/calls/{call_id}/qa")).status == 200  # may read the review of own call
        refused = await client.put(f"/api/v1/calls/{call_id}/qa", json={"scores": FULL}, headers={"X-CSRF-Token": csrf})
        assert refused.status == 403
        page = await (await client.get(f"/calls/{call_id}")).text()
        assert 'name="score_solution"' not in page and "60%" in page


async def test_admins_manage_criteria_and_others_may_not(panel: Panel) -> None:
    client, csrf = await _signed_in(panel, "admin1")
    async with client:
        headers = {"X-CSRF-Token": csrf}
        listed = await (await client.get("/api/v1/qa/criteria")).json()
        assert [c["code"] for c in listed["criteria"]] == [code for code, *_ in DEFAULT_CRITERIA]
        created = await client.post(
            "/api/v1/qa/criteria", json={"code": "empathy", "label": "Empathy"}, headers=headers
        )
        assert created.status == 201
        again = await client.post("/api/v1/qa/criteria", json={"code": "empathy", "label": "x"}, headers=headers)
        assert again.status == 409
        invalid = await client.post("/api/v1/qa/criteria", json={"code": "Bad Code", "label": "x"}, headers=headers)
        assert invalid.status == 400 and invalid.content_type == "application/problem+json"
        greeting = listed["criteria"][0]["id"]
        off = await client.patch(f"/api/v1/qa/criteria/{greeting}", json={"active": False}, headers=headers)
        assert off.status == 200 and (await off.json())["active"] is False
        missing = await client.patch("/api/v1/qa/criteria/999999", json={"active": False}, headers=headers)
        assert missing.status == 404
        active = {c["code"] for c in (await (await client.get("/api/v1/qa/criteria")).json())["criteria"]}
        every = {c["code"] for c in (await (await client.get("/api/v1/qa/criteria?all=1")).json())["criteria"]}
        assert "greeting" not in active and "empathy" in active and "greeting" in every
    client, csrf = await _signed_in(panel, "sup1")
    async with client:
        assert (await client.get("/api/v1/qa/criteria")).status == 200
        refused = await client.post(
            "/api/v1/qa/criteria", json={"code": "x", "label": "x"}, headers={"X-CSRF-Token": csrf}
        )
        assert refused.status == 403
    client, _ = await _signed_in(panel, "agent1")
    async with client:
        assert (await client.get("/api/v1/qa/criteria")).status == 403


async def test_call_log_page_has_the_filters_and_a_nav_link(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await _calls(panel, sessions, settings)
    client, _ = await _signed_in(panel, "admin1")
    async with client:
        page = await client.get("/calls?outcome=abandoned&lang=en")
        text = await page.text()
        assert page.status == 200
        assert 'href="/calls"' in text and 'name="date_from"' in text and 'name="has_recording"' in text
        assert f'data-call-id="{ids["abandoned"]}"' in text and f'data-call-id="{ids["agent1"]}"' not in text
        assert "/api/v1/calls/export?outcome=abandoned&amp;format=csv" in text
        body = await (await client.get(f"/api/v1/calls/{ids['agent1']}")).json()
        assert [e["kind"] for e in body["timeline"]] == ["started", "queued", "rang", "answered", "ended"]
        assert body["call"]["caller"] == "13800138000" and body["call"]["member_name"] == "王芳"
        assert body["recording"] is None and body["reviews"] == [] and body["legs"] == []
        # A first visit shows the last 7 local days (these calls are older), with the dates filled in.
        first = await (await client.get("/calls")).text()
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
        assert f'name="date_from" value="{today - dt.timedelta(days=6)}"' in first
        assert f'name="date_to" value="{today}"' in first and "data-call-id" not in first
        everything = await (await client.get("/calls?date_from=&date_to=")).text()
        assert all(f'data-call-id="{i}"' in everything for i in ids.values())
        detail = await (await client.get(f"/calls/{ids['agent1']}?lang=en")).text()
        assert "Answered by agent1" in detail and "Queued in" in detail and "Call ended" in detail


async def test_a_number_hidden_from_the_role_leaves_the_export_and_the_list(
    panel: Panel, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ids = await _calls(panel, sessions, settings)
    async with transaction(sessions) as session:
        await set_field_permission(session, Role.AGENT, "contact", "phone", Level.HIDDEN)
    client, _ = await _signed_in(panel, "agent1")
    async with client:
        rows = await _csv(client)
        assert [r["call_id"] for r in rows] == [str(ids["agent1"])]
        assert "caller" not in rows[0] and "callee" not in rows[0] and rows[0]["member_name"] == "王芳"
        listed = (await (await client.get("/api/v1/calls")).json())["calls"]
        assert listed[0]["caller"] is None and listed[0]["callee"] is None
