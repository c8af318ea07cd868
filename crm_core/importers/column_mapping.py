"""Which file column feeds which member field: built-in Chinese/English headers plus an optional TOML file.

Member files come from Excel templates of older CRMs, POS systems and hand-made sheets, so the same
field appears as 姓名, 会员姓名, *姓名 or 姓名（必填）. Headers are compared after NFKC folding
(full-width → half-width), lower-casing and dropping spaces, a leading/trailing `*` and a trailing
parenthesised note, so all of those match one alias.

A mapping file is TOML, either top-level pairs or a `[columns]` table, header text → field name;
the value "ignore" drops a column on purpose:

    [columns]
    "客户全名" = "name"
    "联系手机" = "mobile"
    "内部编号" = "ignore"
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

IGNORE = "ignore"

# Every field the member importer understands, with the header a person would write for it.
FIELDS: dict[str, str] = {
    "member_no": "会员号",
    "name": "姓名",
    "mobile": "手机",
    "gender": "性别",
    "birthday": "生日",
    "id_type": "证件类型",
    "id_number": "证件号码",
    "resident_id_number": "身份证号",  # an id_number column whose type is implied (居民身份证)
    "email": "邮箱",
    "member_type": "会员类型",
    "home_phone": "家庭电话",
    "work_phone": "办公电话",
    "contact_name": "联系人",
    "contact_phone": "联系人电话",
    "contact_relation": "联系人关系",
    "province": "省份",
    "city": "城市",
    "district": "区县",
    "address": "详细地址",
    "postcode": "邮编",
    "remark": "备注",
}

REQUIRED_FIELDS = ("name",)
# A row is matched to an existing member (and protected against concurrent duplicates) by these.
KEY_FIELDS = ("mobile", "member_no")

_ALIASES: dict[str, tuple[str, ...]] = {
    "member_no": ("会员号", "会员编号", "会员号码", "客户编号", "会员id", "member_no", "member_number"),
    "name": ("姓名", "会员姓名", "客户姓名", "客户名称", "中文姓名", "name", "member_name"),
    "mobile": (
        "手机",
        "手机号",
        "手机号码",
        "移动电话",
        "注册手机号",
        "会员手机",
        "mobile",
        "mobile_phone",
        "cellphone",
    ),
    "gender": ("性别", "gender", "sex"),
    "birthday": ("生日", "出生日期", "出生年月日", "birthday", "birth_date", "date_of_birth"),
    "id_type": ("证件类型", "id_type"),
    "id_number": ("证件号码", "证件号", "id_number", "id_no"),
    "resident_id_number": ("身份证号", "身份证号码", "身份证", "resident_id_number"),
    "email": ("邮箱", "电子邮箱", "电子邮件", "邮件", "email", "e-mail"),
    "member_type": ("会员类型", "会员级别", "会员等级", "member_type", "level"),
    "home_phone": ("家庭电话", "住宅电话", "家庭电话号码", "home_phone"),
    "work_phone": ("办公电话", "公司电话", "单位电话", "工作电话", "work_phone", "office_phone"),
    "contact_name": ("联系人", "联系人姓名", "紧急联系人", "contact_name"),
    "contact_phone": ("联系人电话", "联系人手机", "紧急联系人电话", "contact_phone"),
    "contact_relation": ("联系人关系", "与会员关系", "contact_relation", "relation"),
    "province": ("省份", "省", "所在省份", "province"),
    "city": ("城市", "市", "所在城市", "city"),
    "district": ("区县", "区", "县", "区/县", "district"),
    "address": ("详细地址", "地址", "街道地址", "address", "address_detail", "detail"),
    "postcode": ("邮编", "邮政编码", "postcode", "zip", "zipcode"),
    "remark": ("备注", "remark", "remarks", "note"),
}

_TRAILING_NOTE = re.compile(r"\([^()]*\)$")


def normalise_header(text: object) -> str:
    """The comparable form of a header cell (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", "" if text is None else str(text)).replace("\ufeff", "")
    folded = "".join(folded.split()).lower().strip("*")
    return _TRAILING_NOTE.sub("", folded).strip("*") or folded


def default_aliases() -> dict[str, str]:
    """Normalised header → field for the built-in vocabulary."""
    table: dict[str, str] = {}
    for field_name, aliases in _ALIASES.items():
        for alias in aliases:
            table[normalise_header(alias)] = field_name
    return table


class MappingError(ValueError):
    """The header or the mapping file cannot be used; nothing is imported (ImportReport.fatal)."""


def load_mapping_file(path: Path) -> dict[str, str]:
    """Read a TOML mapping file into normalised header → field; unknown field names are refused."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"mapping file {path} is unreadable: {exc}") from exc
    table = document.get("columns", document)
    if not isinstance(table, dict):
        raise MappingError(f"mapping file {path}: [columns] must be a table of header = field")
    mapping: dict[str, str] = {}
    for header, target in table.items():
        if not isinstance(target, str):
            raise MappingError(f"mapping file {path}: value for {header!r} must be a field name, not {target!r}")
        target_field = target.strip()
        if target_field != IGNORE and target_field not in FIELDS:
            raise MappingError(
                f"mapping file {path}: unknown field {target_field!r} for column {header!r}; "
                f"known fields: {', '.join(FIELDS)} (or {IGNORE!r})"
            )
        mapping[normalise_header(header)] = target_field
    return mapping


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """The resolved header: for each mapped field, its column index and the header text as written."""

    index: dict[str, int]
    header_text: dict[str, str]
    ignored: list[str] = field(default_factory=list)

    def column_of(self, field_name: str) -> str:
        """The header text to show a person in an error report (falls back to the field name)."""
        return self.header_text.get(field_name, field_name)


def _expected_summary() -> str:
    return ", ".join(f"{header} ({name})" for name, header in FIELDS.items())


def resolve_header(header: Sequence[object], custom: Mapping[str, str] | None = None) -> ColumnPlan:
    """Match the header row to member fields; raises MappingError ("wrong header") when it cannot be used."""
    aliases = default_aliases()
    if custom:
        aliases.update(custom)
    index: dict[str, int] = {}
    header_text: dict[str, str] = {}
    ignored: list[str] = []
    found = [str(cell).strip() for cell in header if cell is not None and str(cell).strip()]
    for position, cell in enumerate(header):
        text = "" if cell is None else str(cell).strip().replace("\ufeff", "")
        if not text:
            continue
        target = aliases.get(normalise_header(text))
        if target is None or target == IGNORE:
            ignored.append(text)
            continue
        if target in index:
            raise MappingError(
                f"wrong header: columns {header_text[target]!r} and {text!r} both map to field {target!r}"
            )
        index[target] = position
        header_text[target] = text
    if not index:
        raise MappingError(
            f"wrong header: no column matches a member field. Columns found: {found or 'none'}. "
            f"Expected (Chinese or English): {_expected_summary()}"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in index]
    if missing:
        raise MappingError(
            f"wrong header: required column {', '.join(f'{FIELDS[m]} ({m})' for m in missing)} is missing. "
            f"Columns found: {found}. Expected (Chinese or English): {_expected_summary()}"
        )
    if not any(key in index for key in KEY_FIELDS):
        raise MappingError(
            f"wrong header: a 手机 (mobile) or 会员号 (member_no) column is needed to match members. "
            f"Columns found: {found}"
        )
    if "resident_id_number" in index and ("id_number" in index or "id_type" in index):
        raise MappingError(
            f"wrong header: {header_text['resident_id_number']!r} already means a resident ID number; "
            "use either it or the 证件类型 + 证件号码 pair"
        )
    return ColumnPlan(index=index, header_text=header_text, ignored=ignored)
