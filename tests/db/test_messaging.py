"""Templates and delivery on both engines, with a real SMTP server (aiosmtpd) receiving the mail:
merge fields incl. the seeds' forms, a missing field reported and nothing sent, masking by the
sender's permissions, opt-outs, idempotent sending, a 4xx from the server retried, SMS outbox and
delivery reports, and the communication record of each sent message."""

from __future__ import annotations

import datetime as dt
import email
import socket
from collections.abc import Iterator
from email.header import decode_header, make_header
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.comms.models import CommunicationRecord
from crm_core.db import transaction, utcnow
from crm_core.loyalty import ledger
from crm_core.messaging import delivery, render
from crm_core.messaging import service as messaging
from crm_core.messaging.models import Message
from crm_core.security.policy import Level, Principal, Role
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]


class Inbox:
    """An aiosmtpd handler that keeps what it receives and can refuse the next N messages (451)."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.refuse_next = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_next:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, delivery.SmtpSettings]]:
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd's controller needs the port before it starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield (
            inbox,
            delivery.SmtpSettings(
                host="127.0.0.1", port=controller.port, security="none", sender="会员中心 <crm@example.com>"
            ),
        )
    finally:
        controller.stop()


async def staff(sessions: Sessions) -> Principal:
    await factories.org_tree(sessions)
    return await factories.principal(sessions, "staff", Role.CRM_STAFF, "300")


def test_merge_fields_render_and_report_missing() -> None:
    done = render.render(
        "{!Request.No} 处理进度",
        "(!Name)您好，您的积分 {!Points.Valid} 分。",
        {"Member.Name": "王芳", "Points.Valid": "1,200", "Request.No": "SR1"},
    )
    assert (done.subject, done.body, done.missing) == ("SR1 处理进度", "王芳您好，您的积分 1,200 分。", ())
    missing = render.render(
        "", "尊敬的{!Contact.Salutation}，{!Member.Tier}", {"Member.Tier": "金卡会员", "Contact.Salutation": ""}
    )
    assert missing.missing == ("Contact.Salutation",) and "{!Contact.Salutation}" in missing.body


async def test_email_reaches_a_real_smtp_server_after_a_retry(
    sessions: Sessions, settings: Settings, smtp: tuple[Inbox, delivery.SmtpSettings]
) -> None:
    inbox, smtp_settings = smtp
    who = await staff(sessions)
    joined = await factories.member(
        sessions, settings, who, name="王芳", mobile="13800138001", email="wangfang@example.com"
    )
    async with transaction(sessions) as session:
        await ledger.manual_grant(session, joined.member_id, 1200, name="seed", granted_at=utcnow(), expires_at=None)
        template = await messaging.save_template(
            session,
            who,
            code="006",
            name="满意度调查",
            channel="email",
            kind="service",
            subject="{!Member.Tier}满意度调查",
            body="(!Name)您好，您当前可用积分 {!Points.Valid} 分。",
        )
    async with transaction(sessions) as session:
        shown = await messaging.preview(session, who, template.id, joined.member_id)
        assert shown.missing == () and shown.body == "王芳您好，您当前可用积分 1,200 分。"
        first = await messaging.send(session, who, template.id, joined.member_id, idempotency_key="k-1")
        again = await messaging.send(session, who, template.id, joined.member_id, idempotency_key="k-1")
    assert first.id == again.id and first.state == "queued"

    inbox.refuse_next = 1
    deliverer = delivery.Deliverer(
        sessions, smtp_settings, delivery.OutboxSmsProvider(), max_attempts=3, retry_seconds=60
    )
    assert await deliverer.run_once() == 1
    async with sessions() as session:
        waiting = await session.get(Message, first.id)
    assert waiting is not None and waiting.state == "queued" and "451" in (waiting.last_error or "")
    assert await deliverer.run_once() == 0  # backing off
    assert await deliverer.run_once(now=utcnow() + dt.timedelta(minutes=2)) == 1
    assert len(inbox.messages) == 1
    received = inbox.messages[0]
    assert str(make_header(decode_header(received["Subject"]))) == "普通会员满意度调查"
    assert received.get_payload(decode=True).decode("utf-8").strip() == "王芳您好，您当前可用积分 1,200 分。"
    assert received["To"] == "wangfang@example.com"
    async with sessions() as session:
        sent = await session.get(Message, first.id, populate_existing=True)
        records = (
            (
                await session.execute(
                    select(CommunicationRecord).where(CommunicationRecord.member_id == joined.member_id)
                )
            )
            .scalars()
            .all()
        )
    assert sent is not None and sent.state == "sent" and sent.attempts == 2
    assert [r.direction for r in records] == ["out"] and "满意度调查" in records[0].summary


async def test_missing_fields_masking_and_opt_outs(sessions: Sessions, settings: Settings) -> None:
    who = await staff(sessions)
    no_email = await factories.member(sessions, settings, who, name="李雷", mobile="13800138002")
    async with transaction(sessions) as session:
        mail = await messaging.save_template(
            session,
            who,
            code="M1",
            name="通知",
            channel="email",
            kind="service",
            subject="通知",
            body="{!Member.Name}，{!Request.No}",
        )
        promo = await messaging.save_template(
            session,
            who,
            code="S1",
            name="新年问候",
            channel="sms",
            kind="marketing",
            subject="",
            body="{!Member.Salutation}新年快乐",
        )
        with pytest.raises(messaging.NotAllowed):
            await messaging.save_template(
                session,
                Principal(user_id=9, username="a", role=Role.AGENT),
                code="X",
                name="x",
                channel="sms",
                kind="service",
                subject="",
                body="x",
            )
    async with transaction(sessions) as session:
        shown = await messaging.preview(session, who, mail.id, no_email.member_id)
        assert set(shown.missing) == {"Request.No", "Member.Email"}
        with pytest.raises(messaging.MissingFields):
            await messaging.send(session, who, mail.id, no_email.member_id, idempotency_key="k-2")
    # A sender whose permissions mask the name may not send it: masked is missing, never leaked.
    masked = Principal(
        user_id=who.user_id,
        username="staff",
        role=Role.CRM_STAFF,
        scope=who.scope,
        overrides={("member", "name"): Level.MASKED},
    )
    async with transaction(sessions) as session:
        assert (await messaging.preview(session, masked, promo.id, no_email.member_id)).missing == (
            "Member.Salutation",
        )
        await messaging.set_opt_out(session, who, no_email.member_id, "sms", "marketing", "客户来电要求退订")
        skipped = await messaging.send(session, who, promo.id, no_email.member_id, idempotency_key="k-3")
    assert skipped.state == "skipped" and "opted out" in (skipped.last_error or "")
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Message))).scalar_one() == 1  # k-2 wrote nothing


async def test_sms_outbox_and_delivery_report(
    sessions: Sessions, settings: Settings, smtp: tuple[Inbox, delivery.SmtpSettings]
) -> None:
    who = await staff(sessions)
    member = await factories.member(sessions, settings, who, name="韩梅梅", mobile="13800138003")
    async with transaction(sessions) as session:
        template = await messaging.save_template(
            session,
            who,
            code="S2",
            name="服务通知",
            channel="sms",
            kind="service",
            subject="",
            body="{!Member.Name}您好",
        )
        await messaging.set_opt_out(session, who, member.member_id, "sms", "marketing")  # service messages still go
        message = await messaging.send(session, who, template.id, member.member_id, idempotency_key="k-4")
    deliverer = delivery.Deliverer(sessions, smtp[1], delivery.OutboxSmsProvider())
    assert await deliverer.run_once() == 1
    async with sessions() as session:
        sent = await session.get(Message, message.id)
    assert sent is not None and sent.state == "sent" and sent.recipient == "+8613800138003" and sent.provider_id
    async with transaction(sessions) as session:
        assert await delivery.delivery_report(session, sent.provider_id, delivered=True)
        assert not await delivery.delivery_report(session, "unknown", delivered=True)
    async with sessions() as session:
        assert (await session.get(Message, message.id, populate_existing=True)).state == "delivered"  # type: ignore[union-attr]


async def test_a_message_left_sending_by_a_crash_is_sent_after_its_lease(
    sessions: Sessions, settings: Settings, smtp: tuple[Inbox, delivery.SmtpSettings]
) -> None:
    from sqlalchemy import update

    who = await staff(sessions)
    member = await factories.member(sessions, settings, who, name="周杰", mobile="13800138004")
    async with transaction(sessions) as session:
        template = await messaging.save_template(
            session, who, code="S3", name="通知", channel="sms", kind="service", subject="", body="{!Member.Name}您好"
        )
        message = await messaging.send(session, who, template.id, member.member_id, idempotency_key="k-5")
        # A worker claimed it and died before sending: `sending`, lease until +10 min.
        await session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(state="sending", attempts=1, next_attempt_at=utcnow() + delivery.SEND_LEASE)
        )
    deliverer = delivery.Deliverer(sessions, smtp[1], delivery.OutboxSmsProvider())
    assert await deliverer.run_once() == 0  # still inside its lease: maybe another worker is sending it
    assert await deliverer.run_once(now=utcnow() + delivery.SEND_LEASE + dt.timedelta(seconds=1)) == 1
    async with sessions() as session:
        sent = await session.get(Message, message.id)
    assert sent is not None and sent.state == "sent" and sent.attempts == 2
