"""Phone-number normalisation for caller-ID matching (default region CN).

Every number stored or looked up goes through `normalise`, so a caller presenting 8613800138000,
+86 138-0013-8000 or 013800138000 finds the member stored as 13800138000.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

_DIGITS = re.compile(r"\D+")
_PLAIN_CN_MOBILE = re.compile(r"1[3-9]\d{9}")


class PhoneKind(enum.StrEnum):
    MOBILE = "mobile"
    LANDLINE = "landline"
    TOLL_FREE = "toll_free"  # 800
    SHARED_COST = "shared_cost"  # 400 (national service numbers)
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Phone:
    """A validated number: `e164` is the index key, `national` what agents read."""

    e164: str
    national: str
    kind: PhoneKind
    region: str | None


class InvalidPhone(ValueError):
    """Raised by `parse_phone` with a reason a person can act on."""


_KIND = {
    PhoneNumberType.MOBILE: PhoneKind.MOBILE,
    PhoneNumberType.FIXED_LINE: PhoneKind.LANDLINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: PhoneKind.LANDLINE,
    PhoneNumberType.TOLL_FREE: PhoneKind.TOLL_FREE,
    PhoneNumberType.SHARED_COST: PhoneKind.SHARED_COST,
    PhoneNumberType.UAN: PhoneKind.SHARED_COST,
}


def _prepare(raw: str) -> str:
    text = raw.strip()
    # Chinese PBXs and Excel both produce "0086..." and full-width digits; phonenumbers handles
    # full-width digits itself, but "0086" is only understood as an international prefix from CN.
    if text.startswith("00"):
        text = "+" + text[2:]
    return text


def _parse_uncached(raw: str, region: str) -> Phone:
    text = _prepare(raw)
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {raw!r} ({exc._msg})") from exc
    if not phonenumbers.is_valid_number(number):
        # Asterisk often presents a CN mobile as 86138... without "+"; accept that form.
        digits = _DIGITS.sub("", raw)
        if digits.startswith("86") and len(digits) > 11 and not text.startswith("+"):
            return _parse_uncached("+" + digits, region)
        raise InvalidPhone(f"not a valid number in any carrier range: {raw!r}")
    kind = _KIND.get(phonenumbers.number_type(number), PhoneKind.OTHER)
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        national=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        kind=kind,
        region=phonenumbers.region_code_for_number(number),
    )


# phonenumbers.parse costs 35-90 µs a call, which alone caps a bulk import near 20k rows/s on one core.
# For the common case — 11 plain digits that look like a CN mobile — match the number against the
# library's own CN metadata patterns directly (~0.6 µs): the same rules as is_valid_number() +
# number_type() == MOBILE, updated with the library. tests/unit/test_phones.py checks they agree.
def _cn_pattern(kind: str) -> re.Pattern[str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    desc = getattr(metadata, kind, None)
    pattern = getattr(desc, "national_number_pattern", None)
    if not isinstance(pattern, str):
        raise RuntimeError(f"phonenumbers has no CN {kind} pattern")
    return re.compile(pattern)


_CN_GENERAL = _cn_pattern("general_desc")
_CN_MOBILE = _cn_pattern("mobile")
_CN_FIXED = _cn_pattern("fixed_line")


def _cn_mobile_valid(national: str) -> bool:
    return (
        _CN_GENERAL.fullmatch(national) is not None
        and _CN_MOBILE.fullmatch(national) is not None
        and _CN_FIXED.fullmatch(national) is None
    )


def parse_phone(raw: str, region: str = "CN") -> Phone:
    """Parse and validate; raises InvalidPhone with a reason."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhone("empty phone number")
    compact = raw.strip()
    if region == "CN" and len(compact) == 11 and _PLAIN_CN_MOBILE.fullmatch(compact):
        if not _cn_mobile_valid(compact):
            raise InvalidPhone(f"not a valid number in any carrier range: {raw!r}")
        return Phone(
            e164="+86" + compact,
            national=f"{compact[:3]} {compact[3:7]} {compact[7:]}",
            kind=PhoneKind.MOBILE,
            region="CN",
        )
    return _parse_uncached(compact, region)


def normalise(raw: str | None, region: str = "CN") -> str | None:
    """E.164 form for indexing and lookup; None for garbage, never an exception (caller ID is untrusted)."""
    if raw is None:
        return None
    try:
        return parse_phone(raw, region).e164
    except InvalidPhone:
        return None


def mask_phone(value: str | None) -> str | None:
    """Mask the middle of a number the way Chinese apps do (138****8000), for views and logs."""
    if not value:
        return value
    digits = value
    if value.startswith("+86"):
        digits = value[3:]
        # CN landlines are read with their trunk 0 (010…, 0755…); mobiles and 400/800 are not.
        if not _PLAIN_CN_MOBILE.fullmatch(digits) and not digits.startswith(("400", "800")):
            digits = "0" + digits
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 3 if len(digits) >= 7 else 1
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 4) + digits[-4:]
