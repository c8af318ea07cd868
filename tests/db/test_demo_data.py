"""Demo data: deterministic, valid (phones, IDs, ages, cards) and full of the shared numbers that
make caller-ID ranking interesting; re-runs add nothing. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_core import demo
from crm_core.comms.models import CommunicationRecord
from crm_core.members.lookup import MatchKind, lookup_by_phone
from crm_core.members.models import Address, Card, Member, MemberContact, Organisation
from crm_core.members.validation import IdType, age_on, clean_email, clean_id_number, resident_id_birthday
from crm_core.phones import PhoneKind, parse_phone
from crm_core.security import service as security
from crm_core.security.models import OrgUnit
from crm_core.settings import Settings
from tests.conftest import wipe

Sessions = async_sessionmaker[AsyncSession]
NOW = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
COUNT = 500  # one organisation block and five couple blocks: every shared-number case is present
SEED = 7

_SNAPSHOT_QUERIES = {
    "members": "SELECT * FROM members ORDER BY id",
    "contacts": "SELECT * FROM member_contacts ORDER BY id",
    "addresses": "SELECT * FROM member_addresses ORDER BY id",
    "cards": "SELECT * FROM member_cards ORDER BY id",
    "records": "SELECT * FROM communication_records ORDER BY id",
    "organisations": "SELECT * FROM organisations ORDER BY id",
}


async def _snapshot(sessions: Sessions) -> dict[str, list[tuple[Any, ...]]]:
    async with sessions() as session:
        return {
            name: [tuple(row) for row in await session.execute(text(sql))] for name, sql in _SNAPSHOT_QUERIES.items()
        }


async def _count(sessions: Sessions, model: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_same_seed_gives_identical_rows_and_another_seed_does_not(
    sessions: Sessions, settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two batches of one chunk each: on PostgreSQL their COPYs overlap, which must not change any id.
    monkeypatch.setattr(demo, "BATCH_CHUNKS", 1)
    count = demo.CHUNK + COUNT
    assert await demo.generate_demo_members(settings, count, seed=SEED, progress=False, now=NOW) == count
    first = await _snapshot(sessions)
    await wipe(engine)  # a fresh install: counters and ids start again
    assert await demo.generate_demo_members(settings, count, seed=SEED, progress=False, now=NOW) == count
    assert await _snapshot(sessions) == first
    assert len(first["members"]) == count

    other = [(m.name, m.mobile_e164) for m in demo.plan_members(50, SEED + 1, now=NOW)]
    assert other != [(m.name, m.mobile_e164) for m in demo.plan_members(50, SEED, now=NOW)]


def test_a_smaller_count_is_a_prefix_of_a_larger_one() -> None:
    """Member i depends on (seed, i) only, so the cached 1M bench database and a 500-member demo agree."""
    small = list(demo.plan_members(300, SEED, now=NOW))
    large = list(demo.plan_members(1_200, SEED, now=NOW))
    assert [m.mobile_e164 for m in small] == [m.mobile_e164 for m in large[:300]]
    assert [m.name for m in small] == [m.name for m in large[:300]]


async def test_every_number_is_valid_and_every_member_plausible(sessions: Sessions, settings: Settings) -> None:
    await demo.generate_demo_members(settings, COUNT, seed=SEED, progress=False, now=NOW)
    async with sessions() as session:
        members = (await session.execute(select(Member))).scalars().all()
        contacts = (await session.execute(select(MemberContact))).scalars().all()
        cards = (await session.execute(select(Card))).scalars().all()
        organisations = (await session.execute(select(Organisation))).scalars().all()
        addresses = (await session.execute(select(Address))).scalars().all()
        records = (await session.execute(select(CommunicationRecord))).scalars().all()

    assert len({m.mobile_e164 for m in members}) == COUNT  # unique own mobiles
    for m in members:
        assert m.mobile_e164 is not None
        phone = parse_phone(m.mobile_e164)
        assert (phone.kind, phone.e164) == (PhoneKind.MOBILE, m.mobile_e164)
        assert m.birthday is not None and age_on(m.birthday, NOW.date()) >= settings.min_member_age
        if m.id_type == IdType.RESIDENT_ID:
            assert m.id_number is not None
            assert clean_id_number(IdType.RESIDENT_ID, m.id_number) == m.id_number  # check digit is right
            assert resident_id_birthday(m.id_number) == m.birthday
            assert int(m.id_number[16]) % 2 == (1 if m.gender == "male" else 0)
        if m.email:
            assert clean_email(m.email) == m.email
        assert m.member_no.startswith(settings.member_no_prefix)
    assert sum(m.id_type == IdType.RESIDENT_ID for m in members) > COUNT // 4

    landlines = 0
    for c in contacts:
        phone = parse_phone(c.phone_e164)  # raises if any stored number is outside carrier/area ranges
        assert phone.e164 == c.phone_e164
        landlines += phone.kind == PhoneKind.LANDLINE
        assert (phone.kind == PhoneKind.MOBILE) == (c.kind in ("mobile", "contact_person"))
    assert landlines > COUNT // 5
    for o in organisations:
        assert o.phone_e164 is not None and parse_phone(o.phone_e164).kind == PhoneKind.LANDLINE

    per_member = Counter(c.member_id for c in contacts)
    assert set(per_member.values()) <= {1, 2, 3} and len(per_member) == COUNT
    primary = {c.member_id: c.phone_e164 for c in contacts if c.is_primary}
    assert primary == {m.id: m.mobile_e164 for m in members}

    statuses = Counter(m.status for m in members)
    assert statuses["active"] > COUNT * 0.8
    assert set(Counter(m.member_type for m in members)) == {"standard", "gold", "diamond"}
    active_cards = Counter(c.member_id for c in cards if c.status == "active")
    for m in members:
        expected = 1 if m.status in ("active", "suspended") else 0
        assert active_cards.get(m.id, 0) == expected, m.status
    assert all(c.card_no.startswith(settings.card_no_prefix) for c in cards)
    assert {a.member_id for a in addresses} == {m.id for m in members}

    assert records, "a fraction of members has communication records"
    for r in records:
        assert NOW - dt.timedelta(days=90) <= r.created_at <= NOW


async def test_shared_numbers_give_several_ranked_candidates(sessions: Sessions, settings: Settings) -> None:
    await demo.generate_demo_members(settings, COUNT, seed=SEED, progress=False, now=NOW)
    async with sessions() as session:
        contacts = (await session.execute(select(MemberContact))).scalars().all()
        organisations = (await session.execute(select(Organisation))).scalars().all()
        staff = Counter(
            (await session.execute(select(Member.organisation_id).where(Member.organisation_id.is_not(None))))
            .scalars()
            .all()
        )

        homes: dict[str, set[int]] = defaultdict(set)
        for c in contacts:
            if c.kind == "home":
                homes[c.phone_e164].add(c.member_id)
        shared_homes = [phone for phone, owners in homes.items() if len(owners) >= 2]
        assert len(shared_homes) >= COUNT // demo.PAIR_BLOCK  # ~2% of members share a home landline
        for phone in shared_homes:
            found = await lookup_by_phone(session, phone)
            assert {c.member_id for c in found} >= homes[phone]
            assert {c.match for c in found if c.member_id in homes[phone]} == {MatchKind.OWN_LANDLINE}

        mobiles = {
            mobile: member_id for mobile, member_id in await session.execute(select(Member.mobile_e164, Member.id))
        }
        spouses = [c for c in contacts if c.kind == "contact_person" and c.phone_e164 in mobiles]
        assert len(spouses) >= COUNT // demo.PAIR_BLOCK
        for spouse in spouses:
            matches = {(c.member_id, c.match) for c in await lookup_by_phone(session, spouse.phone_e164)}
            # The spouse is a member too: their own mobile, and the partner's contact person.
            assert {
                (mobiles[spouse.phone_e164], MatchKind.OWN_MOBILE),
                (spouse.member_id, MatchKind.CONTACT_PERSON),
            } <= matches

        assert organisations and all(staff[o.id] >= 3 for o in organisations)
        switchboard = organisations[0]
        assert switchboard.phone_e164 is not None
        national = parse_phone(switchboard.phone_e164).national  # as a PBX would present it: 0755 8xxx xxxx
        found = await lookup_by_phone(session, national)
        assert len(found) == staff[switchboard.id]
        assert {c.match for c in found} == {MatchKind.COMPANY}


async def test_rerun_adds_nothing_and_a_larger_count_adds_only_the_tail(sessions: Sessions, settings: Settings) -> None:
    assert await demo.generate_demo_members(settings, 300, seed=SEED, progress=False, now=NOW) == 300
    before = await _snapshot(sessions)
    assert await demo.generate_demo_members(settings, 300, seed=SEED, progress=False, now=NOW) == 0
    assert await _snapshot(sessions) == before
    # A later day changes timestamps of *new* members only; existing ones are recognised by mobile.
    later = NOW + dt.timedelta(days=3)
    assert await demo.generate_demo_members(settings, 450, seed=SEED, progress=False, now=later) == 150
    after = await _snapshot(sessions)
    assert after["members"][:300] == before["members"]
    assert await _count(sessions, Member) == 450
    assert await _count(sessions, Organisation) == 1  # the block's organisation was not duplicated


async def test_demo_users_are_created_once_in_the_demo_org_tree(
    sessions: Sessions, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(demo.DEMO_PASSWORD_ENV, "a demo password for tests")
    assert await demo.ensure_demo_users(settings) == ["agent1", "agent2", "supervisor1", "staff1", "admin"]
    assert await demo.ensure_demo_users(settings) == []
    async with sessions() as session, session.begin():
        agent = await security.authenticate(session, "agent1", "a demo password for tests")
        unit = await security.org_unit_by_code(session, "310")
    assert agent.org_unit_id == unit.id
    # Demo members belong to the store of their city (or 门店), so store staff see them.
    await demo.generate_demo_members(settings, 100, seed=SEED, progress=False, now=NOW)
    async with sessions() as session:
        codes = set(
            (
                await session.execute(select(OrgUnit.code).join(Member, Member.org_unit_id == OrgUnit.id).distinct())
            ).scalars()
        )
    assert codes and codes <= {"220", *(code for code, _ in demo.STORES.values())}


def test_mobile_permutation_is_a_bijection() -> None:
    permutation = demo.IndexPermutation(10_007, key=42)
    assert sorted(permutation(i) for i in range(10_007)) == list(range(10_007))
    blocks = demo.mobile_blocks()
    assert len(set(blocks)) == len(blocks)  # one position per block, or two members could share a mobile


async def test_demo_service_desk_content_is_added_once(sessions: Sessions, settings: Settings) -> None:
    from crm_core.demo_service import seed_service_desk
    from crm_core.kb import service as kb
    from crm_core.messaging.models import MessageTemplate
    from crm_core.security.service import principal_by_username
    from crm_core.service.models import ServiceRequest

    await demo.ensure_demo_users(settings)
    await demo.generate_demo_members(settings, 5, seed=1, progress=False)
    assert await seed_service_desk(sessions)
    assert not await seed_service_desk(sessions)
    async with sessions() as session:
        agent = await principal_by_username(session, "agent1")
        found = await kb.search_articles(session, agent, "积分有效期")
        requests = (await session.execute(select(func.count()).select_from(ServiceRequest))).scalar_one()
        templates = (await session.execute(select(func.count()).select_from(MessageTemplate))).scalar_one()
    assert found and found[0]["title"] == "积分规则与有效期"
    assert (requests, templates) == (3, 2)


async def test_demo_loyalty_content_is_added_once_and_balances(sessions: Sessions, settings: Settings) -> None:
    from crm_core.demo_loyalty import seed_loyalty
    from crm_core.loyalty import ledger, rule_book
    from crm_core.loyalty.models import CatalogueItem, PointsAccount

    await demo.generate_demo_members(settings, 5, seed=1, progress=False)
    assert await seed_loyalty(sessions, members=5)
    assert not await seed_loyalty(sessions, members=5)
    async with sessions() as session:
        rules = await rule_book.list_rules(session)
        items = (await session.execute(select(func.count()).select_from(CatalogueItem))).scalar_one()
        earned = (await session.execute(select(func.sum(PointsAccount.lifetime)))).scalar_one()
        assert await ledger.reconcile(session) == []
    assert {rule.name for rule in rules} >= {"思凡积分规则", "注册赠送", "推荐客户赠送"} and items == 3
    assert earned > 0
