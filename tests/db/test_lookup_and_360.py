"""Caller-ID lookup ranking (incl. shared numbers) and the member 360, with masking through every exit."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.comms import service as comms
from crm_core.comms.schemas import CommunicationIn
from crm_core.db import transaction
from crm_core.member360 import member_360
from crm_core.members import service as members
from crm_core.members.lookup import MatchKind, lookup_by_phone
from crm_core.members.models import Organisation
from crm_core.members.schemas import AddressIn, ContactIn
from crm_core.security import service as security
from crm_core.security.policy import SYSTEM, Level, Role
from crm_core.settings import Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]
ID_NUMBER = "11010119900307123" + "X"


async def _world(sessions: Sessions, settings: Settings) -> dict[str, int]:
    """Four members around one landline and one company switchboard."""
    async with transaction(sessions) as session:
        org = Organisation(name="青叶科技", org_type="enterprise", phone_e164="+862161234567", credit_code="91310000X")
        session.add(org)
        await session.flush()
        org_id = org.id
    wang = await factories.member(sessions, settings, name="王芳", mobile="13900139000")
    zhang = await factories.member(
        sessions,
        settings,
        name="张伟",
        mobile="13800138000",
        contacts=[{"kind": "home", "phone": "010-12345678"}],
    )
    li = await factories.member(
        sessions,
        settings,
        name="李娜",
        mobile="13700137000",
        contacts=[{"kind": "contact_person", "phone": "13800138000", "contact_name": "张伟", "relation": "丈夫"}],
    )
    chen = await factories.member(
        sessions,
        settings,
        name="陈静",
        mobile="13600136000",
        customer_type="enterprise",
        organisation_id=org_id,
        contacts=[{"kind": "work", "phone": "010-12345678"}],
    )
    return {"wang": wang.member_id, "zhang": zhang.member_id, "li": li.member_id, "chen": chen.member_id}


async def test_lookup_ranks_own_mobile_over_landline_contact_person_and_company(
    sessions: Sessions, settings: Settings
) -> None:
    ids = await _world(sessions, settings)
    async with sessions() as session:
        by_mobile = await lookup_by_phone(session, "+86 138-0013-8000")
        assert [(c.member_id, c.match) for c in by_mobile] == [
            (ids["zhang"], MatchKind.OWN_MOBILE),
            (ids["li"], MatchKind.CONTACT_PERSON),
        ]
        assert by_mobile[1].contact_name == "张伟"
        shared_landline = await lookup_by_phone(session, "01012345678")
        assert [(c.member_id, c.match) for c in shared_landline] == [
            (ids["zhang"], MatchKind.OWN_LANDLINE),
            (ids["chen"], MatchKind.OWN_LANDLINE),
        ]
        switchboard = await lookup_by_phone(session, "021-6123-4567")
        assert [(c.member_id, c.match, c.contact_name) for c in switchboard] == [
            (ids["chen"], MatchKind.COMPANY, "青叶科技")
        ]


@pytest.mark.parametrize("number", [None, "", "anonymous", "12345", "+", "4008001234", "13500135000", "\x00"])
async def test_lookup_of_unknown_or_garbage_numbers_returns_nothing(
    sessions: Sessions, settings: Settings, number: str | None
) -> None:
    await _world(sessions, settings)
    async with sessions() as session:
        assert await lookup_by_phone(session, number) == []


async def test_closed_members_rank_after_live_ones(sessions: Sessions, settings: Settings) -> None:
    ids = await _world(sessions, settings)
    from crm_core.members.validation import MemberStatus

    async with transaction(sessions) as session:
        await members.change_status(session, SYSTEM, ids["zhang"], MemberStatus.CLOSED)
    async with sessions() as session:
        ranked = await lookup_by_phone(session, "13800138000")
    assert [c.member_id for c in ranked] == [ids["li"], ids["zhang"]]


async def test_linking_a_number_makes_the_next_lookup_match(sessions: Sessions, settings: Settings) -> None:
    ids = await _world(sessions, settings)
    async with transaction(sessions) as session:
        assert await lookup_by_phone(session, "0755-8888-9999") == []
        await members.add_contact(session, SYSTEM, ids["wang"], ContactIn(kind="work", phone="075588889999"))
    async with sessions() as session:
        assert [c.member_id for c in await lookup_by_phone(session, "+86 755 8888 9999")] == [ids["wang"]]


async def test_member_360_has_profile_contacts_card_and_records(sessions: Sessions, settings: Settings) -> None:
    ids = await _world(sessions, settings)
    async with transaction(sessions) as session:
        await members.add_address(
            session,
            SYSTEM,
            ids["zhang"],
            AddressIn(province="北京", city="北京", district="东城区", detail="东长安街1号", postcode="100000"),
        )
        for n in range(12):
            await comms.add_record(
                session,
                SYSTEM,
                CommunicationIn(
                    member_id=ids["zhang"],
                    direction="in",
                    category="enquiry",
                    summary=f"咨询{n}",
                    status="done" if n % 2 else "pending",
                ),
            )
    async with sessions() as session:
        view = await member_360(session, SYSTEM, ids["zhang"])
    assert view["profile"]["name"] == "张伟" and view["profile"]["status"] == "active"
    assert [c["kind"] for c in view["contacts"]] == ["mobile", "home"]
    assert view["cards"][0]["status"] == "active"
    assert view["addresses"][0]["detail"] == "东长安街1号"
    assert len(view["communications"]["recent"]) == 10
    assert view["communications"]["recent"][0]["summary"] == "咨询11"
    assert view["communications"]["open"] == 6
    assert view["organisation"] is None


async def test_agent_sees_id_number_and_secondary_phones_masked_everywhere(
    sessions: Sessions, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await _world(sessions, settings)
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    admin = await factories.principal(sessions, "admin1", Role.ADMIN)
    async with transaction(sessions) as session:
        await members.add_address(
            session, SYSTEM, ids["chen"], AddressIn(province="上海", city="上海", detail="南京西路100号")
        )
        from crm_core.members.models import Member

        chen = await session.get(Member, ids["chen"])
        assert chen is not None
        chen.id_type, chen.id_number = "resident_id", ID_NUMBER
    async with sessions() as session:
        as_agent = await member_360(session, agent, ids["chen"])
        as_admin = await member_360(session, admin, ids["chen"])
        found = await members.search_members(session, agent, "13600136000")
    assert as_agent["profile"]["id_number"] == "110***********123X"
    assert as_admin["profile"]["id_number"] == ID_NUMBER
    assert found[0]["id_number"] == "110***********123X"
    secondary = [c for c in as_agent["contacts"] if not c["primary"]]
    assert secondary and all(c["phone"] == "010****5678" for c in secondary)
    assert as_agent["contacts"][0]["phone"] == "+8613600136000"  # the member's own mobile stays readable
    assert as_agent["addresses"][0]["detail"] == "南京******"
    assert "credit_code" not in as_agent["organisation"]
    assert as_admin["organisation"]["credit_code"] == "91310000X"


async def test_administrator_override_changes_what_a_role_sees(sessions: Sessions, settings: Settings) -> None:
    ids = await _world(sessions, settings)
    async with transaction(sessions) as session:
        await security.set_field_permission(session, Role.AGENT, "member", "mobile", Level.MASKED)
        await security.set_field_permission(session, Role.AGENT, "member", "birthday", Level.HIDDEN)
    agent = await factories.principal(sessions, "agent2", Role.AGENT)
    async with sessions() as session:
        view = await member_360(session, agent, ids["wang"])
    assert view["profile"]["mobile"] == "139****9000"
    assert view["contacts"][0]["phone"] == "139****9000"
    assert "birthday" not in view["profile"]


def test_phone_masking_helper_is_what_logs_use(caplog: pytest.LogCaptureFixture) -> None:
    from crm_core.phones import mask_phone

    logging.getLogger("cti.test").warning("caller %s", mask_phone("+8613800138000"))
    assert "138****8000" in caplog.text and "13800138000" not in caplog.text
