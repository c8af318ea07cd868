"""Communication records (交流记录) and the seed's "not contacted in N days" list (三天未回访客户)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.comms.models import CommunicationRecord
from crm_core.comms.schemas import CommunicationIn
from crm_core.db import utcnow
from crm_core.members.errors import MemberNotFound
from crm_core.members.models import Member
from crm_core.security.policy import Principal, apply_field_policy, check_writable
from crm_core.security.service import scope_filter

_STATUS_FLOW = {
    "pending": {"in_progress", "done"},
    "in_progress": {"done", "pending"},
    "done": {"in_progress"},
}


class InvalidRecordTransition(Exception):
    pass


async def _member_in_scope(session: AsyncSession, principal: Principal, member_id: int) -> None:
    found = await session.execute(
        select(Member.id).where(
            Member.id == member_id, scope_filter(principal, Member.owner_user_id, Member.org_unit_id)
        )
    )
    if found.first() is None:
        raise MemberNotFound(f"member {member_id} not found")


async def add_record(
    session: AsyncSession, principal: Principal, data: CommunicationIn, *, replace_for_call: bool = False
) -> int:
    """Add a record. With `replace_for_call`, the principal's own record of the same call is updated
    instead (a wrap-up saved twice, e.g. after a network retry, leaves one record)."""
    check_writable(principal, "communication", ["summary"])
    await _member_in_scope(session, principal, data.member_id)
    if replace_for_call and data.call_id:
        existing = (
            await session.execute(
                select(CommunicationRecord).where(
                    CommunicationRecord.call_id == data.call_id,
                    CommunicationRecord.agent_user_id == (principal.user_id or None),
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            for name in ("member_id", "direction", "category", "urgency", "status", "summary", "contact_name"):
                setattr(existing, name, getattr(data, name))
            existing.phone_e164 = data.phone
            await session.flush()
            return existing.id
    record = CommunicationRecord(
        member_id=data.member_id,
        direction=data.direction,
        category=data.category,
        urgency=data.urgency,
        status=data.status,
        summary=data.summary,
        contact_name=data.contact_name,
        phone_e164=data.phone,
        call_id=data.call_id,
        agent_user_id=principal.user_id or None,
    )
    session.add(record)
    await session.flush()
    return record.id


async def set_status(session: AsyncSession, principal: Principal, record_id: int, status: str) -> None:
    record = await session.get(CommunicationRecord, record_id, with_for_update=True)
    if record is None:
        raise MemberNotFound(f"communication record {record_id} not found")
    await _member_in_scope(session, principal, record.member_id)
    if status not in _STATUS_FLOW.get(record.status, set()):
        raise InvalidRecordTransition(f"record {record_id}: {record.status} → {status} is not allowed")
    record.status = status
    record.updated_at = utcnow()
    await session.flush()


def record_fields(record: CommunicationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "member_id": record.member_id,
        "direction": record.direction,
        "category": record.category,
        "urgency": record.urgency,
        "status": record.status,
        "summary": record.summary,
        "contact_name": record.contact_name,
        "phone": record.phone_e164,
        "call_id": record.call_id,
        "agent_user_id": record.agent_user_id,
        "created_at": record.created_at.isoformat(),
    }


async def records_for_member(
    session: AsyncSession, principal: Principal, member_id: int, limit: int = 50
) -> list[dict[str, Any]]:
    await _member_in_scope(session, principal, member_id)
    rows = await session.execute(
        select(CommunicationRecord)
        .where(CommunicationRecord.member_id == member_id)
        .order_by(CommunicationRecord.created_at.desc(), CommunicationRecord.id.desc())
        .limit(limit)
    )
    return [apply_field_policy(principal, "communication", record_fields(r)) for r in rows.scalars()]


async def not_contacted_since(
    session: AsyncSession,
    principal: Principal,
    days: int,
    *,
    now: dt.datetime | None = None,
    after_member_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Active members with no communication record in the last `days` days (seed 001: 三天未回访客户).

    Keyset-paginated by member id so it stays fast on millions of members.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    recent = exists().where(and_(CommunicationRecord.member_id == Member.id, CommunicationRecord.created_at >= cutoff))
    rows = await session.execute(
        select(Member.id, Member.member_no, Member.name, Member.mobile_e164)
        .where(
            Member.status == "active",
            Member.id > after_member_id,
            ~recent,
            scope_filter(principal, Member.owner_user_id, Member.org_unit_id),
        )
        .order_by(Member.id)
        .limit(limit)
    )
    return [
        apply_field_policy(principal, "member", {"id": i, "member_no": no, "name": name, "mobile": mobile})
        for i, no, name, mobile in rows
    ]
