"""Member use cases: the join workflow, contacts, cards, updates with change history, search."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import utcnow
from crm_core.loyalty import events as loyalty_events
from crm_core.members import validation as v
from crm_core.members.errors import (
    CardError,
    DuplicateMember,
    InvalidTransition,
    MemberNotFound,
    MissingInformation,
    NotEligible,
    StaleUpdate,
)
from crm_core.members.models import Address, Card, Member, MemberChange, MemberContact
from crm_core.members.numbers import next_numbers
from crm_core.members.schemas import AddressIn, ContactIn, MemberIn, MemberUpdate
from crm_core.phones import normalise
from crm_core.security.policy import Principal, apply_field_policy, check_writable
from crm_core.security.service import scope_filter
from crm_core.settings import Settings


@dataclass(frozen=True, slots=True)
class JoinResult:
    member_id: int
    member_no: str
    status: v.MemberStatus
    missing: list[str]
    card_no: str | None = None


def missing_key_information(data: MemberIn) -> list[str]:
    """Seed 004: 关键信息缺失 check; what an application needs before it can be approved."""
    missing = []
    if data.customer_type == v.CustomerType.PERSONAL:
        if not data.mobile:
            missing.append("mobile")
    else:
        if data.organisation_id is None:
            missing.append("organisation_id")
        if not data.mobile and not data.contacts:
            missing.append("mobile")
    return missing


def check_eligible(data: MemberIn, settings: Settings, today: dt.date) -> None:
    if (
        data.customer_type == v.CustomerType.PERSONAL
        and data.birthday is not None
        and v.age_on(data.birthday, today) < settings.min_member_age
    ):
        raise NotEligible(f"members must be at least {settings.min_member_age} years old")


async def find_duplicate(session: AsyncSession, data: MemberIn) -> DuplicateMember | None:
    """Seed 004: 重复入会申请 — same mobile, or same ID document, as a member not closed or rejected."""
    live = Member.status.not_in([v.MemberStatus.CLOSED, v.MemberStatus.REJECTED])
    if data.mobile:
        row = (await session.execute(select(Member.member_no).where(Member.mobile_e164 == data.mobile))).first()
        if row is not None:
            return DuplicateMember("mobile already registered", row[0])
    if data.id_type and data.id_number:
        row = (
            await session.execute(
                select(Member.member_no).where(
                    Member.id_type == data.id_type.value, Member.id_number == data.id_number, live
                )
            )
        ).first()
        if row is not None:
            return DuplicateMember("ID document already registered", row[0])
    return None


def member_row(data: MemberIn, member_no: str, status: v.MemberStatus, principal: Principal) -> dict[str, Any]:
    """Column values for a new member; shared by the single-member service and the bulk importer."""
    now = utcnow()
    return {
        "member_no": member_no,
        "customer_type": data.customer_type.value,
        "member_type": data.member_type.value,
        "status": status.value,
        "name": data.name,
        "gender": data.gender,
        "birthday": data.birthday,
        "id_type": data.id_type.value if data.id_type else None,
        "id_number": data.id_number,
        "mobile_e164": data.mobile,
        "email": data.email,
        "source": data.source,
        "organisation_id": data.organisation_id,
        "owner_user_id": principal.user_id or None,
        "org_unit_id": principal.org_unit_id,
        "remark": data.remark,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def contact_rows(member_id: int, data: MemberIn) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    if data.mobile:
        rows.append({"member_id": member_id, "kind": "mobile", "phone_e164": data.mobile, "is_primary": True})
        seen.add(("mobile", data.mobile))
    for contact in data.contacts:
        if (contact.kind, contact.phone) in seen:
            continue
        seen.add((contact.kind, contact.phone))
        rows.append(
            {
                "member_id": member_id,
                "kind": contact.kind,
                "phone_e164": contact.phone,
                "contact_name": contact.contact_name,
                "relation": contact.relation,
                "is_primary": False,
            }
        )
    return rows


async def submit_application(
    session: AsyncSession, principal: Principal, data: MemberIn, settings: Settings
) -> JoinResult:
    """Seed 004 join flow, step 1 (申请): validates, refuses duplicates, records what is missing."""
    check_eligible(data, settings, dt.date.today())
    duplicate = await find_duplicate(session, data)
    if duplicate is not None:
        raise duplicate
    member_no = (await next_numbers(session, settings.member_no_prefix, settings.member_no_digits))[0]
    member = Member(**member_row(data, member_no, v.MemberStatus.APPLIED, principal))
    session.add(member)
    await session.flush()
    for row in contact_rows(member.id, data):
        session.add(MemberContact(**row))
    for address in data.addresses:
        session.add(Address(member_id=member.id, **address.model_dump()))
    await session.flush()
    return JoinResult(member.id, member_no, v.MemberStatus.APPLIED, missing_key_information(data))


async def join(session: AsyncSession, principal: Principal, data: MemberIn, settings: Settings) -> JoinResult:
    """Staff enrolment in one step: apply, review, approve, issue the card (refused if info is missing)."""
    applied = await submit_application(session, principal, data, settings)
    if applied.missing:
        raise MissingInformation(applied.missing)
    await change_status(session, principal, applied.member_id, v.MemberStatus.REVIEWING)
    return await approve(session, principal, applied.member_id, settings)


async def load_member(session: AsyncSession, principal: Principal, member_id: int, *, lock: bool = False) -> Member:
    """The member if it is inside the principal's data scope; MemberNotFound otherwise (never says which)."""
    query = select(Member).where(
        Member.id == member_id, scope_filter(principal, Member.owner_user_id, Member.org_unit_id)
    )
    if lock:
        query = query.with_for_update()
    member = (await session.execute(query)).scalar_one_or_none()
    if member is None:
        raise MemberNotFound(f"member {member_id} not found")
    return member


