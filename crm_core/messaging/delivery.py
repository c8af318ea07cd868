"""Sending the outbox: e-mail over SMTP (aiosmtplib), SMS through a provider interface.

A worker claims due messages with a conditional UPDATE (queued → sending), so two servers never
send one message twice; a failure puts it back with exponential backoff until the attempts run out
(then `failed` with the error). A message sent to a member becomes a communication record (交流记录,
outgoing), so the member's 360 shows it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.comms.models import CommunicationRecord
from crm_core.db import utcnow
from crm_core.messaging.models import Message

log = logging.getLogger(__name__)
SEND_LEASE = dt.timedelta(minutes=10)  # a message `sending` longer than this is sent again


class SmsProvider(Protocol):
    async def send(self, phone_e164: str, text: str) -> str:
        """Hand the text to the carrier; returns the provider's message id (raises on refusal)."""
        ...


class OutboxSmsProvider:
    """The default: SMS needs an outside provider (seed 004), so the message stays in the outbox,
    `sent` meaning accepted here; a real provider's delivery report calls `delivery_report`."""

    async def send(self, phone_e164: str, text: str) -> str:
        return f"outbox-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    username: str = ""
    password: str = ""
    security: str = "starttls"  # none | starttls | tls
    sender: str = "member-cti <noreply@localhost>"
    timeout: float = 15.0


async def send_email(smtp: SmtpSettings, to: str, subject: str, body: str) -> str:
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = to
    message["Subject"] = subject  # non-ASCII is encoded (RFC 2047) by the email package
    message_id = f"<{uuid.uuid4().hex}@member-cti>"
    message["Message-ID"] = message_id
    message.set_content(body, charset="utf-8")
    await aiosmtplib.send(
        message,
        hostname=smtp.host,
        port=smtp.port,
        username=smtp.username or None,
        password=smtp.password or None,
        use_tls=smtp.security == "tls",
        start_tls=smtp.security == "starttls",
        timeout=smtp.timeout,
    )
    return message_id


@dataclass
class Deliverer:
    sessions: async_sessionmaker[AsyncSession]
    smtp: SmtpSettings
    sms: SmsProvider
    max_attempts: int = 5
    retry_seconds: float = 30.0

    async def run_once(self, *, now: dt.datetime | None = None, limit: int = 50) -> int:
        """Send what is due; returns how many messages were attempted. A message left `sending` past
        its lease (the server died mid-send) is queued again: delivery is at least once, so after
        such a crash a member may get one message twice, but never none."""
        now = now or utcnow()
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.state == "sending", Message.next_attempt_at < now)
                .values(state="queued")
                .execution_options(synchronize_session=False)
            )
        async with self.sessions() as session:
            due = list(
                (
                    await session.execute(
                        select(Message.id)
                        .where(Message.state == "queued", Message.next_attempt_at <= now)
                        .order_by(Message.next_attempt_at, Message.id)
                        .limit(limit)
                    )
                ).scalars()
            )
        attempted = 0
        for message_id in due:
            if await self._claim(message_id):
                attempted += 1
                await self._deliver(message_id)
        return attempted

    async def _claim(self, message_id: int) -> bool:
        async with self.sessions() as session, session.begin():
            claimed = await session.execute(
                update(Message)
                .where(Message.id == message_id, Message.state == "queued")
                .values(state="sending", attempts=Message.attempts + 1, next_attempt_at=utcnow() + SEND_LEASE)
                .execution_options(synchronize_session=False)
            )
            return bool(claimed.rowcount)  # type: ignore[attr-defined]

    async def _deliver(self, message_id: int) -> None:
        async with self.sessions() as session:
            message = (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()
            channel, recipient, subject, body, attempts = (
                message.channel,
                message.recipient,
                message.subject,
                message.body,
                message.attempts,
            )
        try:
            if channel == "email":
                provider_id = await send_email(self.smtp, recipient, subject, body)
            else:
                provider_id = await self.sms.send(recipient, body)
        except Exception as exc:  # any provider failure retries; none may leave the message stuck
            await self._failed(message_id, attempts, f"{type(exc).__name__}: {exc}"[:500])
            return
        async with self.sessions() as session, session.begin():
            message = (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()
            message.state, message.provider_id, message.sent_at, message.last_error = (
                "sent",
                provider_id,
                utcnow(),
                None,
            )
            if message.member_id is not None:
                session.add(
                    CommunicationRecord(
                        member_id=message.member_id,
                        direction="out",
                        category="other",
                        status="done",
                        summary=f"[{'短信' if channel == 'sms' else '邮件'}] {subject or body[:60]}",
                        agent_user_id=message.created_by_user_id,
                    )
                )

    async def _failed(self, message_id: int, attempts: int, error: str) -> None:
        final = attempts >= self.max_attempts
        delay = dt.timedelta(seconds=self.retry_seconds * 2 ** (attempts - 1))
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(
                    state="failed" if final else "queued",
                    last_error=error,
                    next_attempt_at=utcnow() + delay,
                )
                .execution_options(synchronize_session=False)
            )
        log.warning("message %s attempt %d failed%s: %s", message_id, attempts, " (giving up)" if final else "", error)


async def delivery_report(session: AsyncSession, provider_id: str, delivered: bool) -> bool:
    """An SMS provider's report: sent → delivered | undelivered. False for an unknown id."""
    result = await session.execute(
        update(Message)
        .where(Message.provider_id == provider_id, Message.channel == "sms", Message.state == "sent")
        .values(state="delivered" if delivered else "undelivered")
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
