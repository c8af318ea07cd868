"""Loyalty JSON API on both engines: points and tier for the 360, redemption requests by agents,
maker-checker approval by CRM staff, voucher verification at the merchant desk, and the refusals."""

from __future__ import annotations

from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, tiers
from crm_core.settings import Settings
from tests.db import factories
from tests.db.loyalty_factory import catalogue
from tests.panel.conftest import Panel, login

Sessions = async_sessionmaker[AsyncSession]


async def post(client: aiohttp.ClientSession, csrf: str, path: str, body: Any = None) -> aiohttp.ClientResponse:
    return await client.post(path, json=body, headers={"X-CSRF-Token": csrf})


async def member_with(panel: Panel, sessions: Sessions, settings: Settings, points: int) -> int:
    joined = await factories.member(sessions, settings, panel.principals["staff1"])
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)
        await ledger.manual_grant(session, joined.member_id, points, name="注册赠送", expires_at=None)
    return joined.member_id


async def test_points_show_balances_tier_and_progress(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    member = await member_with(panel, sessions, settings, 1_000)
    async with panel.client() as client:
        await login(client, "agent1")
        response = await client.get(f"/api/v1/members/{member}/points")
        assert response.status == 200, await response.text()
        body = await response.json()
        missing = await client.get("/api/v1/members/999999/points")
    assert (body["valid"], body["pending"], body["held"], body["expiring_30_days"]) == (1_000, 0, 0, 0)
    assert (body["member_type"], body["next_tier"], body["points_to_next_tier"]) == ("standard", "gold", 1_200)
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"


async def test_agent_requests_and_staff_approve_with_maker_checker(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with(panel, sessions, settings, 12_000)
    async with panel.client() as agent:
        csrf = await login(agent, "agent1")
        small = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "V100"})
        assert small.status == 201, await small.text()
        small_body = await small.json()
        large = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "BIG"})
        assert large.status == 202
        waiting = (await large.json())["redemption_id"]
        assert (await post(agent, csrf, f"/api/v1/redemptions/{waiting}/approve")).status == 403  # role
        too_many = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "BIG", "quantity": 2})
        assert (too_many.status, (await too_many.json())["title"]) == (409, "insufficient points")
        unknown = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "NOPE"})
        assert unknown.status == 404
        bad = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "V100", "quantity": 0})
        assert bad.status == 400
        no_csrf = await agent.post(f"/api/v1/members/{member}/redemptions", json={"item_code": "V100"})
        assert no_csrf.status == 403
    assert small_body["state"] == "completed" and len(small_body["voucher_codes"]) == 1
    assert len(small_body["voucher_codes"][0]) == 16  # XXXX-XXXX-XXXX-C

    async with panel.client() as staff:
        csrf = await login(staff, "staff1")
        queue = await (await staff.get("/api/v1/redemptions")).json()
        assert [item["redemption_id"] for item in queue["items"]] == [waiting]
        approved = await post(staff, csrf, f"/api/v1/redemptions/{waiting}/approve", {"note": "核对无误"})
        assert approved.status == 200, await approved.text()
        assert (await approved.json())["shipment_id"] is not None
        again = await post(staff, csrf, f"/api/v1/redemptions/{waiting}/approve")
        assert (again.status, (await again.json())["title"]) == (409, "already decided")
        # staff1's own large request needs somebody else.
        own = await post(staff, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "GIFT", "quantity": 2})
        own_id = (await own.json())["redemption_id"]
        refused = await post(staff, csrf, f"/api/v1/redemptions/{own_id}/approve")
        assert (refused.status, (await refused.json())["title"]) == (403, "a second person must approve")
        points = await (await staff.get(f"/api/v1/members/{member}/points")).json()
    assert (points["valid"], points["held"]) == (12_000 - 100 - 5_000 - 2_000, 2_000)

    async with panel.client() as admin:
        csrf = await login(admin, "admin1")
        rejected = await post(admin, csrf, f"/api/v1/redemptions/{own_id}/reject", {"note": "重复申请"})
        assert rejected.status == 200
        assert (await rejected.json())["points_returned"] == 2_000
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session, member) == []
        assert (await ledger.balances(session, member)).valid == 12_000 - 100 - 5_000