def _record_change(
    session: AsyncSession, principal: Principal, member: Member, field: str, old: object, new: object
) -> None:
    session.add(
        MemberChange(
            member_id=member.id,
            field=field,
            old_value=None if old is None else str(old),
            new_value=None if new is None else str(new),
            changed_by=principal.user_id or None,
        )
    )


async def change_status(
    session: AsyncSession, principal: Principal, member_id: int, new_status: v.MemberStatus
) -> Member:
    """Move along the lifecycle in validation.STATUS_TRANSITIONS; anything else is refused."""
    member = await load_member(session, principal, member_id, lock=True)
    current = v.MemberStatus(member.status)
    if new_status not in v.STATUS_TRANSITIONS[current]:
        raise InvalidTransition(f"member {member.member_no}: {current} → {new_status} is not allowed")
    check_writable(principal, "member", ["status"])
    _record_change(session, principal, member, "status", current.value, new_status.value)
    member.status = new_status.value
    member.version += 1
    if new_status == v.MemberStatus.CLOSED:
        cards = await session.execute(
            select(Card).where(Card.member_id == member.id, Card.status.in_(["active", "lost"]))
        )
        for card in cards.scalars():
            card.status = "cancelled"
            card.status_changed_at = utcnow()
    await session.flush()
    return member


async def approve(session: AsyncSession, principal: Principal, member_id: int, settings: Settings) -> JoinResult:
    """Seed 004: 批准 → 卡号/级别分配 → 正式会员. Refused while key information is missing."""
    member = await load_member(session, principal, member_id, lock=True)
    missing = await _missing_for_member(session, member)
    if missing:
        raise MissingInformation(missing)
    await change_status(session, principal, member_id, v.MemberStatus.APPROVED)
    card = await issue_card(session, principal, member_id, settings, allow_status=v.MemberStatus.APPROVED)
    await change_status(session, principal, member_id, v.MemberStatus.ACTIVE)
    await loyalty_events.award_join(session, member_id, utcnow())  # 注册赠送, when a rule gives any
    return JoinResult(member.id, member.member_no, v.MemberStatus.ACTIVE, [], card.card_no)


