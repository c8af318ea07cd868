"""Normalisation table for caller ID (default region CN) and masking."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from crm_core.phones import InvalidPhone, PhoneKind, _parse_uncached, mask_phone, normalise, parse_phone


@pytest.mark.parametrize(
    ("raw", "e164", "kind"),
    [
        ("13800138000", "+8613800138000", PhoneKind.MOBILE),
        ("+86 138-0013-8000", "+8613800138000", PhoneKind.MOBILE),
        ("+86 138 0013 8000", "+8613800138000", PhoneKind.MOBILE),
        ("008613800138000", "+8613800138000", PhoneKind.MOBILE),
        ("8613800138000", "+8613800138000", PhoneKind.MOBILE),  # how some trunks present CLI
        ("013800138000", "+8613800138000", PhoneKind.MOBILE),  # trunk prefix 0 before a mobile
        ("＋８６　１３８００１３８０００", "+8613800138000", PhoneKind.MOBILE),  # full-width, from Excel
        ("19912345678", "+8619912345678", PhoneKind.MOBILE),
        ("010-12345678", "+861012345678", PhoneKind.LANDLINE),
        ("(010) 1234 5678", "+861012345678", PhoneKind.LANDLINE),
        ("01012345678", "+861012345678", PhoneKind.LANDLINE),
        ("0755-88889999", "+8675588889999", PhoneKind.LANDLINE),
        ("075588889999", "+8675588889999", PhoneKind.LANDLINE),
        ("+86 755 8888 9999", "+8675588889999", PhoneKind.LANDLINE),
        ("021 6123 4567", "+862161234567", PhoneKind.LANDLINE),
        ("4008001234", "+864008001234", PhoneKind.SHARED_COST),
        ("400-800-1234", "+864008001234", PhoneKind.SHARED_COST),
        ("8008101234", "+868008101234", PhoneKind.TOLL_FREE),
        ("800-810-1234", "+868008101234", PhoneKind.TOLL_FREE),
    ],
)
def test_normalises_chinese_numbers_in_every_written_form(raw: str, e164: str, kind: PhoneKind) -> None:
    phone = parse_phone(raw)
    assert phone.e164 == e164
    assert phone.kind == kind
    assert normalise(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "abc",
        "12345",
        "anonymous",
        "unknown",
        "<unknown>",
        "14012345678",
        "1380013800",
        "138001380001",
        "+",
        "00",
        "0",
        "*#06#",
        "1" * 40,
        "\x00\xff",
        "10086",
    ],
)
def test_garbage_never_raises_from_normalise(raw: str) -> None:
    assert normalise(raw) is None
    with pytest.raises(InvalidPhone):
        parse_phone(raw)


def test_none_is_no_number() -> None:
    assert normalise(None) is None


def test_mobile_fast_path_agrees_with_phonenumbers() -> None:
    """The metadata-pattern fast path gives the same verdict as a full phonenumbers parse, on every
    37th 7-digit block from 130 0000 to 199 9999 (random subscriber part) plus random numbers."""
    rng = random.Random(7)
    blocks = [f"{p:07d}" + f"{rng.randint(0, 9999):04d}" for p in range(1_300_000, 2_000_000, 37)]
    randoms = ["1" + str(rng.randint(0, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(9)) for _ in range(3000)]
    for raw in blocks + randoms:
        try:
            number = phonenumbers.parse(raw, "CN")
        except phonenumbers.NumberParseException:
            expected = False
        else:
            expected = phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in (
                phonenumbers.PhoneNumberType.MOBILE,
            )
        try:
            fast = parse_phone(raw)
            fast_ok = fast.kind == PhoneKind.MOBILE
        except InvalidPhone:
            fast_ok = False
        assert fast_ok == expected, raw
        if fast_ok:
            assert fast == _parse_uncached(raw, "CN")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+8613800138000", "138****8000"),
        ("13800138000", "138****8000"),
        ("+861012345678", "010****5678"),
        ("+864008001234", "400***1234"),
        ("1234", "****"),
        ("", ""),
        (None, None),
    ],
)
def test_masks_the_middle_of_numbers(value: str | None, masked: str | None) -> None:
    assert mask_phone(value) == masked
