"""`cti import requests FILE --as USER`: service requests from CSV (UTF-8 / GBK) or XLSX.

Columns by header, Chinese or English: 类型 type (咨询/投诉/报修/建议/回访 or the English codes), 主题
subject, 描述 description, 联系电话 phone, 会员号 member_no, 队列 team (an org-unit code), 优先级 priority
(低/中/高/紧急 or codes; empty: from the type and the member's tier), 请求时间 created_at (local time;
empty: now), 编号 no (the request number from the old system; kept, and a number that already exists
is skipped as imported before, so a file can be imported twice).

All or nothing: every row is checked first; if any row is wrong, nothing is imported and the report
lists each bad row with its reason (a half-imported ticket backlog is worse than none). Rows are
created as USER, inside USER's data scope, with their history and SLA status like any other request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select

from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.importers.tabular import open_table
from crm_core.members.models import Member
from crm_core.security.models import OrgUnit
from crm_core.security.service import principal_by_username
from crm_core.service import service
from crm_core.service.errors import ServiceError
from crm_core.service.models import ServiceRequest
from crm_core.service.schemas import RequestIn
from crm_core.settings import Settings

HEADERS = {
    "类型": "type", "type": "type", "主题": "subject", "subject": "subject", "描述": "description",
    "description": "description", "联系电话": "phone", "电话": "phone", "phone": "phone", "会员号": "member_no",
    "member_no": "member_no", "队列": "team", "负责部门": "team", "team": "team", "优先级": "priority",
    "priority": "priority", "请求时间": "created_at", "created_at": "created_at", "编号": "no", "no": "no",
}  # fmt: skip
TYPES = {"咨询": "enquiry", "投诉": "complaint", "报修": "repair", "建议": "suggestion", "回访": "return_visit"}
PRIORITIES = {"低": "low", "中": "normal", "高": "high", "紧急": "urgent"}


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        head = f"{self.rows} rows: {self.imported} imported, {self.skipped} already imported"
        if not self.errors:
            return head
        lines = [f"{head}; {len(self.errors)} bad rows, so nothing was imported:"]
        return "\n".join(lines + [f"  row {row}: {reason}" for row, reason in self.errors])


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


async def import_requests_file(settings: Settings, path: Path, *, username: str) -> ImportReport:
    table = await asyncio.to_thread(open_table, path)
    try:
        columns = {i: HEADERS.get(_cell(h).lower(), HEADERS.get(_cell(h))) for i, h in enumerate(table.header)}
        rows = await asyncio.to_thread(table.read_batch, 1_000_000)
    finally:
        table.close()
    engine = make_engine(settings.database_url)
    report = ImportReport(rows=len(rows))
    zone = ZoneInfo(settings.timezone)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            who = await principal_by_username(session, username)
            planned: list[tuple[int, RequestIn, str | None, dt.datetime | None]] = []
            for number, cells in rows:
                record = {name: _cell(cells[i]) for i, name in columns.items() if name and i < len(cells)}
                try:
                    planned.append((number, *await _parse(session, record, zone)))
                except (ValueError, ValidationError) as exc:
                    report.errors.append((number, str(exc).splitlines()[0]))
            if report.errors:
                return report
            for number, data, no, created_at in planned:
                if no and (await session.execute(select(ServiceRequest.id).where(ServiceRequest.no == no))).first():
                    report.skipped += 1
                    continue
                try:
                    async with session.begin_nested():
                        request = await service.create_request(session, who, data, now=created_at)
                        if no:
                            request.no = no
                            await session.flush()
                except ServiceError as exc:
                    report.errors.append((number, str(exc)))
            if report.errors:
                raise _Rollback
            report.imported = len(planned) - report.skipped
    except _Rollback:
        report.imported = 0
    finally:
        await engine.dispose()
    return report


class _Rollback(Exception):
    """Leaves the unit of work without committing: some row was refused while creating."""


async def _parse(
    session: Any, record: dict[str, str], zone: ZoneInfo
) -> tuple[RequestIn, str | None, dt.datetime | None]:
    kind = TYPES.get(record.get("type", ""), record.get("type", ""))
    priority = PRIORITIES.get(record.get("priority", ""), record.get("priority", "")) or None
    member_id = None
    if record.get("member_no"):
        member_id = (
            await session.execute(select(Member.id).where(Member.member_no == record["member_no"]))
        ).scalar_one_or_none()
        if member_id is None:
            raise ValueError(f"no member {record['member_no']}")
    team_id = None
    if record.get("team"):
        team_id = (await session.execute(select(OrgUnit.id).where(OrgUnit.code == record["team"]))).scalar_one_or_none()
        if team_id is None:
            raise ValueError(f"no team {record['team']}")
    created_at = None
    if record.get("created_at"):
        try:
            parsed = dt.datetime.fromisoformat(record["created_at"])
        except ValueError:
            raise ValueError(f"not a time: {record['created_at']!r}") from None
        created_at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(dt.UTC)
    data = RequestIn.model_validate(
        {
            "type": kind,
            "subject": record.get("subject", ""),
            "description": record.get("description", ""),
            "phone": record.get("phone") or None,
            "member_id": member_id,
            "team_id": team_id,
            "priority": priority,
        }
    )
    no = record.get("no") or None
    if no is not None and len(no) > 24:
        raise ValueError(f"the request number {no!r} is longer than 24 characters")
    return data, no, created_at
