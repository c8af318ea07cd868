"""Member import: bad rows, duplicates, encodings, XLSX, fatal files, updates, concurrent imports.

Every database test runs on SQLite and PostgreSQL (the `db_url` fixture); the pure tests at the end
check that the importer's fast validator keeps MemberIn's rules.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_core.importers.column_mapping import MappingError, resolve_header
from crm_core.importers.member_rows import ImportRow, build_payload, validate_member
from crm_core.importers.member_writer import STAGE_COLUMNS, contact_values, member_record
from crm_core.importers.members import ImportReport, import_members_file
from crm_core.members.models import Address, Member, MemberChange, MemberContact
from crm_core.members.schemas import MemberIn
from crm_core.members.service import contact_rows, member_row
from crm_core.members.validation import InvalidField, MemberStatus, resident_id_check_digit
from crm_core.security import service as security
from crm_core.security.policy import SYSTEM, DataScope, Role
from crm_core.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "import"
HEADER = [
    "会员号",
    "会员姓名",
    "手机",
    "性别",
    "生日",
    "邮箱",
    "会员类型",
    "家庭电话",
    "省份",
    "城市",
    "区县",
    "详细地址",
]
ID_1234 = "110105198503121234"  # valid check digit, born 1985-03-12

Sessions = async_sessionmaker[AsyncSession]


def write_csv(path: Path, rows: list[list[Any]], header: list[str] = HEADER, encoding: str = "utf-8-sig") -> Path:
    with path.open("w", encoding=encoding, newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests create users but never log in: skip argon2's deliberate ~0.3 s per hash."""

    async def not_a_hash(password: str) -> str:
        return "test-only:" + password

    monkeypatch.setattr(security, "hash_password", not_a_hash)


async def run(settings: Settings, path: Path, **options: Any) -> ImportReport:
    return await import_members_file(settings, path, progress=False, **options)


async def members_by_mobile(sessions: Sessions) -> dict[str, Member]:
    async with sessions() as session:
        return {m.mobile_e164 or "": m for m in (await session.execute(select(Member))).scalars()}


