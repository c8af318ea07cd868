"""Demo content for the service desk: knowledge-base articles (published by a second person), message
templates (the seeds' 006 满意度调查 and a 新年问候) and a few service requests on demo members, so the
panel's search, queue and SLA columns show something on first start. Idempotent: it adds nothing
once the knowledge base has a category."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction, utcnow
from crm_core.kb import service as kb
from crm_core.kb.models import KbCategory
from crm_core.members.models import Member
from crm_core.messaging import service as messaging
from crm_core.security.models import OrgUnit
from crm_core.security.policy import Principal
from crm_core.security.service import principal_by_username
from crm_core.service import service
from crm_core.service.models import RequestType
from crm_core.service.schemas import RequestIn

ARTICLES = (
    (
        "积分规则",
        "积分规则与有效期",
        "会员每消费100元累积2积分。积分有效期为一年：每年12月31日清零11月30日前累积的积分，12月的积分结转到下一年。退货时扣回该笔消费所得积分。",
    ),
    (
        "积分规则",
        "积分兑换与审批",
        "积分可兑换礼品或联盟商户代金券。单次兑换超过1000积分需第二人审批；代金券核销一次有效。",
    ),
    ("会员卡", "会员卡挂失补办", "会员卡遗失请携带身份证到门店办理挂失补办，补办后原卡积分自动转入新卡。"),
    ("常见故障诊断", "POS机E203错误", "收银台POS机提示E203错误时，请先重启设备，再检查网络连接；仍无法解决请报修。"),
)
REQUESTS = (
    ("complaint", "积分未到账", "会员反映上周消费的积分没有到账。"),
    ("enquiry", "咨询积分有效期", "会员询问年底清零的规则。"),
    ("repair", "POS机E203错误", "门店收银台POS机报E203错误。"),
)


async def seed_service_desk(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Add the demo content unless a knowledge base exists; True when it was added."""
    async with transaction(sessions) as session:
        if (await session.execute(select(func.count()).select_from(KbCategory))).scalar_one():
            return False
        staff = await principal_by_username(session, "staff1")
        supervisor = await principal_by_username(session, "supervisor1")
        await _knowledge_base(session, staff, supervisor)
        await messaging.save_template(
            session,
            staff,
            code="006",
            name="满意度调查",
            channel="email",
            kind="service",
            subject="满意度调查",
            body="(!Name)您好，感谢您致电会员服务中心，请对本次服务进行评价。",
        )
        await messaging.save_template(
            session,
            staff,
            code="S001",
            name="新年问候",
            channel="sms",
            kind="marketing",
            subject="",
            body="{!Member.Salutation}，新年快乐！您当前可用积分 {!Points.Valid} 分。",
        )
        members = list((await session.execute(select(Member.id).order_by(Member.id).limit(len(REQUESTS)))).scalars())
        team = (await session.execute(select(OrgUnit.id).where(OrgUnit.code == "310"))).scalar_one()  # agent1's
        opened = utcnow() - dt.timedelta(hours=3)  # some are past their first-response time already
        for member_id, (kind, subject, text) in zip(members, REQUESTS, strict=False):
            data = RequestIn(
                type=RequestType(kind), subject=subject, description=text, member_id=member_id, team_id=team
            )
            await service.create_request(session, supervisor, data, now=opened)  # scope: every member
    return True


async def _knowledge_base(session: AsyncSession, staff: Principal, supervisor: Principal) -> None:
    categories: dict[str, int] = {}
    for category, title, body in ARTICLES:
        if category not in categories:
            categories[category] = (await kb.add_category(session, staff, category)).id
        article = await kb.create_article(session, staff, category_id=categories[category], title=title, body=body)
        await kb.submit(session, staff, article.id)
        await kb.review(session, supervisor, article.id, approve=True)