async def test_merchant_desk_verifies_then_redeems_a_voucher_once(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    await catalogue(sessions)
    member = await member_with(panel, sessions, settings, 500)
    async with panel.client() as agent:
        csrf = await login(agent, "agent1")
        issued = await post(agent, csrf, f"/api/v1/members/{member}/redemptions", {"item_code": "V200"})
        code = (await issued.json())["voucher_codes"][0]
        assert (await post(agent, csrf, "/api/v1/vouchers/verify", {"code": code, "merchant": "M-A"})).status == 403
    async with panel.client() as desk:
        csrf = await login(desk, "staff1")
        verified = await post(desk, csrf, "/api/v1/vouchers/verify", {"code": code.lower(), "merchant": "M-A"})
        assert verified.status == 200
        assert (await verified.json())["face_value_fen"] == 20_000
        elsewhere = await post(desk, csrf, "/api/v1/vouchers/redeem", {"code": code, "merchant": "M-B"})
        assert (elsewhere.status, (await elsewhere.json())["title"]) == (409, "voucher wrong_merchant")
        redeemed = await post(desk, csrf, "/api/v1/vouchers/redeem", {"code": code, "merchant": "M-A"})
        assert redeemed.status == 200 and (await redeemed.json())["outcome"] == "redeemed"
        twice = await post(desk, csrf, "/api/v1/vouchers/redeem", {"code": code, "merchant": "M-A"})
        assert (twice.status, (await twice.json())["title"]) == (409, "voucher already_redeemed")
        typo = code[:-1] + ("0" if code[-1] != "0" else "1")
        mistyped = await post(desk, csrf, "/api/v1/vouchers/verify", {"code": typo, "merchant": "M-A"})
        assert mistyped.status == 422


async def test_manual_adjustments_need_a_second_person_above_the_threshold(panel: Panel, settings: Settings) -> None:
    from agent_panel.keys import SESSIONS

    member = await factories.member(
        panel.app[SESSIONS], settings, panel.principals["staff1"], name="赵敏", mobile="13700000777"
    )
    async with transaction(panel.app[SESSIONS]) as session:
        await tiers.seed_tiers(session)  # the migration's rows, wiped between tests
    async with panel.client() as staff:
        h = {"X-CSRF-Token": await login(staff, "staff1")}
        url = f"/api/v1/members/{member.member_id}/points/adjustments"
        no_expiry = await staff.post(url, json={"kind": "grant", "points": 100, "reason": "补录"}, headers=h)
        assert no_expiry.status == 400
        small = await staff.post(
            url, json={"kind": "grant", "points": 100, "reason": "补录", "never_expires": True}, headers=h
        )
        assert small.status == 201 and (await small.json())["state"] == "booked"
        large = await staff.post(
            url,
            json={"kind": "grant", "points": 5000, "reason": "投诉补偿", "expires_at": "2027-12-31T23:59:59+08:00"},
            headers=h,
        )
        assert large.status == 202
        large_id = (await large.json())["id"]
        own = await staff.post(f"/api/v1/loyalty/adjustments/{large_id}/approve", json={}, headers=h)
        assert own.status == 403
    async with panel.client() as admin:
        h = {"X-CSRF-Token": await login(admin, "admin1")}
        queue = await (await admin.get("/api/v1/loyalty/adjustments")).json()
        assert [a["id"] for a in queue["adjustments"]] == [large_id]
        assert (await admin.get("/loyalty/approvals")).status == 200
        approved = await admin.post(f"/api/v1/loyalty/adjustments/{large_id}/approve", json={}, headers=h)
        assert approved.status == 200
        twice = await admin.post(f"/api/v1/loyalty/adjustments/{large_id}/approve", json={}, headers=h)
        assert twice.status == 409
        points = await (await admin.get(f"/api/v1/members/{member.member_id}/points")).json()
        assert points["valid"] == 5100
