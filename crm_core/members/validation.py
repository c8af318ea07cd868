"""Pure validators for member data (seeds 001/003/004); shared by the service, the API and the importer."""

from __future__ import annotations

import datetime as dt
import enum
import re

from crm_core.phones import InvalidPhone, PhoneKind, parse_phone

NAME_MAX = 50  # seed 001: 客户名称 ≤50 characters
REMARK_MAX = 500
EMAIL_MAX = 50
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_POSTCODE = re.compile(r"\d{6}")
_RESIDENT_ID = re.compile(r"\d{17}[\dX]")
_PASSPORT = re.compile(r"[A-Z0-9]{5,17}")
_HK_MACAU_PERMIT = re.compile(r"[CHM]\d{8,10}|[A-Z]\d{8}")
_TAIWAN_PERMIT = re.compile(r"\d{8}|[A-Z]\d{8,9}")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


class CustomerType(enum.StrEnum):
    PERSONAL = "personal"  # 个人客户
    ENTERPRISE = "enterprise"  # 企业客户
    GOVERNMENT = "government"  # 政府及事业单位


class MemberType(enum.StrEnum):
    """Card tiers of the pharmacy seed (普通 → 金卡 → 钻石卡); the loyalty engine moves members between them."""

    STANDARD = "standard"
    GOLD = "gold"
    DIAMOND = "diamond"


class IdType(enum.StrEnum):
    RESIDENT_ID = "resident_id"  # 居民身份证
    PASSPORT = "passport"  # 护照
    HK_MACAU_PERMIT = "hk_macau_permit"  # 港澳通行证
    TAIWAN_PERMIT = "taiwan_permit"  # 台湾通行证
    OTHER = "other"


class MemberStatus(enum.StrEnum):
    """Join workflow of seed 004 (申请 → 审核 → 批准 → 正式会员) plus 停用 and 注销."""

    APPLIED = "applied"
    REVIEWING = "reviewing"
    APPROVED = "approved"
    ACTIVE = "active"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    CLOSED = "closed"


STATUS_TRANSITIONS: dict[MemberStatus, frozenset[MemberStatus]] = {
    MemberStatus.APPLIED: frozenset({MemberStatus.REVIEWING, MemberStatus.REJECTED}),
    MemberStatus.REVIEWING: frozenset({MemberStatus.APPROVED, MemberStatus.REJECTED, MemberStatus.APPLIED}),
    MemberStatus.APPROVED: frozenset({MemberStatus.ACTIVE}),
    MemberStatus.ACTIVE: frozenset({MemberStatus.SUSPENDED, MemberStatus.CLOSED}),
    MemberStatus.SUSPENDED: frozenset({MemberStatus.ACTIVE, MemberStatus.CLOSED}),
    MemberStatus.REJECTED: frozenset(),
    MemberStatus.CLOSED: frozenset(),
}


class InvalidField(ValueError):
    """A field failed validation; `field` names the column for per-row error reports."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def clean_name(value: str, field: str = "name") -> str:
    text = " ".join(value.split())
    if not text:
        raise InvalidField(field, "required")  # seed 001: "请填写客户名"
    if len(text) > NAME_MAX:
        raise InvalidField(field, f"longer than {NAME_MAX} characters ({len(text)})")
    return text


def clean_mobile(value: str, field: str = "mobile") -> str:
    """A CN mobile in a carrier range (seed 001: 11 digits, 联通/移动/电信号码段) → E.164."""
    try:
        phone = parse_phone(value)
    except InvalidPhone as exc:
        raise InvalidField(field, str(exc)) from exc
    if phone.kind != PhoneKind.MOBILE or phone.region != "CN":
        raise InvalidField(field, f"not a mainland mobile number: {value!r}")
    return phone.e164


def clean_phone(value: str, field: str = "phone") -> str:
    """Any valid number (landline with area code, mobile, 400/800) → E.164."""
    try:
        return parse_phone(value).e164
    except InvalidPhone as exc:
        raise InvalidField(field, str(exc)) from exc


def clean_email(value: str, field: str = "email") -> str:
    text = value.strip()
    if len(text) > EMAIL_MAX:
        raise InvalidField(field, f"longer than {EMAIL_MAX} characters")
    if not _EMAIL.fullmatch(text):
        raise InvalidField(field, f"not an e-mail address: {value!r}")
    return text.lower()


def clean_postcode(value: str, field: str = "postcode") -> str:
    text = value.strip()
    if not _POSTCODE.fullmatch(text):
        raise InvalidField(field, "must be 6 digits")
    return text


def resident_id_birthday(number: str) -> dt.date:
    """Birthday encoded in an 18-digit resident ID (seed 001: age is derived from the ID number)."""
    return dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def clean_id_number(id_type: IdType, value: str, field: str = "id_number") -> str:
    text = value.strip().upper()
    if id_type == IdType.RESIDENT_ID:
        if not _RESIDENT_ID.fullmatch(text):
            raise InvalidField(field, "resident ID must be 17 digits and a check digit")
        total = sum(int(d) * w for d, w in zip(text[:17], _ID_WEIGHTS, strict=True))
        if _ID_CHECK[total % 11] != text[17]:
            raise InvalidField(field, "resident ID check digit is wrong")
        try:
            resident_id_birthday(text)
        except ValueError as exc:
            raise InvalidField(field, "resident ID has an impossible birth date") from exc
        return text
    pattern = {
        IdType.PASSPORT: _PASSPORT,
        IdType.HK_MACAU_PERMIT: _HK_MACAU_PERMIT,
        IdType.TAIWAN_PERMIT: _TAIWAN_PERMIT,
    }.get(id_type)
    if pattern is not None and not pattern.fullmatch(text):
        raise InvalidField(field, f"not a valid {id_type.value} number")
    if not text or len(text) > 32:
        raise InvalidField(field, "must be 1 to 32 characters")
    return text


def age_on(birthday: dt.date, today: dt.date) -> int:
    return today.year - birthday.year - ((today.month, today.day) < (birthday.month, birthday.day))


def resident_id_check_digit(first17: str) -> str:
    """Used by demo data to make valid IDs."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]
