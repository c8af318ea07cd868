"""Numbers to dial for a member or contact, resolved server-side so a masked number can be dialled
without ever being shown to the agent."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.members.models import Member, MemberContact
from crm_core.members.service import load_member
from crm_core.security.policy import Principal


class NothingToDial(Exception):
    pass


async def dial_target(
    session: AsyncSession, principal: Principal, *, member_id: int, contact_id: int | None = None
) -> tuple[str, str]:
    """(E.164 number, member name) for a member's primary mobile or one of its contacts, within the
    principal's data scope."""
    member: Member = await load_member(session, principal, member_id)
    if contact_id is None:
        if member.mobile_e164 is None:
            raise NothingToDial(f"member {member.member_no} has no mobile number")
        return member.mobile_e164, member.name
    contact = (
        await session.execute(
            select(MemberContact).where(MemberContact.id == contact_id, MemberContact.member_id == member_id)
        )
    ).scalar_one_or_none()
    if contact is None:
        raise NothingToDial(f"contact {contact_id} does not belong to member {member.member_no}")
    return contact.phone_e164, contact.contact_name or member.name
