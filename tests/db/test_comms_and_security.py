"""Communication records, the not-contacted list, users with argon2 and lockout, data scopes."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.comms import service as comms
from crm_core.comms.models import CommunicationRecord
from crm_core.comms.schemas import CommunicationIn
from crm_core.db import transaction, utcnow
from crm_core.members.errors import MemberNotFound
from crm_core.security import service as security
from crm_core.security.models import User
from crm_core.security.policy import SYSTEM, Role
from crm_core.settings import Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]


def record(member_id: int, **fields: object) -> CommunicationIn:
    base: dict[str, object] = {"member_id": member_id, "direction": "in", "category": "complaint", "summary": "投诉"}
    return CommunicationIn.model_validate(base | fields)


async def test_records_carry_the_seed_fields_and_follow_their_status_flow(
    sessions: Sessions, settings: Settings
) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    zhang = await factories.member(sessions, settings)
    async with transaction(sessions) as session:
        record_id = await comms.add_record(
            session, agent, record(zhang.member_id, urgency="urgent", phone="13800138000", call_id="1795528258.9")
        )
        await comms.set_status(session, agent, record_id, "in_progress")
        await comms.set_status(session, agent, record_id, "done")
        with pytest.raises(comms.InvalidRecordTransition):
            await comms.set_status(session, agent, record_id, "pending")
    async with sessions() as session:
        [listed] = await comms.records_for_member(session, agent, zhang.member_id)
    assert listed["urgency"] == "urgent" and listed["status"] == "done" and listed["call_id"] == "1795528258.9"
    assert listed["agent_user_id"] == agent.user_id and listed["phone"] == "+8613800138000"


@pytest.mark.parametrize(
    "fields",
    [
        {"direction": "sideways"},
        {"category": "praise"},
        {"urgency": "critical"},
        {"summary": ""},
        {"phone": "garbage"},
        {"unknown": 1},
    ],
)
def test_invalid_records_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        record(1, **fields)


async def test_record_for_unknown_member_is_refused(sessions: Sessions) -> None:
    with pytest.raises(MemberNotFound):
        async with transaction(sessions) as session:
            await comms.add_record(session, SYSTEM, record(999_999))


async def test_not_contacted_in_n_days_lists_only_the_quiet_active_members(
    sessions: Sessions, settings: Settings
) -> None:
    recent = await factories.member(sessions, settings, name="近期", mobile="13800138001")
    stale = await factories.member(sessions, settings, name="久未联系", mobile="13800138002")
    never = await factories.member(sessions, settings, name="从未联系", mobile="13800138003")
    now = utcnow()
    async with transaction(sessions) as session:
        await comms.add_record(session, SYSTEM, record(recent.member_id))
        old_id = await comms.add_record(session, SYSTEM, record(stale.member_id))
        await session.execute(
            update(CommunicationRecord)
            .where(CommunicationRecord.id == old_id)
            .values(created_at=now - dt.timedelta(days=4))
        )
    async with sessions() as session:
        quiet = await comms.not_contacted_since(session, SYSTEM, 3, now=now)
        assert [m["id"] for m in quiet] == [stale.member_id, never.member_id]
        assert [m["id"] for m in await comms.not_contacted_since(session, SYSTEM, 5, now=now)] == [never.member_id]
        page = await comms.not_contacted_since(session, SYSTEM, 3, now=now, limit=1)
        after = await comms.not_contacted_since(session, SYSTEM, 3, now=now, after_member_id=page[-1]["id"])
        assert [m["id"] for m in page + after] == [stale.member_id, never.member_id]
        with pytest.raises(ValueError):
            await comms.not_contacted_since(session, SYSTEM, 0)


async def test_passwords_are_argon2_and_repeated_failures_lock_the_account(sessions: Sessions) -> None:
    async with transaction(sessions) as session:
        await security.add_user(session, "agent1", factories.PASSWORD, Role.AGENT)
    async with sessions() as session:
        stored = (await session.execute(select(User.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$") and factories.PASSWORD not in stored
    async with transaction(sessions) as session:
        who = await security.authenticate(session, "agent1", factories.PASSWORD)
    assert who.role == Role.AGENT
    for _ in range(security.MAX_FAILED_LOGINS):
        with pytest.raises(security.AuthenticationFailed):
            async with transaction(sessions) as session:
                try:
                    await security.authenticate(session, "agent1", "wrong password")
                finally:
                    await session.commit()  # failures are counted even though the login is refused
    with pytest.raises(security.AuthenticationFailed):
        async with transaction(sessions) as session:
            await security.authenticate(session, "agent1", factories.PASSWORD)  # locked now
    async with transaction(sessions) as session:
        await session.execute(update(User).values(locked_until=utcnow() - dt.timedelta(seconds=1)))
    async with transaction(sessions) as session:
        assert (await security.authenticate(session, "agent1", factories.PASSWORD)).username == "agent1"


async def test_unknown_users_and_duplicates(sessions: Sessions) -> None:
    async with transaction(sessions) as session:
        await security.add_user(session, "agent1", factories.PASSWORD, Role.AGENT)
    with pytest.raises(security.UserExists):
        async with transaction(sessions) as session:
            await security.add_user(session, "agent1", factories.PASSWORD, Role.AGENT)
    with pytest.raises(security.AuthenticationFailed):
        async with transaction(sessions) as session:
            await security.authenticate(session, "nobody", "whatever!")
    with pytest.raises(security.UnknownOrgUnit):
        async with transaction(sessions) as session:
            await security.add_user(session, "agent9", factories.PASSWORD, Role.AGENT, org_unit_code="999")
    with pytest.raises(ValueError, match="at least 8"):
        async with transaction(sessions) as session:
            await security.add_user(session, "short", "1234567", Role.AGENT)


async def test_data_scopes_own_department_subtree_all(sessions: Sessions, settings: Settings) -> None:
    from crm_core.security.policy import DataScope

    await factories.org_tree(sessions)
    staff_a = await factories.principal(sessions, "staff_a", Role.CRM_STAFF, "310")
    mine = await factories.member(sessions, settings, who=staff_a, mobile="13800138001")
    other = await factories.member(sessions, settings, mobile="13800138002")  # created by the system, no unit
    async with transaction(sessions) as session:
        own_user = await security.add_user(
            session, "own_only", factories.PASSWORD, Role.CRM_STAFF, org_unit_code="310", data_scope=DataScope.OWN
        )
        own_only = await security.principal_for(session, own_user)
        dept_user = await security.add_user(
            session,
            "dept",
            factories.PASSWORD,
            Role.CRM_STAFF,
            org_unit_code="310",
            data_scope=DataScope.DEPARTMENT,
        )
        dept = await security.principal_for(session, dept_user)
        parent_dept_user = await security.add_user(
            session,
            "parent_dept",
            factories.PASSWORD,
            Role.CRM_STAFF,
            org_unit_code="300",
            data_scope=DataScope.DEPARTMENT,
        )
        parent_dept = await security.principal_for(session, parent_dept_user)
    async with sessions() as session:
        assert [m["id"] for m in await comms.not_contacted_since(session, own_only, 3)] == []
        assert [m["id"] for m in await comms.not_contacted_since(session, dept, 3)] == [mine.member_id]
        assert [m["id"] for m in await comms.not_contacted_since(session, parent_dept, 3)] == []
        assert [m["id"] for m in await comms.not_contacted_since(session, staff_a, 3)] == [mine.member_id]
        everyone = await comms.not_contacted_since(session, SYSTEM, 3)
        assert [m["id"] for m in everyone] == [mine.member_id, other.member_id]
