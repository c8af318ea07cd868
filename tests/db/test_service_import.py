"""`cti import requests` on both engines: Chinese headers and values, all rows or none with each bad
row reported, the old system's request numbers kept and skipped on a second import."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.security.policy import Role
from crm_core.service.importer import import_requests_file
from crm_core.service.models import ServiceRequest
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]
HEADER = "编号,类型,主题,描述,联系电话,会员号,队列,优先级,请求时间\n"


async def count(sessions: Sessions) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(ServiceRequest))).scalar_one())


async def test_all_rows_or_none_and_a_second_import_skips(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    await factories.org_tree(sessions)
    importer = await factories.principal(sessions, "importer", Role.CRM_STAFF, "300")
    member = await factories.member(sessions, settings, importer, name="王芳", mobile="13800138001")
    async with sessions() as session:
        from crm_core.members.models import Member

        member_no = (await session.execute(select(Member.member_no).where(Member.id == member.member_id))).scalar_one()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + f"OLD-001,投诉,积分未到账,上周消费未积分,13800138001,{member_no},310,,2025-10-09 09:00\n"
        + "OLD-002,表扬,好评,,,,310,,\n"  # unknown type
        + "OLD-003,报修,POS机E203,,,M99999999,310,,\n"  # unknown member
        + "OLD-004,咨询,积分有效期,,,,999,,\n",  # unknown team
        encoding="utf-8",
    )
    report = await import_requests_file(settings, bad, username="importer")
    assert [row for row, _ in report.errors] == [3, 4, 5] and report.imported == 0
    assert "M99999999" in report.errors[1][1] and "999" in report.errors[2][1]
    assert await count(sessions) == 0

    good = tmp_path / "good.csv"
    good.write_text(
        HEADER
        + f"OLD-001,投诉,积分未到账,上周消费未积分,13800138001,{member_no},310,,2025-10-09 09:00\n"
        + "OLD-002,报修,POS机E203,门店收银台,,,320,紧急,\n",
        encoding="gbk",
    )
    first = await import_requests_file(settings, good, username="importer")
    assert (first.imported, first.skipped, first.errors) == (2, 0, [])
    again = await import_requests_file(settings, good, username="importer")
    assert (again.imported, again.skipped) == (0, 2)
    async with sessions() as session:
        rows = {r.no: r for r in (await session.execute(select(ServiceRequest))).scalars()}
    assert set(rows) == {"OLD-001", "OLD-002"}
    assert rows["OLD-001"].member_id == member.member_id and rows["OLD-001"].type == "complaint"
    assert rows["OLD-001"].created_at.isoformat().startswith("2025-10-09T01:00")  # 09:00 Shanghai
    assert rows["OLD-002"].priority == "urgent" and rows["OLD-002"].type == "repair"
