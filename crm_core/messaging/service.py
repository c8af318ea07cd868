"""Previewing and sending templated messages to members.

Merge values come from what the sender may see: the member inside their data scope, each field
through their field permissions (a hidden or masked field is missing, see render.py), points from
the ledger, a service request they can see. Opt-outs: a member's marketing opt-out stops marketing
messages on that channel; an opt-out of scope "all" stops service messages too. Either way the
message is recorded as `skipped` with the reason, so the send log shows why nothing went out.
Sending is idempotent by key: a retried request returns the message queued the first time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import insert_for, utcnow
from crm_core.loyalty.models import PointsAccount
from crm_core.members.errors import MemberNotFound
from crm_core.members.service import load_member
from crm_core.messaging import render
from crm_core.messaging.models import Message, MessageTemplate, OptOut
from crm_core.security.policy import Level, Principal, Role
from crm_core.service.errors import RequestNotFound
from crm_core.service.service import request_detail

TEMPLATE_EDITORS = frozenset({Role.CRM_STAFF, Role.ADMIN})
TIER_NAMES = {"standard": "普通会员", "gold": "金卡会员", "diamond": "钻石卡会员"}


class MessagingError(Exception):
    status = 400


class MissingFields(MessagingError):
    status = 422

    def __init__(self, missing: tuple[str, ...]) -> None:
        super().__init__("missing merge fields: " + ", ".join(missing))
        self.missing = missing


class NotAllowed(MessagingError):
    status = 403


@dataclass(frozen=True, slots=True)
class Preview:
    template_id: int
    channel: str
    recipient: str | None
    subject: str
    body: str
    missing: tuple[str, ...]
    opted_out: str | None  # why it would be skipped


async def save_template(
    session: AsyncSession,
    principal: Principal,
    *,
    code: str,
    name: str,
    channel: str,
    kind: str,
    subject: str,
    body: str,
    active: bool = True,
) -> MessageTemplate:
    if principal.role not in TEMPLATE_EDITORS:
        raise NotAllowed("only CRM staff and administrators edit templates")
    if channel not in ("sms", "email") or kind not in ("service", "marketing"):
        raise MessagingError("channel is sms or email; kind is service or marketing")
    if channel == "email" and not subject:
        raise MessagingError("an e-mail template needs a subject")
    template = (await session.execute(select(MessageTemplate).where(MessageTemplate.code == code))).scalar_one_or_none()
    if template is None:
        template = MessageTemplate(code=code, name=name, channel=channel, kind=kind, subject=subject, body=body)
        session.add(template)
    template.name, template.channel, template.kind = name, channel, kind
    template.subject, template.body, template.active = subject, body, active
    template.updated_by_user_id, template.updated_at = principal.user_id or None, utcnow()
    await session.flush()
    return template


def _visible(principal: Principal, entity: str, field: str, value: Any) -> str | None:
    if value is None or principal.level(entity, field) <= Level.MASKED:
        return None
    return str(value)


async def merge_values(
    session: AsyncSession, principal: Principal, member_id: int, request_id: int | None, timezone: str
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(merge values, recipients by channel); raises MemberNotFound outside the sender's scope."""
    member = await load_member(session, principal, member_id)
    zone = ZoneInfo(timezone)
    points = (await session.execute(select(PointsAccount.valid).where(PointsAccount.member_id == member_id))).scalar()
    values: dict[str, str | None] = {
        "Member.Name": _visible(principal, "member", "name", member.name),
        "Member.No": member.member_no,
        "Member.Tier": TIER_NAMES.get(member.member_type or "", member.member_type),
        "Member.Salutation": _visible(principal, "member", "name", member.name),
        "Points.Valid": _visible(principal, "points", "valid", f"{int(points or 0):,}"),
        "Today.Date": utcnow().astimezone(zone).strftime("%Y-%m-%d"),
    }
    if request_id is not None:
        try:
            request = await request_detail(session, principal, request_id)
        except RequestNotFound:
            raise MessagingError(f"no service request {request_id}") from None
        if request["member_id"] != member_id:
            raise MessagingError("the service request is not this member's")
        due = (request.get("sla") or {}).get("resolution_due_at")
        values |= {
            "Request.No": request["no"],
            "Request.Subject": request["subject"],
            "Request.DueAt": dt.datetime.fromisoformat(due).astimezone(zone).strftime("%Y-%m-%d %H:%M")
            if due
            else None,
        }
    recipients = {
        "sms": _visible(principal, "member", "mobile", member.mobile_e164),
        "email": _visible(principal, "member", "email", member.email),
    }
    return values, recipients