async def _missing_for_member(session: AsyncSession, member: Member) -> list[str]:
    missing = []
    if member.customer_type == v.CustomerType.PERSONAL and not member.mobile_e164:
        missing.append("mobile")
    if member.customer_type != v.CustomerType.PERSONAL:
        if member.organisation_id is None:
            missing.append("organisation_id")
        has_phone = (
            member.mobile_e164
            or (await session.execute(select(MemberContact.id).where(MemberContact.member_id == member.id))).first()
        )
        if not has_phone:
            missing.append("mobile")
    return missing


# ---------------------------------------------------------------- cards


async def issue_card(
    session: AsyncSession,
    principal: Principal,
    member_id: int,
    settings: Settings,
    *,
    allow_status: v.MemberStatus = v.MemberStatus.ACTIVE,
    replaces: Card | None = None,
) -> Card:
    """发放: one usable card per member at a time; the number is prefix + serial."""
    member = await load_member(session, principal, member_id, lock=True)
    if member.status not in (allow_status.value, v.MemberStatus.ACTIVE.value):
        raise CardError(f"member {member.member_no} is {member.status}: no card can be issued")
    usable = await session.execute(
        select(Card.card_no).where(Card.member_id == member_id, Card.status.in_(["active", "lost"]))
    )
    if replaces is None and usable.first() is not None:
        raise CardError(f"member {member.member_no} already holds a card; replace it instead")
    card_no = (await next_numbers(session, settings.card_no_prefix, settings.card_no_digits))[0]
    card = Card(
        card_no=card_no,
        member_id=member_id,
        status="active",
        replaces_card_id=replaces.id if replaces else None,
    )
    session.add(card)
    await session.flush()
    return card


async def _card(session: AsyncSession, principal: Principal, card_no: str) -> Card:
    card = (await session.execute(select(Card).where(Card.card_no == card_no).with_for_update())).scalar_one_or_none()
    if card is None:
        raise CardError(f"no card {card_no}")
    await load_member(session, principal, card.member_id)  # data scope check
    return card


_CARD_MOVES = {
    "report_lost": ({"active"}, "lost"),  # 挂失
    "unlock": ({"lost"}, "active"),  # 解挂
    "cancel": ({"active", "lost"}, "cancelled"),  # 注销
}


async def card_action(session: AsyncSession, principal: Principal, card_no: str, action: str) -> Card:
    if action not in _CARD_MOVES:
        raise CardError(f"unknown card action {action!r}")
    allowed, target = _CARD_MOVES[action]
    card = await _card(session, principal, card_no)
    if card.status not in allowed:
        raise CardError(f"card {card_no} is {card.status}: cannot {action.replace('_', ' ')}")
    card.status = target
    card.status_changed_at = utcnow()
    await session.flush()
    return card


async def replace_card(session: AsyncSession, principal: Principal, card_no: str, settings: Settings) -> Card:
    """补卡: the old card (lost or damaged) is retired and a new number issued in the same transaction."""
    old = await _card(session, principal, card_no)
    if old.status not in ("active", "lost"):
        raise CardError(f"card {card_no} is {old.status}: cannot replace")
    old.status = "replaced"
    old.status_changed_at = utcnow()
    await session.flush()
    return await issue_card(session, principal, old.member_id, settings, replaces=old)


# ---------------------------------------------------------------- contacts and updates


async def add_contact(session: AsyncSession, principal: Principal, member_id: int, contact: ContactIn) -> int:
    check_writable(principal, "contact", ["phone"])
    await load_member(session, principal, member_id)
    row = MemberContact(
        member_id=member_id,
        kind=contact.kind,
        phone_e164=contact.phone,
        contact_name=contact.contact_name,
        relation=contact.relation,
    )
    session.add(row)
    await session.flush()
    return row.id


