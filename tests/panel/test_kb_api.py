"""The knowledge base through the panel: an author writes, a supervisor approves, an agent finds it
from the workspace's search partial while on a call; refusals are problem+json and change nothing."""

from __future__ import annotations

import pytest

from tests.panel.conftest import Panel, login

pytestmark = pytest.mark.db


async def test_write_review_and_search_from_the_workspace(panel: Panel) -> None:
    async with panel.client() as staff:
        h = {"X-CSRF-Token": await login(staff, "staff1")}
        category = await (await staff.post("/api/v1/kb/categories", json={"name": "服务规范"}, headers=h)).json()
        bad = await staff.post("/api/v1/kb/articles", json={"category_id": category["id"], "title": ""}, headers=h)
        assert bad.status == 400 and bad.content_type == "application/problem+json"
        created = await staff.post(
            "/api/v1/kb/articles",
            json={
                "category_id": category["id"],
                "title": "积分查询",
                "body": "会员可在小程序查询会员积分余额和有效期。",
            },
            headers=h,
        )
        assert created.status == 201
        article = await created.json()
        submitted = await staff.post(f"/api/v1/kb/articles/{article['id']}/submit", json={}, headers=h)
        assert submitted.status == 200
        own = await staff.post(f"/api/v1/kb/articles/{article['id']}/approve", json={}, headers=h)
        assert own.status == 403  # CRM staff write; supervisors and admins approve

    async with panel.client() as agent:
        h = {"X-CSRF-Token": await login(agent, "agent1")}
        assert (await agent.get("/partials/kb-search?q=积分")).status == 200
        assert "积分查询" not in await (await agent.get("/partials/kb-search?q=积分")).text()  # not approved yet
        refused = await agent.post(
            "/api/v1/kb/articles", json={"category_id": category["id"], "title": "x", "body": "y"}, headers=h
        )
        assert refused.status == 403

    async with panel.client() as sup:
        h = {"X-CSRF-Token": await login(sup, "sup1")}
        queue = await (await sup.get("/api/v1/kb/review")).json()
        assert [v["article_id"] for v in queue["versions"]] == [article["id"]]
        approved = await sup.post(f"/api/v1/kb/articles/{article['id']}/approve", json={"note": "可以发布"}, headers=h)
        assert (await approved.json())["approved"]["title"] == "积分查询"

    async with panel.client() as agent:
        await login(agent, "agent1")
        html = await (await agent.get("/partials/kb-search?q=会员积分")).text()
        assert "积分查询" in html and "<mark>会员积分</mark>" in html
        found = await (await agent.get("/api/v1/kb/search?q=积分余额")).json()
        assert [r["id"] for r in found["results"]] == [article["id"]]
        page = await agent.get(f"/partials/kb/{article['id']}")
        assert "小程序" in await page.text()
        assert (await agent.get("/kb?q=积分")).status == 200
        too_long = await agent.get("/api/v1/kb/search?q=" + "积" * 300)
        assert too_long.status == 400
