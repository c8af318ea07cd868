"""Member export: what each user may see, masked as the field policy says, in CSV and XLSX (both engines)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.importers import export
from crm_core.importers.export import EXPORT_COLUMNS, ExportRefused, export_members
from crm_core.importers.members import import_members_file
from crm_core.members.models import Member
from crm_core.members.service import issue_card
from crm_core.security import service as security
from crm_core.security.policy import SYSTEM, DataScope, Level, Role
from crm_core.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
ID_1234 = "110105198503121234"
FORMULA_NAME = '=HYPERLINK("http://x.example")'
HEADER = ["会员姓名", "手机", "性别", "生日", "证件类型", "证件号码", "邮箱", "家庭电话", "联系人", "联系人电话",
          "省份", "城市", "区县", "详细地址", "邮编", "备注"]  # fmt: skip


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests create users but never log in: skip argon2's deliberate ~0.3 s per hash."""

    async def not_a_hash(password: str) -> str:
        return "test-only:" + password

    monkeypatch.setattr(security, "hash_password", not_a_hash)


async def populate(sessions: Sessions, settings: Settings, tmp_path: Path) -> str:
    """Four members: three owned by Beijing HQ staff (one with every kind of data and a card), one by
    Shanghai; returns the card number issued."""
    async with sessions() as session, session.begin():
        await security.add_org_unit(session, "HQ", "北京总部")
        await security.add_org_unit(session, "SH", "上海分部")
        await security.add_user(session, "admin1", "pw-admin-123456", Role.ADMIN)
        await security.add_user(session, "agent1", "pw-agent-123456", Role.AGENT)
        await security.add_user(session, "staff_hq", "pw-staff-123456", Role.CRM_STAFF, org_unit_code="HQ")
        await security.add_user(
            session, "sup_sh", "pw-sup-123456", Role.SUPERVISOR, org_unit_code="SH", data_scope=DataScope.DEPARTMENT
        )
    beijing = tmp_path / "beijing.csv"
    with beijing.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerow(
            [
                *("张伟", "13800138000", "男", "1985-03-12", "身份证", ID_1234, "zw@example.com", "010-62345678"),
                *("张丽", "13900139000", "北京市", "北京市", "朝阳区", "建国路88号", "100022", "老会员"),
            ]
        )
        writer.writerow([FORMULA_NAME, "13800138001", "女"] + [""] * 13)
        writer.writerow(["李娜", "13800138002", "女"] + [""] * 13)
    shanghai = tmp_path / "shanghai.csv"
    with shanghai.open("w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerow(["上海客户", "13800138003", "男"] + [""] * 13)
    assert (await import_members_file(settings, beijing, username="staff_hq", progress=False)).inserted == 3
    assert (await import_members_file(settings, shanghai, username="sup_sh", progress=False)).inserted == 1
    async with sessions() as session, session.begin():
        zhang = (await session.execute(select(Member.id).where(Member.mobile_e164 == "+8613800138000"))).scalar_one()
        return (await issue_card(session, SYSTEM, zhang, settings)).card_no


def read_csv(path: Path) -> list[dict[str, str]]:
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return list(csv.DictReader(stream))


def read_xlsx(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    book = openpyxl.load_workbook(path)
    sheet = book.worksheets[0]
    rows = list(sheet.iter_rows())
    header = [str(cell.value) for cell in rows[0]]
    for row in rows[1:]:
        for cell in row:
            assert cell.value is None or cell.data_type == "s"  # text cells only: no formula, no 1.1E+17
    return header, [{h: c.value for h, c in zip(header, row, strict=True)} for row in rows[1:]]


def files_named(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def by_mobile(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["mobile"]: row for row in rows}


async def test_admin_export_is_complete_and_in_clear(
    sessions: Sessions, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card_no = await populate(sessions, settings, tmp_path)
    monkeypatch.setattr(export, "PAGE_ROWS", 3)  # two pages: keyset pagination is exercised
    output = tmp_path / "out" / "members.csv"
    output.parent.mkdir()

    assert await export_members(settings, output, fmt="csv", username="admin1") == 4

    rows = read_csv(output)
    assert list(rows[0]) == [header for header, _, _ in EXPORT_COLUMNS]
    assert [row["name"] for row in rows] == ["张伟", "'" + FORMULA_NAME, "李娜", "上海客户"]  # file order, id order
    zhang = by_mobile(rows)["13800138000"]
    assert {
        k: zhang[k] for k in ("id_number", "home_phone", "contact_name", "contact_phone", "address", "card_no")
    } == {
        "id_number": ID_1234,
        "home_phone": "01062345678",
        "contact_name": "张丽",
        "contact_phone": "13900139000",
        "address": "建国路88号",
        "card_no": card_no,
    }
    assert (zhang["gender"], zhang["birthday"], zhang["member_type"], zhang["status"]) == (
        "male",
        "1985-03-12",
        "standard",
        "active",
    )
    assert by_mobile(rows)["13800138002"]["card_no"] == ""
    assert not files_named(output.parent, "*.part")


async def test_agent_export_masks_or_leaves_out_what_agents_may_not_see(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    await populate(sessions, settings, tmp_path)
    output = tmp_path / "agent.csv"

    assert await export_members(settings, output, fmt="csv", username="agent1") == 4

    zhang = by_mobile(read_csv(output))["13800138000"]  # the primary mobile stays readable for agents
    assert zhang["id_number"] == "110***********1234"
    assert zhang["home_phone"] == "010****5678"
    assert zhang["contact_phone"] == "139****9000"
    assert zhang["address"] != "建国路88号" and zhang["address"].startswith("建国") and "*" in zhang["address"]
    assert zhang["name"] == "张伟" and zhang["email"] == "zw@example.com"

    # Fields an administrator hides from agents are left out of the file, not blanked.
    async with sessions() as session, session.begin():
        await security.set_field_permission(session, Role.AGENT, "member", "birthday", Level.HIDDEN)
        await security.set_field_permission(session, Role.AGENT, "member", "id_number", Level.HIDDEN)
        await security.set_field_permission(session, Role.AGENT, "contact", "phone", Level.HIDDEN)
    await export_members(settings, tmp_path / "hidden.csv", fmt="csv", username="agent1")
    await export_members(settings, tmp_path / "hidden.xlsx", fmt="xlsx", username="agent1")
    csv_header = list(read_csv(tmp_path / "hidden.csv")[0])
    xlsx_header, _ = read_xlsx(tmp_path / "hidden.xlsx")
    for header in (csv_header, xlsx_header):
        assert not {"birthday", "id_number", "home_phone", "work_phone", "contact_phone"} & set(header)
        assert {"name", "mobile", "contact_name", "address"} <= set(header)


async def test_xlsx_export_holds_the_same_values_as_text_cells(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    await populate(sessions, settings, tmp_path)
    for username, expected_id in (("admin1", ID_1234), ("agent1", "110***********1234")):
        await export_members(settings, tmp_path / f"{username}.csv", fmt="csv", username=username)

        assert await export_members(settings, tmp_path / f"{username}.xlsx", fmt="xlsx", username=username) == 4

        header, rows = read_xlsx(tmp_path / f"{username}.xlsx")
        csv_rows = read_csv(tmp_path / f"{username}.csv")
        assert header == list(csv_rows[0])
        for from_xlsx, from_csv in zip(rows, csv_rows, strict=True):
            # The CSV guards a leading "=" with an apostrophe; XLSX needs no guard, its cells are text.
            assert {k: v or "" for k, v in from_xlsx.items()} == {
                k: v[1:] if v.startswith("'=") else v for k, v in from_csv.items()
            }
        assert rows[1]["name"] == FORMULA_NAME
        assert by_mobile(rows)["13800138000"]["id_number"] == expected_id


async def test_export_follows_the_users_data_scope_and_needs_a_known_user(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    await populate(sessions, settings, tmp_path)
    assert await export_members(settings, tmp_path / "sh.csv", fmt="csv", username="sup_sh") == 1
    assert [row["name"] for row in read_csv(tmp_path / "sh.csv")] == ["上海客户"]
    with pytest.raises(ExportRefused, match="nobody"):
        await export_members(settings, tmp_path / "nobody.csv", fmt="csv", username="nobody")
    assert not files_named(tmp_path, "nobody.csv*")
