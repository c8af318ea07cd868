"""Messages in the panel: templates (CRM staff and admins edit), preview and send to a member, the
send log (短信/邮件发送日志), opt-outs, and the delivery loop that empties the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from agent_panel.auth import ALL_ROLES, allow, session_of
from agent_panel.keys import SESSIONS, SETTINGS
from agent_panel.payloads import Strict, parse_body
from agent_panel.problems import problem, refused
from agent_panel.render import render
from crm_core.db import read_session, transaction
from crm_core.members.errors import MemberNotFound
from crm_core.messaging import delivery
from crm_core.messaging import service as messaging
from crm_core.messaging.models import Message, MessageTemplate
from crm_core.security.policy import Role

log = logging.getLogger(__name__)
LOG_READERS = (Role.SUPERVISOR, Role.CRM_STAFF, Role.ADMIN)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/messages/templates", templates_api)
    r.add_post("/api/v1/messages/templates", template_save_api)
    r.add_post("/api/v1/messages/preview", preview_api)
    r.add_post("/api/v1/messages/send", send_api)
    r.add_get("/api/v1/messages", log_api)
    r.add_post("/api/v1/members/{member_id:\\d+}/opt-out", opt_out_api)
    r.add_get("/messages", messages_page)
    app.cleanup_ctx.append(_delivery_loop)


class TemplateIn(Strict):
    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=100)
    channel: Literal["sms", "email"]
    kind: Literal["service", "marketing"] = "service"
    subject: str = Field(default="", max_length=200)
    body: str = Field(min_length=1, max_length=10_000)
    active: bool = True


class PreviewIn(Strict):
    template_id: int
    member_id: int
    request_id: int | None = None


class SendIn(PreviewIn):
    idempotency_key: str = Field(min_length=8, max_length=64)


class OptOutIn(Strict):
    channel: Literal["sms", "email"]
    scope: Literal["marketing", "all"] | None
    reason: str = Field(default="", max_length=200)


def _refusal(exc: Exception) -> web.Response:
    if isinstance(exc, messaging.MissingFields):
        return problem(422, "missing merge fields", str(exc), errors=list(exc.missing))
    if isinstance(exc, messaging.MessagingError):
        return refused(exc.status, str(exc))
    return refused(404, str(exc))


@allow(*ALL_ROLES)
async def templates_api(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        rows = (await session.execute(select(MessageTemplate).order_by(MessageTemplate.code))).scalars()
        body = [
            {
                "id": t.id,
                "code": t.code,
                "name": t.name,
                "channel": t.channel,
                "kind": t.kind,
                "subject": t.subject,
                "body": t.body,
                "active": t.active,
            }
            for t in rows
        ]
    return web.json_response({"templates": body})


@allow(*ALL_ROLES)
async def template_save_api(request: web.Request) -> web.Response:
    data = await parse_body(request, TemplateIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            template = await messaging.save_template(session, session_of(request).principal, **data.model_dump())
            body = {"id": template.id, "code": template.code}
    except messaging.MessagingError as exc:
        return _refusal(exc)
    return web.json_response(body, status=201)


@allow(*ALL_ROLES)
async def preview_api(request: web.Request) -> web.Response:
    """What the member would get, with the fields that are missing (then sending is refused)."""
    data = await parse_body(request, PreviewIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with read_session(request.app[SESSIONS]) as session:
            shown = await messaging.preview(
                session,
                session_of(request).principal,
                data.template_id,
                data.member_id,
                request_id=data.request_id,
                timezone=request.app[SETTINGS].timezone,
            )
    except (messaging.MessagingError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(
        {
            "channel": shown.channel,
            "recipient": shown.recipient,
            "subject": shown.subject,
            "body": shown.body,
            "missing": list(shown.missing),
            "opted_out": shown.opted_out,
        }
    )


@allow(*ALL_ROLES)
async def send_api(request: web.Request) -> web.Response:
    data = await parse_body(request, SendIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            message = await messaging.send(
                session,
                session_of(request).principal,
                data.template_id,
                data.member_id,
                idempotency_key=data.idempotency_key,
                request_id=data.request_id,
                timezone=request.app[SETTINGS].timezone,
            )
            body = messaging.message_fields(message)
    except (messaging.MessagingError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(body, status=202 if body["state"] == "queued" else 200)


@allow(*ALL_ROLES)
async def log_api(request: web.Request) -> web.Response:
    """The send log: supervisors, CRM staff and admins see all; agents what they sent."""
    principal = session_of(request).principal
    stmt = select(Message).order_by(Message.created_at.desc(), Message.id.desc()).limit(200)
    if principal.role not in LOG_READERS:
        stmt = stmt.where(Message.created_by_user_id == principal.user_id)
    if (member := request.query.get("member", "")).isdigit():
        stmt = stmt.where(Message.member_id == int(member))
    async with read_session(request.app[SESSIONS]) as session:
        rows = [messaging.message_fields(m) for m in (await session.execute(stmt)).scalars()]
    return web.json_response({"messages": rows})


@allow(*ALL_ROLES)
async def opt_out_api(request: web.Request) -> web.Response:
    data = await parse_body(request, OptOutIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            await messaging.set_opt_out(
                session,
                session_of(request).principal,
                int(request.match_info["member_id"]),
                data.channel,
                data.scope,
                data.reason,
            )
    except (messaging.MessagingError, MemberNotFound) as exc:
        return _refusal(exc)
    return web.json_response(data.model_dump())


@allow(*ALL_ROLES)
async def messages_page(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    async with read_session(request.app[SESSIONS]) as session:
        templates = (await session.execute(select(MessageTemplate).order_by(MessageTemplate.code))).scalars().all()
        stmt = select(Message).order_by(Message.created_at.desc(), Message.id.desc()).limit(100)
        if principal.role not in LOG_READERS:
            stmt = stmt.where(Message.created_by_user_id == principal.user_id)
        sent = (await session.execute(stmt)).scalars().all()
    return render(
        request,
        "messages.html",
        {"templates": templates, "sent": sent, "editor": principal.role in messaging.TEMPLATE_EDITORS},
    )


async def _delivery_loop(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    deliverer = delivery.Deliverer(
        app[SESSIONS],
        delivery.SmtpSettings(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_user,
            settings.smtp_password,
            settings.smtp_security,
            settings.mail_from,
        ),
        delivery.OutboxSmsProvider(),
        max_attempts=settings.message_max_attempts,
        retry_seconds=settings.message_retry_seconds,
    )

    async def loop() -> None:
        while True:
            try:
                await deliverer.run_once()
            except Exception:  # a dropped database must not stop deliveries for good
                log.exception("message delivery pass failed")
            await asyncio.sleep(5)

    task = asyncio.create_task(loop(), name="message-delivery")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