async def _template(session: AsyncSession, template_id: int) -> MessageTemplate:
    template = await session.get(MessageTemplate, template_id)
    if template is None or not template.active:
        raise MessagingError(f"no active template {template_id}")
    return template


async def _opt_out(session: AsyncSession, member_id: int, channel: str, kind: str) -> str | None:
    scope = (
        await session.execute(select(OptOut.scope).where(OptOut.member_id == member_id, OptOut.channel == channel))
    ).scalar_one_or_none()
    if scope is None or (scope == "marketing" and kind == "service"):
        return None
    return f"member opted out of {'all' if scope == 'all' else 'marketing'} {channel} messages"


async def preview(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    member_id: int,
    *,
    request_id: int | None = None,
    timezone: str = "Asia/Shanghai",
) -> Preview:
    template = await _template(session, template_id)
    values, recipients = await merge_values(session, principal, member_id, request_id, timezone)
    rendered = render.render(template.subject, template.body, values)
    recipient = recipients[template.channel]
    missing = rendered.missing + (
        () if recipient else (f"Member.{'Mobile' if template.channel == 'sms' else 'Email'}",)
    )
    return Preview(
        template.id,
        template.channel,
        recipient,
        rendered.subject,
        rendered.body,
        missing,
        await _opt_out(session, member_id, template.channel, template.kind),
    )


async def send(
    session: AsyncSession,
    principal: Principal,
    template_id: int,
    member_id: int,
    *,
    idempotency_key: str,
    request_id: int | None = None,
    timezone: str = "Asia/Shanghai",
) -> Message:
    """Queue one message (or record it skipped); the same key returns the first message."""
    existing = (
        await session.execute(select(Message).where(Message.idempotency_key == idempotency_key))
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    try:
        shown = await preview(session, principal, template_id, member_id, request_id=request_id, timezone=timezone)
    except MemberNotFound:
        raise MessagingError(f"no member {member_id}") from None
    if shown.missing:
        raise MissingFields(shown.missing)
    template = await _template(session, template_id)
    stmt = (
        insert_for(session, Message.__table__)
        .values(
            idempotency_key=idempotency_key,
            template_id=template.id,
            member_id=member_id,
            request_id=request_id,
            channel=template.channel,
            kind=template.kind,
            recipient=shown.recipient or "",
            subject=shown.subject,
            body=shown.body,
            state="skipped" if shown.opted_out else "queued",
            last_error=shown.opted_out,
            created_by_user_id=principal.user_id or None,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
    await session.execute(stmt)
    return (await session.execute(select(Message).where(Message.idempotency_key == idempotency_key))).scalar_one()


async def set_opt_out(
    session: AsyncSession, principal: Principal, member_id: int, channel: str, scope: str | None, reason: str = ""
) -> None:
    """Record (scope marketing | all) or lift (None) a member's opt-out of a channel."""
    await load_member(session, principal, member_id)
    if channel not in ("sms", "email") or scope not in (None, "marketing", "all"):
        raise MessagingError("channel is sms or email; scope is marketing or all")
    existing = (
        await session.execute(select(OptOut).where(OptOut.member_id == member_id, OptOut.channel == channel))
    ).scalar_one_or_none()
    if scope is None:
        if existing is not None:
            await session.delete(existing)
    elif existing is None:
        session.add(OptOut(member_id=member_id, channel=channel, scope=scope, reason=reason))
    else:
        existing.scope, existing.reason = scope, reason
    await session.flush()


def message_fields(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "member_id": m.member_id,
        "channel": m.channel,
        "kind": m.kind,
        "recipient": m.recipient,
        "subject": m.subject,
        "body": m.body,
        "state": m.state,
        "attempts": m.attempts,
        "last_error": m.last_error,
        "created_at": m.created_at.isoformat(),
        "sent_at": m.sent_at.isoformat() if m.sent_at else None,
    }
