"""The panel's loyalty pages on both engines: the points history with the redemption form (agents), the
points line on the member card / screen pop, suspicious-activity flags sending a flagged member's next
redemption to the approval queue, approval by CRM staff, and the points-liability report with its CSV."""

from __future__ import annotations

import re

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, tiers
from crm_core.loyalty.models import Redemption
from crm_core.settings import Settings
from tests.db import factories
from tests.db.loyalty_factory import catalogue
from tests.panel.conftest import Panel, login

Sessions = async_sessionmaker[AsyncSession]


async def redeem(client: aiohttp.ClientSession, csrf: str, member: int, code: str) -> aiohttp.ClientResponse:
    return await client.post(
        f"/members/{member}/points/redeem",
        data={"item_code": code, "quantity": "1", "csrf_token": csrf},
        allow_redirects=False,
    )


async def states(sessions: Sessions, member: int) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(Redemption.state).where(Redemption.member_id == member).order_by(Redemption.id)
        )
        return list(rows.scalars())


async def test_points_page_redemption_flags_approval_and_liability(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    await catalogue(sessions)
    member = (await factories.member(sessions, settings, panel.principals["staff1"])).member_id
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)
        # 6,000 granted in one go: above the 5,000-point large-grant threshold.
        await ledger.manual_grant(session, member, 6_000, name="注册赠送", expires_at=None)

    async with panel.client() as agent:
        csrf = await login(agent, "agent1")
        page = await agent.get(f"/members/{member}/points")
        text = await page.text()
        assert page.status == 200, text
        assert "积分明细" in text and "注册赠送" in text and "+6000" in text and 'value="V100"' in text
        card = await (await agent.get(f"/partials/member/{member}")).text()
        assert '<span class="v points">6000</span>' in card and "tier-standard" in card
        # A grant does not qualify: all of the gold card's 1,200 quarterly points are still to earn.
        assert "距金卡还差 1200 升级积分" in card and f'href="/members/{member}/points"' in card

        forged = await agent.post(
            f"/members/{member}/points/redeem", data={"item_code": "V100", "quantity": "1"}, allow_redirects=False
        )
        assert forged.status == 403
        done = await redeem(agent, csrf, member, "V100")
        assert done.status == 303 and done.headers["Location"].endswith("?done=completed")
        short = await redeem(agent, csrf, member, "BIG")  # 5,000 needs approval: held, not refused
        assert short.status == 303 and short.headers["Location"].endswith("?done=awaiting_approval")
        refused = await redeem(agent, csrf, member, "BIG")  # 900 valid left
        assert refused.status == 409 and "有效积分不足" in await refused.text()
        assert (await agent.get("/loyalty/flags")).status == 403
        assert (await agent.get("/api/v1/loyalty/liability")).status == 403
    assert await states(sessions, member) == ["completed", "awaiting_approval"]

    async with panel.client() as staff:
        csrf = await login(staff, "staff1")
        ran = await staff.post("/loyalty/flags/run", data={"csrf_token": csrf}, allow_redirects=False)
        assert ran.status == 303 and ran.headers["Location"] == "/loyalty/flags?ran=1"
        flags = await (await staff.get("/api/v1/loyalty/flags")).json()
        # The grant, and two redemptions asked for within minutes of it.
        assert [(f["member_id"], f["rule"]) for f in flags["items"]] == [
            (member, "large_grant"),
            (member, "earn_then_redeem"),
        ]
        assert flags["items"][0]["flag_reason"] == "suspicious: large_grant, earn_then_redeem"
        assert "大额手工赠送" in await (await staff.get("/loyalty/flags")).text()

        queue = await (await staff.get("/loyalty/approvals")).text()
        waiting = [int(x) for x in re.findall(r'id="redemption-(\d+)"', queue)]
        assert len(waiting) == 1 and "电饭煲" in queue
        approved = await staff.post(
            f"/loyalty/approvals/{waiting[0]}/approve", data={"csrf_token": csrf}, allow_redirects=False
        )
        assert approved.status == 303 and approved.headers["Location"] == "/loyalty/approvals"

    async with panel.client() as agent:
        csrf = await login(agent, "agent1")
        # Flagged now: even a 100-point voucher waits for a second person.
        flagged = await redeem(agent, csrf, member, "V100")
        assert flagged.headers["Location"].endswith("?done=awaiting_approval")
    assert await states(sessions, member) == ["completed", "completed", "awaiting_approval"]

    async with panel.client() as staff:
        await login(staff, "staff1")
        body = await (await staff.get("/api/v1/loyalty/liability")).json()
        # 6,000 − 100 − 5,000 spent; the last 100 held for the waiting request.
        assert body["outstanding"] == {
            "valid": 800,
            "pending": 0,
            "held": 100,
            "debt": 0,
            "expiring_30_days": 0,
            "expiring_90_days": 0,
            "members": 1,
        }
        assert [(m["earned"], m["burned"]) for m in body["months"]] == [(6_000, 5_100)]
        export = await staff.get("/api/v1/loyalty/liability.csv")
        assert export.headers["Content-Type"].startswith("text/csv")
        assert "valid,800" in (await export.text()).splitlines()[1]
        page = await (await staff.get("/loyalty/liability")).text()
        assert '<td class="num" id="liability-valid">800</td>' in page
