"""Messages through the panel: templates only by CRM staff and admins, a preview listing the missing
fields, sending refused (422) while fields are missing, an idempotent send, opt-outs, the send log."""

from __future__ import annotations

import pytest

from agent_panel.keys import SESSIONS
from crm_core.settings import Settings
from tests.db import factories
from tests.panel.conftest import Panel, login

pytestmark = pytest.mark.db


async def test_templates_preview_send_and_log(panel: Panel, settings: Settings) -> None:
    member = await factories.member(panel.app[SESSIONS], settings, name="王芳", mobile="13800138001")
    async with panel.client() as agent:
        h = {"X-CSRF-Token": await login(agent, "agent1")}
        refused = await agent.post(
            "/api/v1/messages/templates", json={"code": "S1", "name": "x", "channel": "sms", "body": "x"}, headers=h
        )
        assert refused.status == 403
    async with panel.client() as staff:
        h = {"X-CSRF-Token": await login(staff, "admin1")}
        bad = await staff.post("/api/v1/messages/templates", json={"code": "S1", "channel": "fax"}, headers=h)
        assert bad.status == 400
        sms = await staff.post(
            "/api/v1/messages/templates",
            json={
                "code": "S1",
                "name": "回访通知",
                "channel": "sms",
                "body": "{!Member.Name}您好，{!Request.No}已处理",
            },
            headers=h,
        )
        template_id = (await sms.json())["id"]
        target = {"template_id": template_id, "member_id": member.member_id}
        shown = await (await staff.post("/api/v1/messages/preview", json=target, headers=h)).json()
        assert shown["missing"] == ["Request.No"] and shown["recipient"] == "+8613800138001"
        missing = await staff.post("/api/v1/messages/send", json=target | {"idempotency_key": "key-00001"}, headers=h)
        assert missing.status == 422 and (await missing.json())["errors"] == ["Request.No"]
        plain = await staff.post(
            "/api/v1/messages/templates",
            json={"code": "S2", "name": "问候", "channel": "sms", "kind": "marketing", "body": "{!Member.Name}您好"},
            headers=h,
        )
        target["template_id"] = (await plain.json())["id"]
        first = await staff.post("/api/v1/messages/send", json=target | {"idempotency_key": "key-00002"}, headers=h)
        again = await staff.post("/api/v1/messages/send", json=target | {"idempotency_key": "key-00002"}, headers=h)
        assert first.status == 202 and (await first.json())["id"] == (await again.json())["id"]
        out = await staff.post(
            f"/api/v1/members/{member.member_id}/opt-out", json={"channel": "sms", "scope": "marketing"}, headers=h
        )
        assert out.status == 200
        skipped = await staff.post("/api/v1/messages/send", json=target | {"idempotency_key": "key-00003"}, headers=h)
        assert (await skipped.json())["state"] == "skipped"
        log = await (await staff.get(f"/api/v1/messages?member={member.member_id}")).json()
        assert sorted(m["state"] for m in log["messages"]) == ["queued", "skipped"] or sorted(
            m["state"] for m in log["messages"]
        ) == ["sent", "skipped"]
        assert (await staff.get("/messages")).status == 200