async def count(sessions: Sessions, model: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def files_in(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def assert_accounted(report: ImportReport) -> None:
    assert report.rows == (
        report.inserted + report.updated + report.unchanged + report.skipped_duplicates + report.errors
    )


# ---------------------------------------------------------------- bad rows and the error report


async def test_bad_rows_are_reported_and_never_stop_good_rows(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "members.csv"
    source.write_bytes((FIXTURES / "members_with_bad_rows.csv").read_bytes())

    report = await run(settings, source)

    assert report.fatal is None
    assert (report.rows, report.inserted, report.errors, report.skipped_duplicates) == (14, 5, 9, 0)
    assert_accounted(report)
    problems = {(e.row, e.column): e.reason for e in report.error_rows}
    assert set(problems) == {
        (3, "手机"),  # 12345678901: no carrier range
        (4, "手机"),  # 14012345678: 140 is not a mobile range
        (5, "会员姓名"),  # 51 characters
        (7, "手机"),  # same mobile as row 6
        (8, "生日"),  # 1988-02-30
        (9, "联系人电话"),  # contact phone 999
        (11, "会员号"),  # same member number as row 10
        (15, "手机"),  # no mobile and no member number
        (16, "生日"),  # birthday contradicts the resident ID
    }
    assert "carrier range" in problems[(3, "手机")]
    assert "longer than 50" in problems[(5, "会员姓名")]
    assert problems[(7, "手机")] == "duplicate in file, first at row 6"
    assert problems[(11, "会员号")] == "duplicate in file, first at row 10"
    assert "not a real date" in problems[(8, "生日")]
    assert "resident ID" in problems[(16, "生日")]

    stored = await members_by_mobile(sessions)
    assert set(stored) == {"+8613800138000", "+8613800138002", "+8613800138005", "+8613800138007", "+8613800138008"}
    # The row with a bad contact phone left nothing behind: no member, no contact, no address.
    assert "+8613800138004" not in stored
    zhang = stored["+8613800138000"]
    assert (zhang.name, zhang.gender, zhang.member_type, zhang.status, zhang.source) == (
        "张伟",
        "male",
        "gold",
        MemberStatus.ACTIVE.value,
        "import",
    )
    assert (zhang.birthday, zhang.id_type, zhang.id_number) == (dt.date(1985, 3, 12), "resident_id", ID_1234)
    assert stored["+8613800138005"].member_no == "SN-0001"
    assert stored["+8613800138005"].birthday == dt.date(1979, 11, 5)
    assert stored["+8613800138007"].birthday == dt.date(1995, 6, 1)
    assert stored["+8613800138008"].id_type == "passport"
    async with sessions() as session:
        contacts = (await session.execute(select(MemberContact).where(MemberContact.member_id == zhang.id))).scalars()
        assert sorted((c.kind, c.phone_e164, c.contact_name, c.is_primary) for c in contacts) == [
            ("contact_person", "+8613900139000", "张丽", False),
            ("home", "+861062345678", None, False),
            ("mobile", "+8613800138000", None, True),
        ]
        address = (await session.execute(select(Address).where(Address.member_id == zhang.id))).scalar_one()
        assert (address.province, address.city, address.district, address.detail, address.postcode) == (
            "北京市",
            "北京市",
            "朝阳区",
            "建国路88号",
            "100022",
        )
        assert address.is_default
    assert await count(sessions, MemberContact) == 3 + 1 + 1 + 1 + 1
    assert await count(sessions, Address) == 2

    # The error report: an Excel-friendly CSV beside the file, one line per refused row, in file order.
    assert report.errors_path == tmp_path / "members.csv.errors.csv"
    assert report.errors_path.read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel shows the Chinese
    with report.errors_path.open(encoding="utf-8-sig", newline="") as stream:
        lines = list(csv.reader(stream))
    assert lines[0] == ["row", "column", "value", "reason"]
    assert [int(line[0]) for line in lines[1:]] == [3, 4, 5, 7, 8, 9, 11, 15, 16]
    assert lines[1][:3] == ["3", "手机", "12345678901"]
    assert lines[4][:3] == ["7", "手机", "13800138002"]
    assert lines[6][:3] == ["9", "联系人电话", "999"]
    assert str(report.errors_path) in report.summary()


async def test_error_report_goes_where_asked_and_is_not_written_without_errors(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    clean = write_csv(tmp_path / "clean.csv", [["", "林一", "13700137000", "女", "", "", "", "", "", "", "", ""]])
    report = await run(settings, clean, errors_path=tmp_path / "custom.csv")
    assert report.errors == 0 and report.errors_path is None
    assert not (tmp_path / "custom.csv").exists() and not (tmp_path / "clean.csv.errors.csv").exists()

    bad = write_csv(
        tmp_path / "bad.csv",
        [
            ["", "林二", "12345", "女", "", "", "", "", "", "", "", ""],
            ["", "林三", "=1+1", "", "", "", "", "", "", "", "", ""],
        ],
    )
    report = await run(settings, bad, errors_path=tmp_path / "custom.csv")
    assert report.errors_path == tmp_path / "custom.csv"
    written = (tmp_path / "custom.csv").read_text(encoding="utf-8-sig")
    assert "12345" in written
    assert "'=1+1" in written and ",=1+1" not in written  # a value Excel would run as a formula is defused


# ---------------------------------------------------------------- duplicates in the database


async def test_rows_already_in_the_database_are_skipped(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    first = write_csv(
        tmp_path / "first.csv",
        [
            ["", "张一", "13500135000", "男", "1980-01-01", "", "普通", "", "", "", "", ""],
            ["VIP-9", "张二", "13500135001", "女", "1981-01-01", "", "金卡", "", "", "", "", ""],
        ],
    )
    assert (await run(settings, first)).inserted == 2
    again = write_csv(
        tmp_path / "again.csv",
        [
            ["", "张一改", "13500135000", "男", "", "", "钻石卡", "", "", "", "", ""],  # same mobile
            ["VIP-9", "张二", "13500135099", "女", "", "", "", "", "", "", "", ""],  # same member number
            ["", "张三", "13500135002", "男", "", "", "", "", "", "", "", ""],  # new
        ],
    )

    report = await run(settings, again, on_duplicate="skip")

    assert (report.inserted, report.skipped_duplicates, report.updated, report.errors) == (1, 2, 0, 0)
    stored = await members_by_mobile(sessions)
    assert stored["+8613500135000"].name == "张一" and stored["+8613500135000"].member_type == "standard"
    assert "+8613500135099" not in stored
    assert await count(sessions, Member) == 3


async def test_update_mode_changes_only_the_fields_given_and_records_history(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    first = write_csv(
        tmp_path / "first.csv",
        [
            [
                "",
                "张伟",
                "13800138000",
                "男",
                "1985-03-12",
                "old@example.com",
                "普通",
                "",
                "北京市",
                "北京市",
                "朝阳区",
                "建国路88号",
            ],
            ["SN-7", "李雷", "13800138001", "男", "1986-01-01", "", "", "", "", "", "", ""],
            ["", "韩梅梅", "13800138002", "女", "1987-02-02", "", "金卡", "", "", "", "", ""],
        ],
    )
    assert (await run(settings, first)).inserted == 3
    before = await members_by_mobile(sessions)
    changes = write_csv(
        tmp_path / "changes.csv",
        [
            # new name, email, tier, an extra home phone, a new address; gender and birthday left empty
            [
                "",
                "张伟伟",
                "13800138000",
                "",
                "",
                "new@example.com",
                "金卡",
                "010-62345678",
                "上海市",
                "上海市",
                "",
                "南京东路1号",
            ],
            # matched by member number: the mobile moves to a new number
            ["SN-7", "李雷", "13800138099", "", "", "", "", "", "", "", "", ""],
            # same as stored: nothing to change
            ["", "韩梅梅", "13800138002", "女", "1987-02-02", "", "金卡", "", "", "", "", ""],
            ["", "新人", "13800138003", "女", "", "", "", "", "", "", "", ""],
        ],
    )

    report = await run(settings, changes, on_duplicate="update")

    assert (report.updated, report.unchanged, report.inserted, report.errors) == (2, 1, 1, 0), report.error_rows
    assert_accounted(report)
    after = await members_by_mobile(sessions)
    zhang = after["+8613800138000"]
    assert (zhang.name, zhang.email, zhang.member_type, zhang.gender, zhang.birthday) == (
        "张伟伟",
        "new@example.com",
        "gold",
        "male",  # empty cell: kept
        dt.date(1985, 3, 12),
    )
    assert zhang.version == before["+8613800138000"].version + 1
    li = after["+8613800138099"]
    assert li.member_no == "SN-7" and "+8613800138001" not in after
    assert after["+8613800138002"].version == 1
    async with sessions() as session:
        history = (
            await session.execute(
                select(MemberChange.member_id, MemberChange.field, MemberChange.old_value, MemberChange.new_value)
            )
        ).all()
        assert sorted((f, o, n) for m, f, o, n in history if m == zhang.id) == [
            ("email", "old@example.com", "new@example.com"),
            ("member_type", "standard", "gold"),
            ("name", "张伟", "张伟伟"),
        ]
        assert [(f, o, n) for m, f, o, n in history if m == li.id] == [("mobile", "+8613800138001", "+8613800138099")]
        phones = (
            await session.execute(
                select(MemberContact.kind, MemberContact.phone_e164, MemberContact.is_primary).where(
                    MemberContact.member_id.in_([zhang.id, li.id])
                )
            )
        ).all()
        assert sorted(phones) == [
            ("home", "+861062345678", False),
            ("mobile", "+8613800138000", True),
            ("mobile", "+8613800138099", True),
        ]
        address = (await session.execute(select(Address).where(Address.member_id == zhang.id))).scalar_one()
        assert (address.province, address.city, address.district, address.detail) == (
            "上海市",
            "上海市",
            None,
            "南京东路1号",
        )


async def test_the_importing_user_must_exist_and_may_update_only_what_it_may_write(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    async with sessions() as session, session.begin():
        await security.add_org_unit(session, "BJ", "北京门店")
        await security.add_org_unit(session, "SH", "上海门店")
        await security.add_user(session, "bj_staff", "pw-bj-123456", Role.CRM_STAFF, org_unit_code="BJ")
        await security.add_user(
            session, "sh_staff", "pw-sh-123456", Role.CRM_STAFF, org_unit_code="SH", data_scope=DataScope.DEPARTMENT
        )
        await security.add_user(session, "agent1", "pw-agent-123456", Role.AGENT)
    rows = [["", "北京客户", "13800138000", "男", "", "", "", "", "", "", "", ""]]
    assert (await run(settings, write_csv(tmp_path / "bj.csv", rows), username="bj_staff")).inserted == 1

    rows[0][1] = "改名"
    report = await run(settings, write_csv(tmp_path / "sh.csv", rows), username="sh_staff", on_duplicate="update")
    assert report.errors == 1 and "outside the data scope" in report.error_rows[0].reason
    denied = await run(settings, write_csv(tmp_path / "ag.csv", rows), username="agent1", on_duplicate="update")
    assert denied.fatal is not None and "member_type" in denied.fatal
    own = await run(settings, write_csv(tmp_path / "own.csv", rows), username="bj_staff", on_duplicate="update")
    assert own.updated == 1  # department-and-below scope: the subtree query under FOR UPDATE
    rows[0][1] = "北京客户"
    assert (
        await run(settings, write_csv(tmp_path / "back.csv", rows), username="bj_staff", on_duplicate="update")
    ).updated
    unknown = await run(settings, write_csv(tmp_path / "x.csv", rows), username="nobody")
    assert unknown.fatal is not None and "nobody" in unknown.fatal
    assert (await members_by_mobile(sessions))["+8613800138000"].name == "北京客户"


# ---------------------------------------------------------------- numbering and ownership


async def test_new_members_belong_to_the_importing_user_and_get_numbers(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    async with sessions() as session, session.begin():
        unit = await security.add_org_unit(session, "HQ", "总部")
        user = await security.add_user(session, "clerk", "pw-clerk-123456", Role.CRM_STAFF, org_unit_code="HQ")
        user_id, unit_id = user.id, unit.id
    source = write_csv(
        tmp_path / "m.csv",
        [
            ["M00000001", "甲", "13700137000", "", "", "", "", "", "", "", "", ""],  # the series' first number
            ["", "乙", "13700137001", "", "", "", "", "", "", "", "", ""],  # generated: skips M00000001
            ["", "丙", "13700137002", "", "", "", "", "", "", "", "", ""],  # generated: skips M00000003 too
            ["M00000003", "丁", "13700137003", "", "", "", "", "", "", "", "", ""],
            *[[f"F-{i}", f"填充{i}", f"1370013710{i}", "", "", "", "", "", "", "", "", ""] for i in range(6)],
            # Read long after 乙 and 丙 were numbered: M00000002 is already one of theirs.
            ["M00000002", "戊", "13700137004", "", "", "", "", "", "", "", "", ""],
        ],
    )

    report = await run(settings, source, username="clerk", batch_rows=2)

    assert (report.inserted, report.errors) == (10, 1), report
    assert report.error_rows[0].row == 12 and "given by this import" in report.error_rows[0].reason
    stored = await members_by_mobile(sessions)
    numbers = [stored[f"+86137001370{i:02d}"].member_no for i in range(4)]
    # File numbers are kept; generated ones avoid them. (On PostgreSQL two batches are written at once,
    # so which of 乙 and 丙 draws first varies.)
    assert (numbers[0], numbers[3]) == ("M00000001", "M00000003")
    assert {numbers[1], numbers[2]} == {"M00000002", "M00000004"}
    assert {(m.owner_user_id, m.org_unit_id) for m in stored.values()} == {(user_id, unit_id)}


# ---------------------------------------------------------------- files that cannot be imported


async def test_empty_file_is_fatal_and_imports_nothing(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    cases = [
        (b"", "empty file"),
        (b"\xef\xbb\xbf\r\n\r\n", "empty file"),
        ("会员姓名,手机\r\n".encode(), "no data rows"),
        ("会员姓名,手机\r\n,\r\n\r\n".encode(), "no data rows"),
    ]
    for content, reason in cases:
        source = tmp_path / "empty.csv"
        source.write_bytes(content)
        report = await run(settings, source)
        assert report.fatal is not None and reason in report.fatal, content
        assert report.rows == 0 and report.errors_path is None
        assert "nothing imported" in report.summary()
    assert await count(sessions, Member) == 0
    assert files_in(tmp_path) == [tmp_path / "empty.csv"]  # no error report for a file never read


async def test_wrong_header_is_fatal_and_lists_the_columns(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "orders.csv", [["A001", "3", "19.90"]], header=["订单号", "数量", "金额"])
    report = await run(settings, source)
    assert report.fatal is not None and report.fatal.startswith("wrong header")
    assert "订单号" in report.fatal and "会员姓名" not in report.fatal and "姓名" in report.fatal
    no_name = write_csv(tmp_path / "phones.csv", [["13800138000", "男"]], header=["手机", "性别"])
    report = await run(settings, no_name)
    assert report.fatal is not None and "required column" in report.fatal and "name" in report.fatal
    assert await count(sessions, Member) == 0


def test_header_aliases_notes_and_ambiguity() -> None:
    plan = resolve_header([" *姓名（必填） ", "手机号码", "Email", "会员卡号"])
    assert plan.index == {"name": 0, "mobile": 1, "email": 2}
    assert plan.ignored == ["会员卡号"] and plan.column_of("name") == "*姓名（必填）"
    with pytest.raises(MappingError, match="both map to field 'mobile'"):
        resolve_header(["姓名", "手机", "手机号"])


async def test_unreadable_encoding_is_fatal(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes("会员姓名,手机\r\n".encode() + b"Jos\xe9 \xff\xfe,13800138000\r\n")
    report = await run(settings, source)
    assert report.fatal is not None and "unreadable encoding" in report.fatal
    gbk = write_csv(tmp_path / "gbk.csv", [["", "张伟", "13800138000"] + [""] * 9], encoding="gbk")
    forced = await run(settings, gbk, encoding="utf-8")
    assert forced.fatal is not None and "not valid utf-8" in forced.fatal
    assert await count(sessions, Member) == 0


# ---------------------------------------------------------------- encodings, XLSX, mapping files


async def test_chinese_names_survive_each_encoding_excel_writes(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    for number, encoding in enumerate(["gbk", "gb18030", "utf-8", "utf-8-sig"]):
        source = write_csv(
            tmp_path / f"members-{encoding}.csv",
            [
                [
                    "",
                    "欧阳娜娜",
                    f"1380013{number}000",
                    "女",
                    "1990-01-31",
                    "",
                    "钻石卡",
                    "",
                    "广东省",
                    "深圳市",
                    "南山区",
                    "科技园路1号",
                ],
                ["", "诸葛亮", f"1380013{number}001", "男", "1981/7/23", "", "普通", "", "", "", "", ""],
            ],
            encoding=encoding,
        )
        report = await run(settings, source)
        assert (report.inserted, report.errors) == (2, 0), report.fatal
        assert ("gb18030" if encoding.startswith("gb") else "utf-8-sig") in report.source
        stored = await members_by_mobile(sessions)
        assert stored[f"+861380013{number}000"].name == "欧阳娜娜"
        assert stored[f"+861380013{number}001"].name == "诸葛亮"
    async with sessions() as session:
        assert set((await session.execute(select(Address.detail))).scalars()) == {"科技园路1号"}


async def test_xlsx_with_typed_cells_and_blank_rows(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["会员姓名", "手机", "性别", "出生日期", "会员级别", "备注"])
    sheet.append(["王小明", 13800138000, "男", dt.datetime(1990, 5, 6), "金卡", "Excel 日期单元格"])
    sheet.append([None, None, None, None, None, None])
    sheet.append(["李小红", 13800138001.0, "女", "2001/2/3", "普通", None])
    sheet.append(["坏号码", 14012345678, "女", None, None, None])
    sheet.append(["序列日期", "13800138002", "女", 32874, None, None])  # Excel serial 32874 = 1990-01-01
    path = tmp_path / "members.xlsx"
    book.save(path)

    report = await run(settings, path)

    assert (report.rows, report.inserted, report.errors) == (4, 3, 1), report.error_rows
    assert report.error_rows[0].row == 5 and report.error_rows[0].column == "手机"
    assert "XLSX" in report.source
    stored = await members_by_mobile(sessions)
    assert stored["+8613800138000"].birthday == dt.date(1990, 5, 6)
    assert stored["+8613800138000"].member_type == "gold"
    assert stored["+8613800138001"].birthday == dt.date(2001, 2, 3)
    assert stored["+8613800138002"].birthday == dt.date(1990, 1, 1)


async def test_mapping_file_maps_a_legacy_export(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    report = await run(
        settings,
        FIXTURES / "legacy_pos_export.csv",
        mapping_path=FIXTURES / "legacy_pos_mapping.toml",
        errors_path=tmp_path / "errors.csv",
    )
    assert (report.inserted, report.errors, report.ignored_columns) == (3, 0, ["内部编号"])
    stored = await members_by_mobile(sessions)
    assert stored["+8613600136000"].name == "林小雨" and stored["+8613600136000"].member_type == "gold"
    assert stored["+8613600136002"].birthday == dt.date(1988, 12, 12)

    bad_mapping = tmp_path / "bad.toml"
    bad_mapping.write_text('"客户全名" = "full_name"\n', encoding="utf-8")
    report = await run(settings, FIXTURES / "legacy_pos_export.csv", mapping_path=bad_mapping)
    assert report.fatal is not None and "full_name" in report.fatal


async def test_a_row_the_database_refuses_costs_only_that_row(
    sessions: Sessions, settings: Settings, tmp_path: Path, engine: AsyncEngine
) -> None:
    """A failure no validator foresaw (here a trigger) rolls back the batch, then rows go in one by one."""
    if engine.dialect.name == "postgresql":
        create = [
            "CREATE FUNCTION refuse_test_member() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.name = '触发故障' THEN RAISE EXCEPTION 'refused by test trigger'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_test_member BEFORE INSERT ON members FOR EACH ROW "
            "EXECUTE FUNCTION refuse_test_member()",
        ]
        drop = ["DROP TRIGGER refuse_test_member ON members", "DROP FUNCTION refuse_test_member()"]
    else:
        create = [
            "CREATE TRIGGER refuse_test_member BEFORE INSERT ON members WHEN NEW.name = '触发故障' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        ]
        drop = ["DROP TRIGGER refuse_test_member"]
    rows = [
        ["", f"会员{i}", f"1350013{i:04d}", "", "", "", "", "010-62345678", "北京市", "北京市", "", "长安街1号"]
        for i in range(6)
    ]
    rows[3][1] = "触发故障"
    async with engine.begin() as connection:
        for statement in create:
            await connection.execute(text(statement))
    try:
        report = await run(settings, write_csv(tmp_path / "m.csv", rows))
    finally:
        async with engine.begin() as connection:
            for statement in drop:
                await connection.execute(text(statement))

    assert (report.inserted, report.errors) == (5, 1)
    assert report.error_rows[0].row == 5 and "refused by test trigger" in report.error_rows[0].reason
    stored = await members_by_mobile(sessions)
    assert "+8613500130003" not in stored and len(stored) == 5
    assert await count(sessions, MemberContact) == 10 and await count(sessions, Address) == 5


# ---------------------------------------------------------------- concurrency


async def test_two_imports_of_one_file_at_once_create_each_member_once(
    sessions: Sessions, settings: Settings, tmp_path: Path
) -> None:
    rows = [
        [
            "",
            f"会员{i}",
            f"1390013{i:04d}",
            "男" if i % 2 else "女",
            "",
            "",
            "",
            "010-62345678" if i % 3 == 0 else "",
            "北京市" if i % 4 == 0 else "",
            "北京市" if i % 4 == 0 else "",
            "",
            "长安街1号" if i % 4 == 0 else "",
        ]
        for i in range(90)
    ]
    rows[10][2] = "12345678901"  # bad in both imports
    rows[20][2] = rows[19][2]  # duplicate inside the file
    source = write_csv(tmp_path / "members.csv", rows)
    good = 88

    first, second = await asyncio.gather(
        run(settings, source, batch_rows=7, errors_path=tmp_path / "a.csv"),
        run(settings, source, batch_rows=11, errors_path=tmp_path / "b.csv"),
    )

    for report in (first, second):
        assert report.fatal is None and report.errors == 2
        assert report.inserted + report.skipped_duplicates == good
        assert_accounted(report)
    assert first.inserted + second.inserted == good
    assert await count(sessions, Member) == good
    # Contacts and addresses exist exactly once per inserted member: nothing from the losing side.
    assert await count(sessions, MemberContact) == good + sum(
        1 for i, r in enumerate(rows) if r[7] and i not in (10, 20)
    )
    assert await count(sessions, Address) == sum(1 for i, r in enumerate(rows) if r[11] and i not in (10, 20))


async def test_duplicates_across_batches_are_caught(sessions: Sessions, settings: Settings, tmp_path: Path) -> None:
    rows = [["", f"会员{i}", f"1360013{i:04d}", "", "", "", "", "", "", "", "", ""] for i in range(10)]
    rows.append(["", "重复", rows[1][2], "", "", "", "", "", "", "", "", ""])
    report = await run(settings, write_csv(tmp_path / "m.csv", rows), batch_rows=3)
    assert (report.inserted, report.errors) == (10, 1)
    assert report.error_rows[0].row == 12 and report.error_rows[0].reason == "duplicate in file, first at row 3"


# ---------------------------------------------------------------- the fast validator keeps MemberIn's rules

_VALID_ID = "11010519850312123" + resident_id_check_digit("11010519850312123")


def _base_payload() -> dict[str, Any]:
    """A member using every field MemberIn has, valid; the mutations below break one rule each."""
    return {
        "name": "张伟",
        "customer_type": "personal",
        "member_type": "gold",
        "mobile": "13800138000",
        "gender": "male",
        "birthday": dt.date(1985, 3, 12),
        "id_type": "resident_id",
        "id_number": _VALID_ID,
        "email": "zw@example.com",
        "source": "import",
        "organisation_id": 3,
        "remark": "老会员",
        "contacts": [
            {"kind": "home", "phone": "010-62345678"},
            {"kind": "contact_person", "phone": "13900139000", "contact_name": "张丽", "relation": "妻子"},
        ],
        "addresses": [
            {
                "kind": "home",
                "province": "北京市",
                "city": "北京市",
                "district": "朝阳区",
                "detail": "建国路88号",
                "postcode": "100022",
                "is_default": True,
            },
        ],
    }


# (path, value): each sits on one side of one MemberIn rule; "" as a path key removes the field.
_MUTATIONS: list[tuple[str, Any]] = [
    ("name", ""),
    ("name", "  "),
    ("name", " 王  小明 "),
    ("name", "欧" * 50),
    ("name", "欧" * 51),
    ("name", "=1+1"),
    ("customer_type", "enterprise"),
    ("customer_type", "alien"),
    ("customer_type", None),
    ("member_type", None),
    ("member_type", "standard"),
    ("member_type", "diamond"),
    ("member_type", "platinum"),
    ("mobile", ""),
    ("mobile", " 13900139000 "),
    ("mobile", "+86 138 0013 8001"),
    ("mobile", "12345678901"),
    ("mobile", "14012345678"),
    ("mobile", "010-62345678"),
    ("mobile", "4008123123"),
    ("mobile", None),
    ("gender", "female"),
    ("gender", "other"),
    ("gender", None),
    ("birthday", dt.date(1990, 1, 1)),
    ("birthday", dt.date(2999, 1, 1)),
    ("birthday", None),
    ("id_type", "passport"),
    ("id_type", "visa"),
    ("id_type", None),
    ("id_type", "other"),
    ("id_number", _VALID_ID[:-1] + "0"),
    ("id_number", "E12345678"),
    ("id_number", " 11010519850312123x "),
    ("id_number", ""),
    ("id_number", None),
    ("id_number", "?" * 33),
    ("email", " B@Example.COM "),
    ("email", "not-an-email"),
    ("email", ""),
    ("email", "x" * 45 + "@a.com"),
    ("source", "web"),
    ("source", "fax"),
    ("source", None),
    ("organisation_id", None),
    ("remark", "备" * 500),
    ("remark", "备" * 501),
    ("remark", ""),
    ("remark", None),
    ("contacts", []),
    ("contacts", [{"kind": "fax", "phone": "13900139000"}]),
    ("contacts.0.phone", "999"),
    ("contacts.0.phone", ""),
    ("contacts.0.phone", "+86 10 6234 5678"),
    ("contacts.0.kind", "mobile"),
    ("contacts.0.kind", "work"),
    ("contacts.1.contact_name", ""),
    ("contacts.1.contact_name", None),
    ("contacts.1.contact_name", "丽" * 50),
    ("contacts.1.contact_name", "丽" * 51),
    ("contacts.1.relation", "亲" * 20),
    ("contacts.1.relation", "亲" * 21),
    ("contacts.1.relation", None),
    ("contacts.1.kind", "home"),
    ("contacts.1.phone", "13800138000"),
    ("contacts", [{"kind": "home", "phone": "13900139000"}] * 21),
    ("addresses", []),
    ("addresses.0.province", "京"),
    ("addresses.0.province", "省" * 21),
    ("addresses.0.province", ""),
    ("addresses.0.city", "市"),
    ("addresses.0.city", None),
    ("addresses.0.district", "区" * 20),
    ("addresses.0.district", "区" * 21),
    ("addresses.0.district", ""),
    ("addresses.0.detail", ""),
    ("addresses.0.detail", "路" * 200),
    ("addresses.0.detail", "路" * 201),
    ("addresses.0.postcode", "12345"),
    ("addresses.0.postcode", " 518000 "),
    ("addresses.0.postcode", None),
    ("addresses.0.kind", "delivery"),
    ("addresses.0.kind", "moon"),
    ("addresses.0.is_default", False),
    ("addresses", [{"province": "北京市", "city": "北京市", "detail": "x"}] * 11),
]


def _mutate(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    target: Any = payload
    for part in parents:
        if isinstance(target, list):
            target = target[int(part)] if int(part) < len(target) else None
        else:
            target = target.get(part)
        if not isinstance(target, dict | list):
            return payload  # the thing to change was removed by an earlier mutation
    if isinstance(target, list):
        return payload
    value = copy.deepcopy(value)
    if value is None and leaf in (
        "mobile",
        "birthday",
        "id_type",
        "id_number",
        "gender",
        "source",
        "remark",
        "organisation_id",
        "contact_name",
        "relation",
        "postcode",
        "city",
    ):
        target.pop(leaf, None)  # absent, not an explicit null: what the importer's payload builder produces
    else:
        target[leaf] = value
    return payload


def _pydantic(payload: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return MemberIn.model_validate(payload).model_dump()
    except ValidationError:
        return None


def _fast(payload: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return validate_member(payload).as_member_in_dump()
    except InvalidField:
        return None


@pytest.mark.parametrize(("path", "value"), _MUTATIONS, ids=[f"{p}={str(v)[:12]}" for p, v in _MUTATIONS])
def test_fast_validator_matches_member_in_on_each_rule_boundary(path: str, value: Any) -> None:
    payload = _mutate(_base_payload(), path, value)
    assert _fast(payload) == _pydantic(payload)


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_MUTATIONS), max_size=4))
def test_fast_validator_matches_member_in_on_combined_changes(mutations: list[tuple[str, Any]]) -> None:
    payload = _base_payload()
    for path, value in mutations:
        payload = _mutate(payload, path, value)
    assert _fast(payload) == _pydantic(payload)


@pytest.mark.parametrize(
    "cells",
    [
        {
            "name": "张伟",
            "mobile": "13800138000",
            "gender": "男",
            "birthday": "1985/3/12",
            "id_type": "身份证",
            "id_number": ID_1234,
            "email": "ZW@Example.com",
            "member_type": "金卡",
            "home_phone": "010-62345678",
            "contact_name": "张丽",
            "contact_phone": "13900139000",
            "contact_relation": "妻子",
            "province": "北京市",
            "city": "北京市",
            "district": "朝阳区",
            "address": "建国路88号",
            "postcode": "100022",
            "remark": "老会员",
        },
        {"name": "李娜", "mobile": "13800138001", "resident_id_number": ID_1234},
        {
            "name": "王芳",
            "mobile": "13800138002",
            "work_phone": "13800138002",
            "province": "上海市",
            "city": "上海市",
            "address": "世纪大道1号",
        },
    ],
)
def test_import_rows_store_what_the_member_service_would(cells: dict[str, Any]) -> None:
    payload, _ = build_payload(cells)
    fast = validate_member(payload)
    model = MemberIn.model_validate(payload)
    assert fast.as_member_in_dump() == model.model_dump()
    row = ImportRow(2, fast, None, frozenset())
    record = dict(zip(STAGE_COLUMNS, member_record(row, "M00000001"), strict=True))
    expected = member_row(model, "M00000001", MemberStatus.ACTIVE, SYSTEM)
    assert {k: v for k, v in record.items() if k != "row_no"} == {k: expected[k] for k in STAGE_COLUMNS[1:]}
    now = dt.datetime.now(dt.UTC)
    ours = [
        (kind, phone, name, relation, primary)
        for _, kind, phone, name, relation, primary, _ in contact_values(7, row, now)
    ]
    theirs = [
        (c["kind"], c["phone_e164"], c.get("contact_name"), c.get("relation"), c["is_primary"])
        for c in contact_rows(7, model)
    ]
    assert ours == theirs
