"""Join workflow, validations, status lifecycle, cards and updates — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import read_session, transaction
from crm_core.members import service as members
from crm_core.members.errors import (
    CardError,
    DuplicateMember,
    InvalidTransition,
    MemberNotFound,
    MissingInformation,
    NotEligible,
    StaleUpdate,
)
from crm_core.members.models import Card, Member, MemberChange
from crm_core.members.numbers import next_numbers
from crm_core.members.schemas import ContactIn, MemberIn, MemberUpdate
from crm_core.members.validation import MemberStatus, resident_id_check_digit
from crm_core.security.policy import SYSTEM, PermissionDenied, Role
from crm_core.settings import Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]


def resident_id(birth: str, seq: str = "123") -> str:
    first17 = "110101" + birth + seq
    return first17 + resident_id_check_digit(first17)


# ---------------------------------------------------------------- validation (pure, but kept with the domain)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "required"),
        ({"name": "   "}, "required"),
        ({"name": "张" * 51}, "longer than 50"),
        ({"name": "张伟", "mobile": "12345678901"}, "mobile"),
        ({"name": "张伟", "mobile": "14012345678"}, "carrier range"),
        ({"name": "张伟", "mobile": "010-12345678"}, "not a mainland mobile"),
        ({"name": "张伟", "email": "not-an-email"}, "e-mail"),
        ({"name": "张伟", "id_type": "resident_id", "id_number": "110101199001011230"}, "check digit"),
        ({"name": "张伟", "id_type": "resident_id", "id_number": "11010119900101"}, "17 digits"),
        ({"name": "张伟", "id_number": "E12345678"}, "id_type is required"),
        ({"name": "张伟", "id_type": "hk_macau_permit", "id_number": "ABC"}, "hk_macau_permit"),
        ({"name": "张伟", "birthday": "2999-01-01"}, "future"),
        ({"name": "张伟", "contacts": [{"kind": "contact_person", "phone": "13900139000"}]}, "needs a name"),
        (
            {"name": "张伟", "addresses": [{"province": "北京", "city": "北京", "detail": "x", "postcode": "1000"}]},
            "6 digits",
        ),
    ],
)
def test_invalid_member_input_is_refused_with_a_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        MemberIn.model_validate(fields)
    assert message in str(excinfo.value)


def test_birthday_is_derived_from_a_resident_id_and_must_agree() -> None:
    number = resident_id("19900307")
    assert MemberIn(name="李娜", id_type="resident_id", id_number=number).birthday == dt.date(1990, 3, 7)
    with pytest.raises(ValidationError, match="does not match"):
        MemberIn(name="李娜", id_type="resident_id", id_number=number, birthday=dt.date(1990, 3, 8))


# ---------------------------------------------------------------- join workflow


async def test_join_issues_member_number_and_card_and_activates(sessions: Sessions, settings: Settings) -> None:
    result = await factories.member(sessions, settings)
    assert result.status == MemberStatus.ACTIVE
    assert result.member_no == "M00000001"
    assert result.card_no == "880000000001"
    async with sessions() as session:
        member = await session.get(Member, result.member_id)
        assert member is not None and member.status == "active"
        history = (await session.execute(select(MemberChange.new_value).order_by(MemberChange.id))).scalars()
        assert list(history) == ["reviewing", "approved", "active"]


async def test_application_with_missing_key_information_waits(sessions: Sessions, settings: Settings) -> None:
    async with transaction(sessions) as session:
        applied = await members.submit_application(session, SYSTEM, MemberIn(name="王芳"), settings)
    assert applied.status == MemberStatus.APPLIED and applied.missing == ["mobile"]
    async with transaction(sessions) as session:
        await members.change_status(session, SYSTEM, applied.member_id, MemberStatus.REVIEWING)
    with pytest.raises(MissingInformation) as excinfo:
        async with transaction(sessions) as session:
            await members.approve(session, SYSTEM, applied.member_id, settings)
    assert excinfo.value.missing == ["mobile"]
    with pytest.raises(MissingInformation):
        async with transaction(sessions) as session:
            await members.join(session, SYSTEM, MemberIn(name="赵敏"), settings)


async def test_duplicate_application_by_mobile_or_id_is_refused(sessions: Sessions, settings: Settings) -> None:
    number = resident_id("19850101")
    await factories.member(sessions, settings, id_type="resident_id", id_number=number)
    with pytest.raises(DuplicateMember, match="mobile") as excinfo:
        await factories.member(sessions, settings, name="张伟二", mobile="+86 138 0013 8000")
    assert excinfo.value.existing_member_no == "M00000001"
    with pytest.raises(DuplicateMember, match="ID document"):
        await factories.member(sessions, settings, mobile="13900139000", id_type="resident_id", id_number=number)
    async with sessions() as session:
        assert await members.count_members(session) == 1


async def test_under_age_applicants_are_not_eligible(sessions: Sessions, settings: Settings) -> None:
    today = dt.date.today()
    with pytest.raises(NotEligible):
        await factories.member(sessions, settings, birthday=today.replace(year=today.year - 17))


async def test_status_lifecycle_refuses_illegal_moves(sessions: Sessions, settings: Settings) -> None:
    result = await factories.member(sessions, settings)
    with pytest.raises(InvalidTransition):
        async with transaction(sessions) as session:
            await members.change_status(session, SYSTEM, result.member_id, MemberStatus.APPLIED)
    async with transaction(sessions) as session:
        await members.change_status(session, SYSTEM, result.member_id, MemberStatus.SUSPENDED)
        await members.change_status(session, SYSTEM, result.member_id, MemberStatus.ACTIVE)
        await members.change_status(session, SYSTEM, result.member_id, MemberStatus.CLOSED)
    async with sessions() as session:
        card = (await session.execute(select(Card))).scalar_one()
        assert card.status == "cancelled"  # closing the account retires its card
    with pytest.raises(InvalidTransition):
        async with transaction(sessions) as session:
            await members.change_status(session, SYSTEM, result.member_id, MemberStatus.ACTIVE)


async def test_agents_cannot_change_status(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    result = await factories.member(sessions, settings)
    with pytest.raises(PermissionDenied):
        async with transaction(sessions) as session:
            await members.change_status(session, agent, result.member_id, MemberStatus.SUSPENDED)


# ---------------------------------------------------------------- cards


async def test_card_lifecycle_lost_unlock_replace_cancel(sessions: Sessions, settings: Settings) -> None:
    result = await factories.member(sessions, settings)
    assert result.card_no is not None
    card_no = result.card_no
    async with transaction(sessions) as session:
        assert (await members.card_action(session, SYSTEM, card_no, "report_lost")).status == "lost"
    with pytest.raises(CardError, match="cannot report lost"):
        async with transaction(sessions) as session:
            await members.card_action(session, SYSTEM, card_no, "report_lost")
    async with transaction(sessions) as session:
        assert (await members.card_action(session, SYSTEM, card_no, "unlock")).status == "active"
        await members.card_action(session, SYSTEM, card_no, "report_lost")
        new = await members.replace_card(session, SYSTEM, card_no, settings)
    assert new.card_no != card_no and new.status == "active"
    async with transaction(sessions) as session:
        old = (await session.execute(select(Card).where(Card.card_no == card_no))).scalar_one()
        assert old.status == "replaced"
        assert new.replaces_card_id == old.id
        with pytest.raises(CardError, match="already holds a card"):
            await members.issue_card(session, SYSTEM, result.member_id, settings)
    async with transaction(sessions) as session:
        assert (await members.card_action(session, SYSTEM, new.card_no, "cancel")).status == "cancelled"
        with pytest.raises(CardError, match="cannot unlock"):
            await members.card_action(session, SYSTEM, new.card_no, "unlock")


async def test_card_numbers_are_unique_under_concurrent_creation(sessions: Sessions, settings: Settings) -> None:
    """40 members joining at once (each its own transaction) get 40 distinct card and member numbers."""
    mobiles = [f"139{n:08d}" for n in range(10_000_000, 10_000_040)]

    async def join(mobile: str) -> members.JoinResult:
        async with transaction(sessions) as session:
            return await members.join(session, SYSTEM, MemberIn(name="并发", mobile=mobile), settings)

    results = await asyncio.gather(*(join(m) for m in mobiles))
    cards = {r.card_no for r in results}
    numbers = {r.member_no for r in results}
    assert len(cards) == 40 and len(numbers) == 40
    assert cards == {f"8800{n:08d}" for n in range(1, 41)}
    async with sessions() as session:
        assert (await session.execute(select(func.count(Card.id)))).scalar_one() == 40


async def test_number_blocks_never_overlap(sessions: Sessions) -> None:
    async def block() -> list[str]:
        async with transaction(sessions) as session:
            return await next_numbers(session, "X", 6, count=25)

    blocks = await asyncio.gather(*(block() for _ in range(8)))
    flat = [n for b in blocks for n in b]
    assert len(flat) == len(set(flat)) == 200


# ---------------------------------------------------------------- updates


async def test_update_records_history_and_refuses_stale_versions(sessions: Sessions, settings: Settings) -> None:
    result = await factories.member(sessions, settings)
    async with transaction(sessions) as session:
        member = await members.update_member(
            session, SYSTEM, result.member_id, MemberUpdate(name="张伟伟", mobile="13900139000"), expected_version=4
        )
        assert member.version == 5
    with pytest.raises(StaleUpdate):
        async with transaction(sessions) as session:
            await members.update_member(session, SYSTEM, result.member_id, MemberUpdate(name="x"), expected_version=4)
    async with sessions() as session:
        changes = (
            await session.execute(
                select(MemberChange.field, MemberChange.old_value, MemberChange.new_value).where(
                    MemberChange.field != "status"
                )
            )
        ).all()
        assert set(changes) == {("name", "张伟", "张伟伟"), ("mobile", "+8613800138000", "+8613900139000")}


async def test_agent_may_edit_contact_fields_but_not_member_type(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    result = await factories.member(sessions, settings)
    async with transaction(sessions) as session:
        await members.update_member(session, agent, result.member_id, MemberUpdate(email="a@b.cn"), 4)
    with pytest.raises(PermissionDenied, match="member_type"):
        async with transaction(sessions) as session:
            await members.update_member(session, agent, result.member_id, MemberUpdate(member_type="gold"), 5)


async def test_contacts_and_data_scope(sessions: Sessions, settings: Settings) -> None:
    await factories.org_tree(sessions)
    staff_a = await factories.principal(sessions, "staff_a", Role.CRM_STAFF, "310")
    staff_b = await factories.principal(sessions, "staff_b", Role.CRM_STAFF, "320")
    head = await factories.principal(sessions, "head", Role.SUPERVISOR, "300")
    own = await factories.member(sessions, settings, who=staff_a)
    async with transaction(sessions) as session:
        await members.add_contact(session, staff_a, own.member_id, ContactIn(kind="home", phone="010-12345678"))
        # Team B cannot see team A's member; the head of the parent unit can.
        with pytest.raises(MemberNotFound):
            await members.member_view(session, staff_b, own.member_id)
        assert (await members.member_view(session, head, own.member_id))["member_no"] == own.member_no
        assert await members.search_members(session, staff_b, "13800138000") == []
        found = await members.search_members(session, head, "010 1234 5678")
        assert [m["id"] for m in found] == [own.member_id]


async def test_name_search_treats_like_wildcards_as_characters(sessions: Sessions, settings: Settings) -> None:
    joined = await factories.member(sessions, settings, name="张伟")
    await factories.member(sessions, settings, name="王_芳", mobile="13800138001")
    async with read_session(sessions) as session:
        assert await members.search_members(session, SYSTEM, "%") == []
        assert await members.search_members(session, SYSTEM, "_") == []
        assert [m["name"] for m in await members.search_members(session, SYSTEM, "王_")] == ["王_芳"]
        assert [m["id"] for m in await members.search_members(session, SYSTEM, "张")] == [joined.member_id]
