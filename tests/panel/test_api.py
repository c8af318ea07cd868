"""The panel's JSON API and htmx fragments on a real database (both engines): member search with field
permissions, linking a caller's number, new members from the pop, communication records, wrap-up,
the callback queue, and dialling / agent actions refused cleanly while no PBX is connected."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks import service as callbacks
from crm_core.callbacks.models import Callback, CallbackAttempt
from crm_core.calllog.models import Call
from crm_core.comms.models import CommunicationRecord
from crm_core.db import transaction, utcnow
from crm_core.members.models import Member, MemberChange, MemberContact
from crm_core.members.validation import resident_id_check_digit
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db import factories
from tests.panel.conftest import Panel, login

Sessions = async_sessionmaker[AsyncSession]
MEMBER_LINK = re.compile(r'href="/members/(\d+)"')
RESIDENT_ID = "11010119900307123" + resident_id_check_digit("11010119900307123")


async def post(client: aiohttp.ClientSession, csrf: str, path: str, body: Any = None) -> aiohttp.ClientResponse:
    return await client.post(path, json=body, headers={"X-CSRF-Token": csrf})


async def count(sessions: Sessions, model: Any, *where: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def linked_members(client: aiohttp.ClientSession, path: str, q: str, **params: str) -> list[int]:
    page = await client.get(path, params={"q": q, **params})
    assert page.status == 200, await page.text()
    return [int(found) for found in MEMBER_LINK.findall(await page.text())]


# ---------------------------------------------------------------------------- 1. member search
async def test_member_search_page_finds_by_name_phone_member_and_card_number(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    zhang = await factories.member(sessions, settings, name="张伟", mobile="13800138000")
    li = await factories.member(sessions, settings, name="李娜", mobile="13700137000")
    assert zhang.card_no is not None
    async with panel.client() as client:
        await login(client, "agent1")
        for q in (
            "张",  # name prefix
            "张伟",
            "138 0013 8000",  # the mobile as people write it
            "+86 138-0013-8000",
            "8613800138000",  # as Asterisk presents it
            "13800138000",
            zhang.member_no,
            zhang.member_no.lower(),
            zhang.card_no,
        ):
            assert await linked_members(client, "/members", q) == [zhang.member_id], q
        assert await linked_members(client, "/members", "李") == [li.member_id]
        assert await linked_members(client, "/members", "伟") == []  # a prefix, not a substring
        assert await linked_members(client, "/members", "13900139000") == []
        empty = await client.get("/members", params={"q": "王", "lang": "en"})
        assert "No member found." in await empty.text()


async def test_member_search_fragment_offers_to_link_the_callers_number(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    zhang = await factories.member(sessions, settings)
    async with panel.client() as client:
        await login(client, "agent1")
        page = await client.get("/partials/member-search", params={"q": "张", "link": "13900001111", "lang": "en"})
        html = await page.text()
        assert page.status == 200
        assert f'data-member-id="{zhang.member_id}" data-number="13900001111"' in html
        assert "Link the number" in html
        plain = await client.get("/partials/member-search", params={"q": "张", "lang": "en"})
        plain_html = await plain.text()
        assert f'href="/members/{zhang.member_id}"' in plain_html and "link-number" not in plain_html
        # The number comes from the query string: it is escaped, never markup.
        hostile = await client.get("/partials/member-search", params={"q": "张", "link": '"><script>x</script>'})
        hostile_html = await hostile.text()
        assert "<script>x" not in hostile_html and "&lt;script&gt;" in hostile_html


async def test_member_search_json_applies_field_permissions_and_data_scope(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    # Created by crm staff of unit 300: inside staff1's scope, outside sup1's (unit 310).
    member = await factories.member(
        sessions, settings, panel.principals["staff1"], id_type="resident_id", id_number=RESIDENT_ID
    )
    seen: dict[str, list[dict[str, Any]]] = {}
    for username in ("agent1", "staff1", "admin1", "sup1"):
        async with panel.client() as client:
            await login(client, username)
            response = await client.get("/api/v1/members", params={"q": "13800138000"})
            assert response.status == 200
            seen[username] = (await response.json())["members"]
    agent_view = seen["agent1"][0]
    assert agent_view["id"] == member.member_id and agent_view["name"] == "张伟"
    assert agent_view["id_number"] != RESIDENT_ID
    assert agent_view["id_number"] == RESIDENT_ID[:3] + "*" * 11 + RESIDENT_ID[-4:]
    assert RESIDENT_ID not in str(seen["agent1"])
    assert seen["staff1"][0]["id_number"] == RESIDENT_ID
    assert seen["admin1"][0]["id_number"] == RESIDENT_ID
    assert seen["sup1"] == []  # not in the supervisor's department


# ---------------------------------------------------------------------------- 2. link a number
async def test_linking_a_callers_number_makes_the_next_lookup_match(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    member = await factories.member(sessions, settings)
    crm = panel.engine.crm
    crm.lookup_ttl = 3600.0  # a stale cache entry would outlive the test: only forgetting it helps
    assert await crm.lookup("13900001111") == []  # cached as "nobody"
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        path = f"/api/v1/members/{member.member_id}/link-number"
        first = await post(client, csrf, path, {"number": "13900001111"})
        assert first.status == 200, await first.text()
        body = await first.json()
        assert body["linked"] is True and body["member_id"] == member.member_id and body["contact_id"]
        again = await post(client, csrf, path, {"number": "+86 139 0000 1111"})
        assert again.status == 200
        assert await again.json() == {"member_id": member.member_id, "contact_id": None, "linked": False}
    assert await count(sessions, MemberContact, MemberContact.phone_e164 == "+8613900001111") == 1
    changes = await count(
        sessions, MemberChange, MemberChange.member_id == member.member_id, MemberChange.field == "contact.mobile"
    )
    assert changes == 1
    found = await crm.lookup("13900001111")
    assert [c.member_id for c in found] == [member.member_id]


async def test_linking_refuses_bad_numbers_and_unknown_members(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    member = await factories.member(sessions, settings)
    contacts = await count(sessions, MemberContact)
    changes = await count(sessions, MemberChange)
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        path = f"/api/v1/members/{member.member_id}/link-number"
        garbage = await post(client, csrf, path, {"number": "12345"})
        assert garbage.status == 400
        assert "12345" in (await garbage.json())["error"]
        too_short = await post(client, csrf, path, {"number": "12"})
        assert too_short.status == 400 and (await too_short.json())["details"]
        bad_kind = await post(client, csrf, path, {"number": "13900001111", "kind": "fax"})
        assert bad_kind.status == 400 and (await bad_kind.json())["details"]
        unknown = await post(client, csrf, "/api/v1/members/999999/link-number", {"number": "13900001111"})
        assert unknown.status == 404
        assert (await unknown.json())["error"] == "member not found"
    assert await count(sessions, MemberContact) == contacts
    assert await count(sessions, MemberChange) == changes


# ---------------------------------------------------------------------------- 3. new member from the pop
async def test_new_member_from_the_pop(panel: Panel, sessions: Sessions) -> None:
    crm = panel.engine.crm
    crm.lookup_ttl = 3600.0
    assert await crm.lookup("13900002222") == []
    agent = panel.principals["agent1"]
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        created = await post(
            client, csrf, "/api/v1/members", {"name": "李新客", "mobile": "13900002222", "source": "phone"}
        )
        assert created.status == 201, await created.text()
        body = await created.json()
        assert body["member_id"] and body["member_no"] and body["status"] == "applied"
        assert body["missing"] == []
        no_mobile = await post(client, csrf, "/api/v1/members", {"name": "王无号", "source": "phone"})
        assert no_mobile.status == 201
        assert (await no_mobile.json())["missing"] == ["mobile"]
        duplicate = await post(client, csrf, "/api/v1/members", {"name": "李另一个", "mobile": "139 0000 2222"})
        assert duplicate.status == 409
        assert body["member_no"] in (await duplicate.json())["error"]
    async with sessions() as session:
        row = await session.get(Member, body["member_id"])
        assert row is not None
        assert (row.name, row.mobile_e164, row.source) == ("李新客", "+8613900002222", "phone")
        assert (row.owner_user_id, row.org_unit_id) == (agent.user_id, agent.org_unit_id)
    assert await count(sessions, Member, Member.mobile_e164 == "+8613900002222") == 1
    assert [c.member_id for c in await crm.lookup("13900002222")] == [body["member_id"]]


async def test_new_member_with_a_bad_payload_creates_nothing(panel: Panel, sessions: Sessions) -> None:
    before = await count(sessions, Member)
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        for payload in (
            {"name": "李新客", "mobile": "13900002222", "vip": True},  # unknown field
            {"name": "李" * 51, "mobile": "13900002222"},  # name too long
            {"name": "   ", "mobile": "13900002222"},  # blank name
            {"name": "李新客", "mobile": "12345678901"},  # not in a carrier range
            {"name": "李新客", "mobile": "010 6552 9988"},  # a landline is not a mobile
            {"name": "李新客", "mobile": "13900002222", "source": "fax"},
            {"mobile": "13900002222"},  # no name
        ):
            response = await post(client, csrf, "/api/v1/members", payload)
            assert response.status == 400, (payload, await response.text())
            body = await response.json()
            assert body["error"] == "invalid request" and body["details"], payload
        not_json = await client.post(
            "/api/v1/members",
            data="name=李",
            headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
        )
        assert not_json.status == 400
    assert await count(sessions, Member) == before


# ---------------------------------------------------------------------------- 4. communication records
async def test_communication_records_are_added_listed_and_rendered(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    member = await factories.member(sessions, settings)
    path = f"/api/v1/members/{member.member_id}/comms"
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        first = await post(client, csrf, path, {"direction": "in", "category": "enquiry", "summary": "问积分余额"})
        assert first.status == 201, await first.text()
        second = await post(
            client,
            csrf,
            path,
            {"direction": "out", "category": "complaint", "urgency": "urgent", "summary": "回访 <b>投诉</b>"},
        )
        assert second.status == 201
        first_id, second_id = (await first.json())["id"], (await second.json())["id"]
        before = await count(sessions, CommunicationRecord)
        for payload in (
            {"direction": "in", "category": "spam", "summary": "x"},
            {"direction": "sideways", "category": "enquiry", "summary": "x"},
            {"direction": "in", "category": "enquiry", "summary": ""},
            {"direction": "in", "category": "enquiry", "summary": "x", "agent_user_id": 1},
        ):
            bad = await post(client, csrf, path, payload)
            assert bad.status == 400, payload
            assert (await bad.json())["details"]
        assert await count(sessions, CommunicationRecord) == before
        unknown = await post(
            client, csrf, "/api/v1/members/999999/comms", {"direction": "in", "category": "other", "summary": "x"}
        )
        assert unknown.status == 404

        listed = await client.get(path)
        assert listed.status == 200
        records = (await listed.json())["records"]
        assert [r["id"] for r in records] == [second_id, first_id]  # newest first
        assert records[0]["summary"] == "回访 <b>投诉</b>" and records[0]["urgency"] == "urgent"
        assert records[1]["category"] == "enquiry" and records[1]["direction"] == "in"
        assert {r["agent_user_id"] for r in records} == {panel.principals["agent1"].user_id}
        assert (await client.get("/api/v1/members/999999/comms")).status == 404

        fragment = await client.get(f"/partials/comms/{member.member_id}")
        html = await fragment.text()
        assert fragment.status == 200
        assert "问积分余额" in html
        assert "回访 &lt;b&gt;投诉&lt;/b&gt;" in html and "<b>投诉" not in html
        assert html.index("回访") < html.index("问积分余额")
        assert (await client.get("/partials/comms/999999")).status == 404


# ---------------------------------------------------------------------------- 5. wrap-up
async def add_call(
    sessions: Sessions, linkedid: str, member_id: int | None, agent_endpoint: str | None, ended_ago_s: float = 30
) -> int:
    ended = utcnow() - dt.timedelta(seconds=ended_ago_s)
    async with transaction(sessions) as session:
        call = Call(
            pbx="default",
            linkedid=linkedid,
            state="ended",
            direction="inbound",
            caller_raw="13800138000",
            caller_e164="+8613800138000",
            queue="member-service",
            member_id=member_id,
            agent_endpoint=agent_endpoint,
            started_at=ended - dt.timedelta(minutes=3),
            answered_at=ended - dt.timedelta(minutes=2),
            ended_at=ended,
            outcome="answered" if agent_endpoint else "abandoned",
        )
        session.add(call)
        await session.flush()
        return call.id


async def call_row(sessions: Sessions, linkedid: str) -> Call:
    async with sessions() as session:
        return (await session.execute(select(Call).where(Call.linkedid == linkedid))).scalar_one()


async def test_wrapup_saves_the_disposition_and_one_record_per_call(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    member = await factories.member(sessions, settings)
    await add_call(sessions, "L1", member.member_id, "webrtc2001")
    agent1 = panel.principals["agent1"].user_id
    wrap = {"linkedid": "L1", "disposition": "resolved", "summary": "积分已查询", "category": "complaint"}
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        saved = await post(client, csrf, "/api/v1/wrapup", wrap)
        assert saved.status == 200, await saved.text()
        record_id = (await saved.json())["communication_id"]
        assert isinstance(record_id, int)
        call = await call_row(sessions, "L1")
        assert call.disposition == "resolved"
        assert call.wrapup_s is not None and 29 <= call.wrapup_s < 600

        again = await post(client, csrf, "/api/v1/wrapup", wrap | {"summary": "积分已查询并补登"})
        assert again.status == 200
        assert (await again.json())["communication_id"] == record_id
    where = (CommunicationRecord.call_id == "L1", CommunicationRecord.agent_user_id == agent1)
    assert await count(sessions, CommunicationRecord, *where) == 1
    async with sessions() as session:
        record = (await session.execute(select(CommunicationRecord).where(*where))).scalar_one()
    assert record.id == record_id and record.member_id == member.member_id
    assert (record.summary, record.category, record.status, record.direction) == (
        "积分已查询并补登",
        "complaint",
        "done",
        "in",
    )
    assert record.phone_e164 == "+8613800138000"


async def test_wrapup_refusals(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    member = await factories.member(sessions, settings)
    await add_call(sessions, "L1", member.member_id, "webrtc2001")
    wrap = {"linkedid": "L1", "disposition": "resolved", "summary": "ok", "category": "complaint"}
    async with panel.client() as client:
        csrf = await login(client, "agent2")
        other = await post(client, csrf, "/api/v1/wrapup", wrap | {"disposition": "follow_up"})
        assert other.status == 403
        assert "another agent" in (await other.json())["error"]
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        unknown = await post(client, csrf, "/api/v1/wrapup", wrap | {"disposition": "teleported"})
        assert unknown.status == 400
        assert "teleported" in (await unknown.json())["error"]
        missing = await post(client, csrf, "/api/v1/wrapup", wrap | {"linkedid": "NOPE"})
        assert missing.status == 404
        follow_up = (utcnow() + dt.timedelta(days=1)).isoformat()
        done_with_follow_up = await post(client, csrf, "/api/v1/wrapup", wrap | {"follow_up_at": follow_up})
        assert done_with_follow_up.status == 400
        assert "follow-up" in (await done_with_follow_up.json())["error"]
        bad_category = await post(client, csrf, "/api/v1/wrapup", wrap | {"category": "spam"})
        assert bad_category.status == 400 and (await bad_category.json())["details"]
        call = await call_row(sessions, "L1")
        assert call.disposition is None and call.wrapup_s is None  # nothing above changed the call
        assert await count(sessions, CommunicationRecord) == 0

        pending = await post(client, csrf, "/api/v1/wrapup", wrap | {"status": "pending", "follow_up_at": follow_up})
        assert pending.status == 200
    async with sessions() as session:
        record = (await session.execute(select(CommunicationRecord))).scalar_one()
    assert record.status == "pending" and "[follow-up]" in record.summary


async def test_an_agent_without_a_seat_cannot_wrap_up_a_call_nobody_answered(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    """An abandoned call has no agent; an agent user with no phone seat has no endpoint either. The
    'was this agent on the call' check must not treat the two missing endpoints as a match."""
    member = await factories.member(sessions, settings)
    await add_call(sessions, "L9", member.member_id, None)
    await factories.principal(sessions, "agent3", Role.AGENT, "310", None)
    async with panel.client() as client:
        csrf = await login(client, "agent3")
        response = await post(
            client, csrf, "/api/v1/wrapup", {"linkedid": "L9", "disposition": "resolved", "summary": "x"}
        )
        assert response.status == 403, await response.text()
    assert (await call_row(sessions, "L9")).disposition is None
    assert await count(sessions, CommunicationRecord) == 0


# ---------------------------------------------------------------------------- 6. callbacks
async def missed(sessions: Sessions, settings: Settings, linkedid: str, phone: str) -> int:
    event = callbacks.MissedCall(
        linkedid=linkedid,
        phone_raw=phone,
        source="abandoned",
        missed_at=utcnow(),
        wait_s=20.0,
        queue="member-service",
    )
    async with transaction(sessions) as session:
        callback_id = await callbacks.record_missed(session, event, settings, BusinessCalendar())
    assert callback_id is not None
    return callback_id


async def set_due(sessions: Sessions, callback_id: int, due: dt.datetime) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(Callback).where(Callback.id == callback_id).values(due_at=due))


async def test_callbacks_list_claim_release_and_attempts(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    first = await missed(sessions, settings, "M1", "13700137000")
    second = await missed(sessions, settings, "M2", "13600136000")
    async with panel.client() as a1, panel.client() as a2, panel.client() as admin:
        csrf1, csrf2 = await login(a1, "agent1"), await login(a2, "agent2")
        await login(admin, "admin1")

        listed = await a1.get("/api/v1/callbacks")
        assert listed.status == 200
        rows = {row["id"]: row for row in (await listed.json())["callbacks"]}
        assert set(rows) == {first, second}
        assert rows[first]["phone"] == "137****7000" and rows[first]["status"] == "open"
        assert "13700137000" not in await listed.text()
        admin_rows = {row["id"]: row for row in (await (await admin.get("/api/v1/callbacks")).json())["callbacks"]}
        assert admin_rows[first]["phone"] == "+8613700137000"

        claimed = await post(a1, csrf1, f"/api/v1/callbacks/{first}/claim")
        assert claimed.status == 200
        assert await claimed.json() == {"callback_id": first, "status": "claimed"}
        stolen = await post(a2, csrf2, f"/api/v1/callbacks/{first}/claim")
        assert stolen.status == 409 and (await stolen.json())["error"]
        released = await post(a2, csrf2, f"/api/v1/callbacks/{first}/release")
        assert released.status == 409
        attempted = await post(a2, csrf2, f"/api/v1/callbacks/{first}/attempt", {"outcome": "no_answer"})
        assert attempted.status == 409
        async with sessions() as session:
            row = await session.get(Callback, first)
            assert row is not None
            assert (row.status, row.claimed_by_user_id, row.attempts) == (
                "claimed",
                panel.principals["agent1"].user_id,
                0,
            )
        assert await count(sessions, CallbackAttempt) == 0

        bad_outcome = await post(a1, csrf1, f"/api/v1/callbacks/{first}/attempt", {"outcome": "maybe"})
        assert bad_outcome.status == 400 and (await bad_outcome.json())["details"]
        no_answer = await post(a1, csrf1, f"/api/v1/callbacks/{first}/attempt", {"outcome": "no_answer"})
        assert no_answer.status == 200
        assert await no_answer.json() == {"callback_id": first, "status": "open"}
        async with sessions() as session:
            row = await session.get(Callback, first)
            assert row is not None
            assert (row.status, row.claimed_by_user_id, row.attempts) == ("open", None, 1)
            assert row.next_attempt_at is not None and row.next_attempt_at > utcnow()
        # Released by nobody: the claim ended with the attempt.
        assert (await post(a1, csrf1, f"/api/v1/callbacks/{first}/release")).status == 409


async def test_claim_next_hands_each_callback_out_once(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    only = await missed(sessions, settings, "M1", "13700137000")
    async with panel.client() as a1, panel.client() as a2:
        csrf1, csrf2 = await login(a1, "agent1"), await login(a2, "agent2")
        got = await post(a2, csrf2, "/api/v1/callbacks/claim-next")
        assert got.status == 200
        assert await got.json() == {"callback_id": only}
        assert await (await post(a1, csrf1, "/api/v1/callbacks/claim-next")).json() == {"callback_id": None}
        assert await (await post(a2, csrf2, "/api/v1/callbacks/claim-next")).json() == {"callback_id": None}
        released = await post(a2, csrf2, f"/api/v1/callbacks/{only}/release")
        assert released.status == 200
        assert await released.json() == {"callback_id": only, "status": "open"}
        assert await (await post(a1, csrf1, "/api/v1/callbacks/claim-next")).json() == {"callback_id": only}
    async with sessions() as session:
        row = await session.get(Callback, only)
        assert row is not None and row.claimed_by_user_id == panel.principals["agent1"].user_id


async def test_my_callbacks_fragment_marks_overdue_ones(panel: Panel, sessions: Sessions, settings: Settings) -> None:
    mine = await missed(sessions, settings, "M1", "13700137000")
    team = await missed(sessions, settings, "M2", "13600136000")
    await set_due(sessions, mine, utcnow() + dt.timedelta(hours=1))
    async with panel.client() as a1, panel.client() as a2:
        csrf1 = await login(a1, "agent1")
        await login(a2, "agent2")
        assert (await post(a1, csrf1, f"/api/v1/callbacks/{mine}/claim")).status == 200

        page = await a1.get("/partials/callbacks", params={"mine": "1", "lang": "en"})
        html = await page.text()
        assert page.status == 200
        assert f'data-callback-id="{mine}"' in html and f'data-callback-id="{team}"' not in html
        assert "137****7000" in html and "13700137000" not in html
        assert "cb-attempt" in html  # the claimer gets the outcome buttons
        assert "Overdue" not in html and "overdue" not in html

        await set_due(sessions, mine, utcnow() - dt.timedelta(minutes=5))
        late = await (await a1.get("/partials/callbacks", params={"mine": "1", "lang": "en"})).text()
        assert re.search(rf'class="callback overdue claimed" data-callback-id="{mine}"', late)
        assert "Overdue" in late

        others = await (await a2.get("/partials/callbacks", params={"mine": "1", "lang": "en"})).text()
        assert "Nothing to call back." in others and f'data-callback-id="{mine}"' not in others


# ---------------------------------------------------------------------------- 7. dialling without a PBX
async def test_dialling_is_refused_cleanly_without_a_queue_login(
    panel: Panel, sessions: Sessions, settings: Settings
) -> None:
    member = await factories.member(sessions, settings)
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        response = await post(client, csrf, "/api/v1/dial", {"member_id": member.member_id})
        assert response.status == 409
        assert (await response.json())["error"] == "webrtc2001 is not logged in"
        by_number = await post(client, csrf, "/api/v1/dial", {"number": "13800138000"})
        assert by_number.status == 409
        not_json = await client.post(
            "/api/v1/dial", data="member_id=1", headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"}
        )
        assert not_json.status == 400
        assert (await not_json.json())["error"] == "the body must be JSON"
        extra = await post(client, csrf, "/api/v1/dial", {"member_id": member.member_id, "channel": "PJSIP/x"})
        assert extra.status == 400 and (await extra.json())["details"]

        callback_id = await missed(sessions, settings, "M1", "13700137000")
        unclaimed = await post(client, csrf, f"/api/v1/callbacks/{callback_id}/dial")
        assert unclaimed.status == 409 and "claim" in (await unclaimed.json())["error"]
        assert (await post(client, csrf, f"/api/v1/callbacks/{callback_id}/claim")).status == 200
        claimed = await post(client, csrf, f"/api/v1/callbacks/{callback_id}/dial")
        assert claimed.status == 409
        assert (await claimed.json())["error"] == "webrtc2001 is not logged in"
    async with panel.client() as client:
        csrf = await login(client, "sup1")
        seatless = await post(client, csrf, "/api/v1/dial", {"member_id": member.member_id})
        assert seatless.status == 409
        assert "no phone seat" in (await seatless.json())["error"]
    assert await count(sessions, Call) == 0


# ---------------------------------------------------------------------------- 8. agent actions
async def test_agent_actions_are_refused_with_a_reason(panel: Panel) -> None:
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        unknown = await post(client, csrf, "/api/v1/agent/pause", {"reason": "nap"})
        assert unknown.status in (400, 409)
        assert "'nap'" in (await unknown.json())["error"]
        known = await post(client, csrf, "/api/v1/agent/pause", {"reason": "lunch"})
        assert known.status == 409
        assert "not logged in" in (await known.json())["error"]
        no_body = await client.post("/api/v1/agent/pause", headers={"X-CSRF-Token": csrf})
        assert no_body.status == 400
        empty = await post(client, csrf, "/api/v1/agent/pause", {})
        assert empty.status == 400
        assert any(d["loc"] == ["reason"] for d in (await empty.json())["details"])
        ready = await post(client, csrf, "/api/v1/agent/ready")
        assert ready.status == 409 and "not logged in" in (await ready.json())["error"]
    async with panel.client() as client:
        csrf = await login(client, "sup1")
        seatless = await post(client, csrf, "/api/v1/agent/pause", {"reason": "lunch"})
        assert seatless.status == 409 and "no phone seat" in (await seatless.json())["error"]
