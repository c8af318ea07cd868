"""Caller-ID matching: every candidate member for a number, ranked for the screen pop."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, bindparam, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.members.models import Member, MemberContact, Organisation
from crm_core.phones import normalise


class MatchKind(enum.IntEnum):
    """Lower is better: the member's own mobile > own landline > contact person > company switchboard."""

    OWN_MOBILE = 1
    OWN_LANDLINE = 2
    CONTACT_PERSON = 3
    COMPANY = 4


_KIND_RANK = {"mobile": MatchKind.OWN_MOBILE, "home": MatchKind.OWN_LANDLINE, "work": MatchKind.OWN_LANDLINE}
_DEAD = frozenset({"closed", "rejected"})
_STATUS_RANK = {"active": 0, "suspended": 1, "approved": 1, "reviewing": 2, "applied": 2}
MAX_CANDIDATES = 50


@dataclass(frozen=True, slots=True)
class Candidate:
    member_id: int
    member_no: str
    name: str
    status: str
    match: MatchKind
    contact_name: str | None


def _lookup_query() -> Select[Any]:
    e164 = bindparam("e164", type_=String)
    own = select(
        MemberContact.member_id.label("member_id"),
        MemberContact.kind.label("kind"),
        MemberContact.contact_name.label("contact_name"),
    ).where(MemberContact.phone_e164 == e164)
    company = (
        select(
            Member.id.label("member_id"),
            literal("company", String).label("kind"),
            Organisation.name.label("contact_name"),
        )
        .join(Organisation, Member.organisation_id == Organisation.id)
        .where(Organisation.phone_e164 == e164)
        .limit(MAX_CANDIDATES)
    )
    matches = union_all(own, company.subquery().select()).subquery()
    return (
        select(
            matches.c.member_id,
            matches.c.kind,
            matches.c.contact_name,
            Member.member_no,
            Member.name,
            Member.status,
        )
        .join(Member, Member.id == matches.c.member_id)
        .limit(MAX_CANDIDATES * 2)
    )


# Built once, with the number as a bound parameter: building the UNION and its cache key on every
# call cost ~0.5 ms (members_lookup bench, 1M members), a quarter of the 2 ms screen-pop budget.
_LOOKUP = _lookup_query()


async def lookup_by_phone(session: AsyncSession, number: str | None, region: str = "CN") -> list[Candidate]:
    """All members reachable on `number`, best match first; [] for unknown, withheld or garbage numbers."""
    e164 = normalise(number, region)
    if e164 is None:
        return []
    rows = (await session.execute(_LOOKUP, {"e164": e164})).all()
    best: dict[int, Candidate] = {}
    for member_id, kind, contact_name, member_no, name, status in rows:
        match = _KIND_RANK.get(kind, MatchKind.CONTACT_PERSON if kind == "contact_person" else MatchKind.COMPANY)
        current = best.get(member_id)
        if current is None or match < current.match:
            best[member_id] = Candidate(member_id, member_no, name, status, match, contact_name)
    # Closed or rejected members still match (the agent should know), but after every live one.
    ranked = sorted(
        best.values(),
        key=lambda c: (c.status in _DEAD, c.match, _STATUS_RANK.get(c.status, 3), c.member_id),
    )
    return ranked[:MAX_CANDIDATES]
