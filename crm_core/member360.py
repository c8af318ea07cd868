"""The member 360 read model: everything a screen pop or member page needs, in one call.

It spans contexts (members, comms, and later loyalty and service), so it lives beside them rather
than inside one. Later contexts add a section with `register_section`: a `read` (the section's raw
data for one member, no principal) and a `show` (that data as a principal may see it, through
`apply_field_policy`). The split lets the screen pop read a caller's 360 once, while the call waits
in the queue, and show it to each ringing agent with that agent's permissions and no further query
(`read_member_360` + `view_member_360`); `member_360` is both steps at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.comms.models import CommunicationRecord
from crm_core.comms.service import record_fields
from crm_core.db import read_session, utcnow
from crm_core.loyalty import ledger, tiers
from crm_core.loyalty.models import PointsAccount
from crm_core.members.models import Address, Card, Member, MemberContact, Organisation
from crm_core.members.service import load_member, profile_fields
from crm_core.security.models import OrgUnit
from crm_core.security.policy import Principal, apply_field_policy, in_scope
from crm_core.service.models import OPEN_STATES, ServiceRequest
from crm_core.service.sla_models import SlaStatus
from crm_core.survey.models import SurveyResponse

SectionRead = Callable[[AsyncSession, Member], Awaitable[Any]]
SectionShow = Callable[[Principal, Any], Any]


@dataclass(frozen=True, slots=True)
class Section:
    read: SectionRead
    show: SectionShow


_SECTIONS: dict[str, Section] = {}
RECENT_RECORDS = 10

# Section statements are built once with the member id bound per call: constructing a select and
# its cache key on each call cost ~0.1–0.2 ms per section (members_lookup bench, 1M members).
_MEMBER_ID = bindparam("member_id", type_=Integer)
_MEMBER_WITH_UNIT = (
    select(Member, OrgUnit.path).outerjoin(OrgUnit, OrgUnit.id == Member.org_unit_id).where(Member.id == _MEMBER_ID)
)
_CONTACTS = (
    select(MemberContact)
    .where(MemberContact.member_id == _MEMBER_ID)
    .order_by(MemberContact.is_primary.desc(), MemberContact.id)
)
_ADDRESSES = select(Address).where(Address.member_id == _MEMBER_ID).order_by(Address.id)
_CARDS = select(Card).where(Card.member_id == _MEMBER_ID).order_by(Card.issued_at.desc(), Card.id.desc())
# The recent records and the open count in one round trip: the window count runs before LIMIT.
_RECENT = (
    select(CommunicationRecord, func.count().filter(CommunicationRecord.status != "done").over().label("open"))
    .where(CommunicationRecord.member_id == _MEMBER_ID)
    .order_by(CommunicationRecord.created_at.desc(), CommunicationRecord.id.desc())
    .limit(RECENT_RECORDS)
)
RECENT_CALLS = 5
_CALLS = (
    select(Call)
    .where(Call.member_id == _MEMBER_ID, Call.state == "ended")
    .order_by(Call.started_at.desc(), Call.id.desc())
    .limit(RECENT_CALLS)
)
_POINTS = select(PointsAccount.valid, PointsAccount.pending, PointsAccount.lifetime, PointsAccount.held).where(
    PointsAccount.member_id == _MEMBER_ID
)


def register_section(name: str, read: SectionRead, show: SectionShow) -> None:
    """Add a part to the 360 (e.g. "points", "tickets", "calls"); later registrations replace earlier.

    `read` must return plain data that does not depend on who asks; `show` must pass every field
    through `apply_field_policy` (it is the only thing between that data and an agent's screen).
    """
    _SECTIONS[name] = Section(read, show)


@dataclass(frozen=True, slots=True)
class Member360Record:
    """One member's 360 as stored, before any permission applies: never shown as it is, only
    through `view_member_360` (or `member_360`). Its owner and org unit decide the data scope."""

    member_id: int
    owner_user_id: int | None
    org_unit_id: int | None
    org_unit_path: str | None
    profile: dict[str, Any]
    sections: dict[str, Any]


async def member_360(session: AsyncSession, principal: Principal, member_id: int) -> dict[str, Any]:
    """Profile, contacts, addresses, cards, organisation, recent communication records, plus sections.

    Raises MemberNotFound when the member is outside the principal's data scope."""
    member = await load_member(session, principal, member_id)
    return _show(principal, await _read(session, member, None))


async def read_member_360(session: AsyncSession, member_id: int) -> Member360Record | None:
    """The member's 360 unmasked and unscoped (None if there is no such member), to be shown later to
    one or several principals with `view_member_360`. The same statements as `member_360`."""
    row = await _member_with_unit(session, member_id)
    return None if row is None else await _read(session, *row)


async def _member_with_unit(session: AsyncSession, member_id: int) -> tuple[Member, str | None] | None:
    row = (await session.execute(_MEMBER_WITH_UNIT, {"member_id": member_id})).first()
    return None if row is None else (row[0], row[1])


async def read_member_360_in_lanes(
    sessions: async_sessionmaker[AsyncSession], member_id: int, lanes: int = 3
) -> Member360Record | None:
    """`read_member_360`, its sections shared out over `lanes` read sessions side by side.

    Why: on the ringing path the ten statements one after another each wait their turn on a busy
    event loop; under cti_load (10 calls/s, one agent rung per call) the read took 9 ms at p50 and
    37 ms at p99, and a ring that comes before it is done pops that much later. Three lanes cut
    the turns from eleven to five, for three pooled connections a call instead of one. The sections
    are not read in one snapshot: each is current when read, which is all a screen pop needs.
    """
    async with read_session(sessions) as session:
        row = await _member_with_unit(session, member_id)
    if row is None:
        return None
    member, unit_path = row  # detached now: the sections read only its loaded columns
    names = list(_SECTIONS)

    async def lane(mine: list[str]) -> list[Any]:
        async with read_session(sessions) as lane_session:
            return [await _SECTIONS[name].read(lane_session, member) for name in mine]

    shares = [share for share in (names[i::lanes] for i in range(lanes)) if share]
    read = await asyncio.gather(*(lane(share) for share in shares))
    sections = {
        name: value
        for share, values in zip(shares, read, strict=True)
        for name, value in zip(share, values, strict=True)
    }
    return _record(member, unit_path, {name: sections[name] for name in names})


def view_member_360(principal: Principal, record: Member360Record) -> dict[str, Any] | None:
    """What `member_360` returns for `principal`, from a record read earlier; None where `member_360`
    would raise MemberNotFound (outside the principal's data scope). Pure: no I/O."""
    if not in_scope(principal, record.owner_user_id, record.org_unit_id, record.org_unit_path):
        return None
    return _show(principal, record)


async def _read(session: AsyncSession, member: Member, unit_path: str | None) -> Member360Record:
    return _record(
        member, unit_path, {name: await section.read(session, member) for name, section in _SECTIONS.items()}
    )


def _record(member: Member, unit_path: str | None, sections: dict[str, Any]) -> Member360Record:
    return Member360Record(
        member_id=member.id,
        owner_user_id=member.owner_user_id,
        org_unit_id=member.org_unit_id,
        org_unit_path=unit_path,
        profile=profile_fields(member),
        sections=sections,
    )


def _show(principal: Principal, record: Member360Record) -> dict[str, Any]:
    view: dict[str, Any] = {"profile": apply_field_policy(principal, "member", record.profile)}
    for name, section in _SECTIONS.items():
        view[name] = section.show(principal, record.sections[name])
    return view


async def _read_contacts(session: AsyncSession, member: Member) -> list[dict[str, Any]]:
    rows = await session.execute(_CONTACTS, {"member_id": member.id})
    return [
        {
            "id": c.id,
            "kind": c.kind,
            "phone": c.phone_e164,
            "contact_name": c.contact_name,
            "relation": c.relation,
            "primary": c.is_primary,
        }
        for c in rows.scalars()
    ]


def _show_contacts(principal: Principal, contacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    views = []
    for c in contacts:
        # The member's primary mobile follows the member.mobile permission; other numbers are "secondary".
        entity, field = ("member", "mobile") if c["primary"] else ("contact", "phone")
        shown = apply_field_policy(principal, entity, {field: c["phone"]})
        views.append(c | {"phone": shown.get(field)})
    return views


async def _read_addresses(session: AsyncSession, member: Member) -> list[dict[str, Any]]:
    rows = await session.execute(_ADDRESSES, {"member_id": member.id})
    return [
        {
            "id": a.id,
            "kind": a.kind,
            "province": a.province,
            "city": a.city,
            "district": a.district,
            "detail": a.detail,
            "postcode": a.postcode,
            "is_default": a.is_default,
        }
        for a in rows.scalars()
    ]


def _show_addresses(principal: Principal, addresses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [apply_field_policy(principal, "address", a) for a in addresses]


async def _read_cards(session: AsyncSession, member: Member) -> list[dict[str, Any]]:
    rows = await session.execute(_CARDS, {"member_id": member.id})
    return [{"card_no": c.card_no, "status": c.status, "issued_at": c.issued_at.isoformat()} for c in rows.scalars()]


def _show_cards(principal: Principal, cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [apply_field_policy(principal, "card", c) for c in cards]


async def _read_organisation(session: AsyncSession, member: Member) -> dict[str, Any] | None:
    if member.organisation_id is None:
        return None
    org = await session.get(Organisation, member.organisation_id)
    if org is None:
        return None
    return {
        "id": org.id,
        "name": org.name,
        "org_type": org.org_type,
        "phone": org.phone_e164,
        "credit_code": org.credit_code,
    }


def _show_organisation(principal: Principal, org: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if org is None else apply_field_policy(principal, "organisation", org)


async def _read_communications(session: AsyncSession, member: Member) -> tuple[list[dict[str, Any]], int]:
    rows = (await session.execute(_RECENT, {"member_id": member.id})).all()
    return [record_fields(record) for record, _ in rows], int(rows[0].open) if rows else 0


def _show_communications(principal: Principal, read: tuple[list[dict[str, Any]], int]) -> dict[str, Any]:
    records, open_count = read
    recent = [apply_field_policy(principal, "communication", r) for r in records]
    return {
        "recent": recent,
        "open": open_count,
        "last_contacted_at": recent[0]["created_at"] if recent else None,
    }


register_section("contacts", _read_contacts, _show_contacts)
register_section("addresses", _read_addresses, _show_addresses)
register_section("cards", _read_cards, _show_cards)
register_section("organisation", _read_organisation, _show_organisation)
register_section("communications", _read_communications, _show_communications)


async def _read_calls(session: AsyncSession, member: Member) -> list[dict[str, Any]]:
    """The member's last calls with their outcome. The recording is only a flag here: playback goes
    through the recordings service, which checks access and writes the audit row."""
    rows = await session.execute(_CALLS, {"member_id": member.id})
    return [
        {
            "id": c.id,
            "linkedid": c.linkedid,
            "direction": c.direction,
            "started_at": c.started_at.isoformat(),
            "outcome": c.outcome,
            "queue": c.queue,
            "agent": c.agent_endpoint,
            "talk_s": c.talk_s,
            "disposition": c.disposition,
            "has_recording": bool(c.recording_file),
        }
        for c in rows.scalars()
    ]


def _show_calls(principal: Principal, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [apply_field_policy(principal, "call", c) for c in calls]


async def _read_points(session: AsyncSession, member: Member) -> dict[str, Any]:
    """Balances, points expiring within 30 days, the tier and what the next tier still lacks this period."""
    row = (await session.execute(_POINTS, {"member_id": member.id})).first()
    valid, pending, lifetime, held = row if row is not None else (0, 0, 0, 0)
    now = utcnow()
    points: dict[str, Any] = {
        "valid": int(valid),
        "pending": int(pending),
        "lifetime": int(lifetime),
        "held": int(held),
        "expiring_30_days": await ledger.expiring(session, member.id, now, 30) if valid else 0,
        "tier": member.member_type,
        "next_tier": None,
        "points_to_next_tier": None,
        "period_qualifying": None,
    }
    # `tiers.tier_status` without its two reads of what `member` already holds (the screen pop waits on this).
    defined = await tiers.load_tiers(session)
    rank = next((tier.rank for tier in defined if tier.code == member.member_type), None)
    if rank is None:  # no tier table (yet), or a member_type it does not list: no progress to show
        return points
    next_tier = next((tier for tier in defined if tier.rank > rank), None)
    period = next_tier.period if next_tier else defined[-1].period
    period_points = await tiers.qualifying_points(session, member.id, period, now)
    points.update(
        next_tier=next_tier.code if next_tier else None,
        points_to_next_tier=max(0, next_tier.threshold - period_points) if next_tier else None,
        period_qualifying=period_points,
    )
    return points


def _show_points(principal: Principal, points: dict[str, Any]) -> dict[str, Any]:
    return apply_field_policy(principal, "points", points)


register_section("calls", _read_calls, _show_calls)
register_section("points", _read_points, _show_points)


# Service requests: the open ones first (the caller is most likely calling about one), then the latest.
RECENT_REQUESTS = 8
_REQUESTS = (
    select(
        ServiceRequest.id,
        ServiceRequest.no,
        ServiceRequest.type,
        ServiceRequest.priority,
        ServiceRequest.state,
        ServiceRequest.subject,
        ServiceRequest.created_at,
        SlaStatus.resolution_due_at,
        SlaStatus.resolution_breached,
        func.count().filter(ServiceRequest.state.in_([str(s) for s in OPEN_STATES])).over().label("open"),
    )
    .outerjoin(SlaStatus, SlaStatus.request_id == ServiceRequest.id)
    .where(ServiceRequest.member_id == _MEMBER_ID)
    .order_by(
        case((ServiceRequest.state.in_([str(s) for s in OPEN_STATES]), 0), else_=1),
        ServiceRequest.created_at.desc(),
        ServiceRequest.id.desc(),
    )
    .limit(RECENT_REQUESTS)
)


async def _read_requests(session: AsyncSession, member: Member) -> dict[str, Any]:
    rows = (await session.execute(_REQUESTS, {"member_id": member.id})).all()
    return {
        "open": int(rows[0].open) if rows else 0,
        "recent": [
            {
                "id": r.id,
                "no": r.no,
                "type": r.type,
                "priority": r.priority,
                "state": r.state,
                "subject": r.subject,
                "created_at": r.created_at.isoformat(),
                "due_at": r.resolution_due_at.isoformat() if r.resolution_due_at else None,
                "breached": bool(r.resolution_breached),
            }
            for r in rows
        ],
    }


def _show_requests(principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "open": data["open"],
        "recent": [apply_field_policy(principal, "service_request", r) for r in data["recent"]],
    }


register_section("service", _read_requests, _show_requests)


# The member's latest post-call survey answers (电话服务评价): how the caller rated recent calls.
RECENT_SURVEYS = 5
_SURVEYS = (
    select(SurveyResponse.score, SurveyResponse.answered_at, SurveyResponse.linkedid, SurveyResponse.agent_endpoint)
    .where(SurveyResponse.member_id == _MEMBER_ID, SurveyResponse.question == 1)
    .order_by(SurveyResponse.answered_at.desc(), SurveyResponse.id.desc())
    .limit(RECENT_SURVEYS)
)


async def _read_surveys(session: AsyncSession, member: Member) -> list[dict[str, Any]]:
    rows = await session.execute(_SURVEYS, {"member_id": member.id})
    return [
        {"score": int(score), "answered_at": at.isoformat(), "linkedid": linkedid, "agent": agent}
        for score, at, linkedid, agent in rows.all()
    ]


def _show_surveys(principal: Principal, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [apply_field_policy(principal, "survey", r) for r in rows]


register_section("surveys", _read_surveys, _show_surveys)