async def link_number(
    session: AsyncSession, principal: Principal, member_id: int, number: str, kind: str = "mobile"
) -> int | None:
    """Attach a caller's number to a member, so the next call from it matches (the agent confirmed
    who is calling). Agents may do this although they see secondary numbers masked: they only add the
    number their own phone showed. Returns the new contact's id, or None when the member has it already.
    """
    if kind not in ("mobile", "home", "work"):
        raise ValueError(f"unknown contact kind {kind!r}")
    member = await load_member(session, principal, member_id)
    e164 = v.clean_phone(number)
    existing = await session.execute(
        select(MemberContact.id).where(MemberContact.member_id == member_id, MemberContact.phone_e164 == e164)
    )
    if existing.first() is not None:
        return None
    row = MemberContact(member_id=member_id, kind=kind, phone_e164=e164)
    session.add(row)
    _record_change(session, principal, member, f"contact.{kind}", None, e164)
    await session.flush()
    return row.id


async def add_address(session: AsyncSession, principal: Principal, member_id: int, address: AddressIn) -> int:
    check_writable(principal, "address", ["detail"])
    await load_member(session, principal, member_id)
    row = Address(member_id=member_id, **address.model_dump())
    session.add(row)
    await session.flush()
    return row.id


async def update_member(
    session: AsyncSession, principal: Principal, member_id: int, changes: MemberUpdate, expected_version: int
) -> Member:
    """Field-checked update with optimistic locking and a change-history row per field."""
    fields = changes.model_dump(exclude_unset=True)
    check_writable(principal, "member", fields)
    member = await load_member(session, principal, member_id, lock=True)
    if member.version != expected_version:
        raise StaleUpdate(f"member {member.member_no} changed (version {member.version}, not {expected_version})")
    for name, value in fields.items():
        column = "mobile_e164" if name == "mobile" else name
        new = value.value if hasattr(value, "value") else value
        old = getattr(member, column)
        if old == new:
            continue
        if name == "mobile" and new is not None:
            clash = await session.execute(
                select(Member.member_no).where(Member.mobile_e164 == new, Member.id != member.id)
            )
            if (row := clash.first()) is not None:
                raise DuplicateMember("mobile already registered", row[0])
            await session.execute(
                update(MemberContact)
                .where(MemberContact.member_id == member.id, MemberContact.is_primary.is_(True))
                .values(phone_e164=new)
            )
        _record_change(session, principal, member, name, old, new)
        setattr(member, column, new)
    member.version += 1
    await session.flush()
    return member


async def member_view(session: AsyncSession, principal: Principal, member_id: int) -> dict[str, Any]:
    member = await load_member(session, principal, member_id)
    return apply_field_policy(principal, "member", profile_fields(member))


def profile_fields(member: Member) -> dict[str, Any]:
    return {
        "id": member.id,
        "member_no": member.member_no,
        "name": member.name,
        "customer_type": member.customer_type,
        "member_type": member.member_type,
        "status": member.status,
        "gender": member.gender,
        "birthday": member.birthday.isoformat() if member.birthday else None,
        "id_type": member.id_type,
        "id_number": member.id_number,
        "mobile": member.mobile_e164,
        "email": member.email,
        "source": member.source,
        "organisation_id": member.organisation_id,
        "remark": member.remark,
        "created_at": member.created_at.isoformat(),
        "version": member.version,
    }


async def search_members(
    session: AsyncSession, principal: Principal, query: str, limit: int = 20
) -> list[dict[str, Any]]:
    """Search by member number, card number, phone or name prefix (what agents type)."""
    text = query.strip()
    if not text:
        return []
    stmt = select(Member).where(scope_filter(principal, Member.owner_user_id, Member.org_unit_id))
    phone = normalise(text)
    # autoescape: a typed % or _ is a character, not a wildcard matching every member.
    conditions = [Member.member_no == text.upper(), Member.name.startswith(text, autoescape=True)]
    if phone:
        conditions.append(Member.id.in_(select(MemberContact.member_id).where(MemberContact.phone_e164 == phone)))
    if text.isdigit():
        conditions.append(Member.id.in_(select(Card.member_id).where(Card.card_no == text)))
    rows = await session.execute(stmt.where(or_(*conditions)).order_by(Member.id).limit(limit))
    return [apply_field_policy(principal, "member", profile_fields(m)) for m in rows.scalars()]


async def count_members(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count(Member.id)))).scalar_one())
