"""Earning rules and referrals over HTTP on both engines: staff add, preview, end and disable rules (with
clear refusals), the page lists them, and a referral earns once."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.settings import Settings
from tests.db import factories
from tests.panel.conftest import Panel, login

Sessions = async_sessionmaker[AsyncSession]
APPLIANCE = {
    "name": "家用电器促销积分规则",
    "kind": "rate",
    "params": {
        "points_per_unit": 2,
        "unit_fen": 10_000,
        "bands": [
            {"from_fen": 0},
            {"from_fen": 500_000, "offset_points": "100"},
            {"from_fen": 1_000_000, "offset_points": "500"},
        ],
    },
    "starts_at": "2009-05-01T00:00+08:00",
    "ends_at": "2009-05-08T00:00+08:00",
}


async def test_staff_configure_preview_and_end_rules(panel: Panel) -> None:
    async with panel.client() as client:
        csrf = await login(client, "staff1")
        h = {"X-CSRF-Token": csrf}
        created = await client.post("/api/v1/loyalty/rules", json=APPLIANCE, headers=h)
        assert created.status == 201, await created.text()
        rule = await created.json()
        assert (rule["kind"], rule["active_now"], rule["params"]["bands"][1]["offset_points"]) == ("rate", False, "100")

        bad = await client.post(
            "/api/v1/loyalty/rules", json={**APPLIANCE, "params": {"points_per_unit": 2}}, headers=h
        )
        assert bad.status == 400 and "unit_fen: Field required" in (await bad.json())["detail"]
        naive = await client.post(
            "/api/v1/loyalty/rules", json={**APPLIANCE, "starts_at": "2009-05-01T00:00"}, headers=h
        )
        assert naive.status == 400 and "time zone" in (await naive.json())["detail"]
        typo = await client.post("/api/v1/loyalty/rules", json={**APPLIANCE, "kind": "bonus"}, headers=h)
        assert typo.status == 400

        async def preview(amount_fen: int, at: str) -> dict[str, object]:
            response = await client.post(
                "/api/v1/loyalty/rules/preview", json={"amount_fen": amount_fen, "at": at}, headers=h
            )
            assert response.status == 200, await response.text()
            return dict(await response.json())

        inside = await preview(500_000, "2009-05-03T12:00+08:00")
        assert (inside["points"], inside["band_from_fen"], inside["base"]) == (200, 500_000, "100.0000")
        assert (await preview(500_000, "2009-05-08T00:00+08:00"))["points"] == 100

        ended = await client.post(
            f"/api/v1/loyalty/rules/{rule['id']}/end", json={"ends_at": "2009-05-05T00:00+08:00"}, headers=h
        )
        assert ended.status == 200 and (await ended.json())["ends_at"].startswith("2009-05-04T16:00")
        longer = await client.post(
            f"/api/v1/loyalty/rules/{rule['id']}/end", json={"ends_at": "2009-06-01T00:00+08:00"}, headers=h
        )
        assert longer.status == 409
        assert (await preview(500_000, "2009-05-06T12:00+08:00"))["points"] == 100
        nothing = await client.post(f"/api/v1/loyalty/rules/{rule['id']}/end", json={}, headers=h)
        assert nothing.status == 400
        missing = await client.post("/api/v1/loyalty/rules/9999/end", json={"disable": True}, headers=h)
        assert missing.status == 404
        disabled = await client.post(f"/api/v1/loyalty/rules/{rule['id']}/end", json={"disable": True}, headers=h)
        assert (await disabled.json())["disabled"] is True

        listed = await (await client.get("/api/v1/loyalty/rules")).json()
        assert [r["name"] for r in listed["rules"]] == ["家用电器促销积分规则"]
        page = await client.get("/loyalty/rules")
        assert page.status == 200 and "家用电器促销积分规则" in await page.text()


async def test_a_referral_earns_the_referrer_once(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    referrer = (await factories.member(sessions, settings, panel.principals["staff1"], mobile="13911110001")).member_id
    friend = (await factories.member(sessions, settings, panel.principals["staff1"], mobile="13911110002")).member_id
    async with panel.client() as client:
        csrf = await login(client, "staff1")
        h = {"X-CSRF-Token": csrf}
        path = f"/api/v1/members/{referrer}/points/referrals"
        none_yet = await client.post(path, json={"referred_member_id": friend}, headers=h)
        assert (await none_yet.json())["awarded"] is False  # no referral rule yet
        params = {"event": "referral", "points": 2000, "expiry": "year_end", "years": 1}
        rule = {"name": "推荐客户赠送", "kind": "event", "params": params}
        assert (await client.post("/api/v1/loyalty/rules", json=rule, headers=h)).status == 201
        first = await client.post(path, json={"referred_member_id": friend}, headers=h)
        assert first.status == 201 and (await first.json())["points"] == 2000
        again = await client.post(path, json={"referred_member_id": friend}, headers=h)
        assert again.status == 200 and (await again.json())["awarded"] is False
        self_referral = await client.post(path, json={"referred_member_id": referrer}, headers=h)
        assert self_referral.status == 409
        unknown = await client.post(path, json={"referred_member_id": 999_999}, headers=h)
        assert unknown.status == 404
        points = await (await client.get(f"/api/v1/members/{referrer}/points")).json()
    assert points["valid"] == 2000
