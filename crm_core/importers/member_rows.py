"""From a file row to a validated member: cell conversion, the fast validator, duplicates inside the file.

Why a second validator next to `MemberIn`: pydantic costs ~30 µs for a member with two contacts and
an address (measured on the CI machine, python 3.11, pydantic 2.14), which alone caps an import at
~30k rows/s before reading the file or touching the database. `validate_member` applies the same
rules by calling the same `crm_core.members.validation` functions in ~5 µs. It takes the exact
payload `MemberIn` takes, and `tests/db/test_import_members.py` checks that both accept and refuse
the same payloads and normalise them identically, so a rule added to `MemberIn` without being added
here fails that test.

Pure and synchronous: the importer runs `RowPreparer.prepare` in a worker thread, one batch at a time.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
import unicodedata
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from crm_core.importers.column_mapping import ColumnPlan
from crm_core.members import validation as v
from crm_core.members.validation import InvalidField

MAX_CONTACTS = 20  # MemberIn.contacts max_length
MAX_ADDRESSES = 10  # MemberIn.addresses max_length
CONTACT_NAME_MAX = 50
RELATION_MAX = 20
_MEMBER_NO = re.compile(r"[A-Z0-9][A-Z0-9_\-/.]{0,31}")
_DATE_SEPARATED = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
)
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_EXCEL_EPOCH = dt.date(1899, 12, 30)  # serial 1 = 1900-01-01 once Excel's phantom 1900-02-29 is accounted for
_CUSTOMER_TYPES_ENUM = {t.value: t for t in v.CustomerType}
_MEMBER_TYPES_ENUM = {t.value: t for t in v.MemberType}
_ID_TYPES_ENUM = {t.value: t for t in v.IdType}
_CONTACT_KINDS = frozenset({"mobile", "home", "work", "contact_person"})
_ADDRESS_KINDS = frozenset({"home", "work", "delivery"})
_CONTACT_KEYS = frozenset({"kind", "phone", "contact_name", "relation"})
_ADDRESS_KEYS = frozenset({"kind", "province", "city", "district", "detail", "postcode", "is_default"})
_SOURCES = {s: s for s in ("phone", "web", "store", "import", "other")}
_GENDER_VALUES = {"male": "male", "female": "female"}


def _key(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace(" ", "").lower()


def _vocabulary(table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {_key(word): value for value, words in table.items() for word in words}


GENDERS = _vocabulary(
    {
        "male": ("男", "男性", "先生", "m", "male", "man"),
        "female": ("女", "女性", "女士", "f", "female", "woman"),
    }
)
MEMBER_TYPES = _vocabulary(
    {
        "standard": ("普通", "普通卡", "普通会员", "普卡", "standard", "normal"),
        "gold": ("金卡", "金卡会员", "金", "gold"),
        "diamond": ("钻石卡", "钻石", "钻卡", "钻石会员", "钻石卡会员", "diamond"),
    }
)
ID_TYPES = _vocabulary(
    {
        "resident_id": ("身份证", "居民身份证", "二代身份证", "resident_id", "id_card"),
        "passport": ("护照", "passport"),
        "hk_macau_permit": ("港澳通行证", "港澳居民来往内地通行证", "回乡证", "hk_macau_permit"),
        "taiwan_permit": ("台湾通行证", "台胞证", "台湾居民来往大陆通行证", "taiwan_permit"),
        "other": ("其他", "其它", "other"),
    }
)

# Member columns `on_duplicate="update"` may change, as named in the payload (and in MemberIn).
UPDATABLE_FIELDS = ("name", "gender", "birthday", "id_type", "id_number", "email", "member_type", "remark", "mobile")
_UPDATABLE = frozenset(UPDATABLE_FIELDS)
_BIRTHDAY = frozenset({"birthday"})


@dataclass(frozen=True, slots=True)
class RowError:
    """One line of the error report: where (file row, header text), what was there, and why it was refused."""

    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class ContactValues:
    kind: str
    phone: str  # E.164
    contact_name: str | None
    relation: str | None


@dataclass(frozen=True, slots=True)
class AddressValues:
    kind: str
    province: str
    city: str
    district: str | None
    detail: str
    postcode: str | None
    is_default: bool


@dataclass(slots=True)
class ValidMember:
    """A row that passed every MemberIn rule, normalised (E.164 phones, enum values as str)."""

    name: str
    customer_type: str = "personal"
    member_type: str = "standard"
    mobile: str | None = None
    gender: str | None = None
    birthday: dt.date | None = None
    id_type: str | None = None
    id_number: str | None = None
    email: str | None = None
    source: str | None = None
    organisation_id: int | None = None
    remark: str | None = None
    contacts: list[ContactValues] = field(default_factory=list)
    addresses: list[AddressValues] = field(default_factory=list)

    def as_member_in_dump(self) -> dict[str, Any]:
        """The same shape as `MemberIn(...).model_dump()`, for the agreement test."""
        return {
            "name": self.name,
            "customer_type": self.customer_type,
            "member_type": self.member_type,
            "mobile": self.mobile,
            "gender": self.gender,
            "birthday": self.birthday,
            "id_type": self.id_type,
            "id_number": self.id_number,
            "email": self.email,
            "source": self.source,
            "organisation_id": self.organisation_id,
            "remark": self.remark,
            "contacts": [
                {"kind": c.kind, "phone": c.phone, "contact_name": c.contact_name, "relation": c.relation}
                for c in self.contacts
            ],
            "addresses": [
                {
                    "kind": a.kind,
                    "province": a.province,
                    "city": a.city,
                    "district": a.district,
                    "detail": a.detail,
                    "postcode": a.postcode,
                    "is_default": a.is_default,
                }
                for a in self.addresses
            ],
        }


def _opt_str(payload: Mapping[str, Any], key: str, path: str) -> str | None:
    """An optional text field, stripped as MemberIn's str_strip_whitespace does."""
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(path, "must be text")
    return value.strip()


def _sized(payload: Mapping[str, Any], key: str, path: str, low: int, high: int) -> str | None:
    """An optional text field with MemberIn's min_length/max_length (counted after stripping)."""
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(path, "must be text")
    value = value.strip()
    size = len(value)
    if size > high:
        raise InvalidField(path, f"longer than {high} characters ({size})")
    if size < low:
        raise InvalidField(path, "required" if not value else f"shorter than {low} characters")
    return value


def _one_of(payload: Mapping[str, Any], key: str, allowed: Mapping[str, Any], default: str | None) -> str | None:
    value = payload.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidField(key, f"must be one of {', '.join(allowed)}")
    return str(value)


def _choice(payload: Mapping[str, Any], key: str, allowed: Mapping[str, Any]) -> str:
    """A field with a default in MemberIn: absent means the default, but an explicit None is refused."""
    value = payload[key]
    if not isinstance(value, str) or value not in allowed:
        raise InvalidField(key, f"must be one of {', '.join(allowed)}")
    return str(value)


def _validate_contact(index: int, raw: Any) -> ContactValues:
    if not isinstance(raw, dict) or not raw.keys() <= _CONTACT_KEYS:
        raise InvalidField(f"contacts.{index}", "not a contact")
    kind = raw.get("kind")
    if kind not in _CONTACT_KINDS:
        raise InvalidField(f"contacts.{index}.kind", "must be mobile, home, work or contact_person")
    phone = raw.get("phone")
    if not isinstance(phone, str):
        raise InvalidField(f"contacts.{index}.phone", "required")
    phone = v.clean_phone(phone, f"contacts.{index}.phone")  # parse_phone strips, as MemberIn would first
    contact_name = _sized(raw, "contact_name", f"contacts.{index}.contact_name", 0, CONTACT_NAME_MAX)
    relation = _sized(raw, "relation", f"contacts.{index}.relation", 0, RELATION_MAX)
    if kind == "contact_person" and not contact_name:
        raise InvalidField(f"contacts.{index}.contact_name", "a contact person needs a name")
    return ContactValues(kind, phone, contact_name, relation)


def _validate_address(index: int, raw: Any) -> AddressValues:
    if not isinstance(raw, dict) or not raw.keys() <= _ADDRESS_KEYS:
        raise InvalidField(f"addresses.{index}", "not an address")
    kind = raw.get("kind", "home")
    if kind not in _ADDRESS_KINDS:
        raise InvalidField(f"addresses.{index}.kind", "must be home, work or delivery")
    province = _sized(raw, "province", f"addresses.{index}.province", 2, 20)
    city = _sized(raw, "city", f"addresses.{index}.city", 2, 20)
    district = _sized(raw, "district", f"addresses.{index}.district", 0, 20) if "district" in raw else None
    detail = _sized(raw, "detail", f"addresses.{index}.detail", 1, 200)
    if province is None or city is None or detail is None:
        missing = "province" if province is None else "city" if city is None else "detail"
        raise InvalidField(f"addresses.{index}.{missing}", "required")
    postcode = raw.get("postcode")
    if postcode is not None:
        if not isinstance(postcode, str):
            raise InvalidField(f"addresses.{index}.postcode", "must be text")
        postcode = v.clean_postcode(postcode, f"addresses.{index}.postcode")
    is_default = raw.get("is_default", False)
    if not isinstance(is_default, bool):
        raise InvalidField(f"addresses.{index}.is_default", "must be true or false")
    return AddressValues(kind, province, city, district, detail, postcode, is_default)


def validate_member(payload: Mapping[str, Any], today: dt.date | None = None) -> ValidMember:
    """The rules of `crm_core.members.schemas.MemberIn`, without pydantic; raises InvalidField.

    Accepts the payload MemberIn accepts (plain Python values); the first failing field is reported.
    Written for speed (it runs once per imported row): few calls, absent fields cost one lookup.
    """
    if not payload.keys() <= _PAYLOAD_KEYS:  # a keys view compares without building a set
        raise InvalidField(sorted(set(payload) - _PAYLOAD_KEYS)[0], "unknown field")
    get = payload.get
    raw_name = get("name")
    if not isinstance(raw_name, str):
        raise InvalidField("name", "required")
    name = v.clean_name(raw_name)  # clean_name collapses all whitespace, so it strips too
    customer_type = (
        _choice(payload, "customer_type", _CUSTOMER_TYPES_ENUM) if "customer_type" in payload else "personal"
    )
    member_type = _choice(payload, "member_type", _MEMBER_TYPES_ENUM) if "member_type" in payload else "standard"
    mobile = get("mobile")
    if mobile is not None:
        if not isinstance(mobile, str):
            raise InvalidField("mobile", "must be text")
        mobile = v.clean_mobile(mobile, "mobile") if mobile.strip() else None
    gender = _one_of(payload, "gender", _GENDER_VALUES, None) if "gender" in payload else None
    birthday = get("birthday")
    if (
        birthday is not None
        and birthday.__class__ is not dt.date
        and (not isinstance(birthday, dt.date) or isinstance(birthday, dt.datetime))
    ):
        raise InvalidField("birthday", "must be a date")
    id_type = _one_of(payload, "id_type", _ID_TYPES_ENUM, None) if "id_type" in payload else None
    id_number = _opt_str(payload, "id_number", "id_number") if "id_number" in payload else None
    email = get("email")
    if email is not None:
        if not isinstance(email, str):
            raise InvalidField("email", "must be text")
        email = v.clean_email(email, "email") if email.strip() else None
    source = _one_of(payload, "source", _SOURCES, None) if "source" in payload else None
    organisation_id = get("organisation_id")
    if organisation_id is not None and (not isinstance(organisation_id, int) or isinstance(organisation_id, bool)):
        raise InvalidField("organisation_id", "must be an integer")
    remark = _sized(payload, "remark", "remark", 0, v.REMARK_MAX) if "remark" in payload else None
    raw_contacts = get("contacts")
    contacts: list[ContactValues] = []
    if raw_contacts:
        if len(raw_contacts) > MAX_CONTACTS:
            raise InvalidField("contacts", f"more than {MAX_CONTACTS} contacts")
        contacts = [_validate_contact(i, c) for i, c in enumerate(raw_contacts)]
    raw_addresses = get("addresses")
    addresses: list[AddressValues] = []
    if raw_addresses:
        if len(raw_addresses) > MAX_ADDRESSES:
            raise InvalidField("addresses", f"more than {MAX_ADDRESSES} addresses")
        addresses = [_validate_address(i, a) for i, a in enumerate(raw_addresses)]
    # MemberIn._identity (model validator): runs only once every field is valid, as in pydantic.
    if id_number and id_type is None:
        raise InvalidField("id_type", "id_type is required with id_number")
    if id_type is not None and id_number:
        id_number = v.clean_id_number(_ID_TYPES_ENUM[id_type], id_number, "id_number")
        if id_type == "resident_id":
            encoded = v.resident_id_birthday(id_number)
            if birthday is None:
                birthday = encoded
            elif birthday != encoded:
                raise InvalidField("birthday", "birthday does not match the resident ID number")
    if birthday is not None and birthday > (today or dt.date.today()):
        raise InvalidField("birthday", "birthday is in the future")
    return ValidMember(
        name,
        customer_type,
        member_type,
        mobile,
        gender,
        birthday,
        id_type,
        id_number,
        email,
        source,
        organisation_id,
        remark,
        contacts,
        addresses,
    )


_PAYLOAD_KEYS = frozenset(
    {
        "name",
        "customer_type",
        "member_type",
        "mobile",
        "gender",
        "birthday",
        "id_type",
        "id_number",
        "email",
        "source",
        "organisation_id",
        "remark",
        "contacts",
        "addresses",
    }
)


# ---------------------------------------------------------------- cells


def cell_text(cell: Any) -> str:
    """A cell as trimmed text; XLSX numbers lose Excel's ".0" (a mobile typed as a number is 13800138000.0)."""
    if cell is None:
        return ""
    if isinstance(cell, str):
        return cell.strip()
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, dt.datetime):
        return cell.date().isoformat() if cell.time() == dt.time() else cell.isoformat(sep=" ")
    return str(cell).strip()


@lru_cache(maxsize=65_536)
def parse_date_text(text: str) -> dt.date:
    """2024-01-31, 2024/1/31, 2024.1.31, 2024年1月31日, 20240131 (a trailing time is allowed); cached
    because birthdays repeat (a million members share ~30k distinct dates)."""
    match = _DATE_SEPARATED.fullmatch(text) or _DATE_COMPACT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a date: {text!r} (use e.g. 2024-01-31, 2024/1/31 or 20240131)")
    year, month, day = (int(part) for part in match.groups())
    try:
        return dt.date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"not a real date: {text!r}") from exc


def cell_date(cell: Any) -> dt.date:
    """A date from a typed XLSX cell, an Excel serial number, or text."""
    if cell.__class__ is str:
        return parse_date_text(cell)
    if isinstance(cell, dt.datetime):
        return cell.date()
    if isinstance(cell, dt.date):
        return cell
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        if not 1 <= cell < 2_958_466:
            raise ValueError(f"not a date: {cell!r}")
        return _EXCEL_EPOCH + dt.timedelta(days=int(cell))
    return parse_date_text(cell_text(cell))


# ---------------------------------------------------------------- rows


@dataclass(slots=True)
class ImportRow:
    """A validated file row on its way to the database."""

    row: int
    member: ValidMember
    member_no: str | None  # as given in the file (upper-cased); None → generated at insert
    given: frozenset[str]  # member fields the row supplies (the ones `update` may change)


@dataclass(slots=True)
class PreparedBatch:
    rows: list[ImportRow]
    errors: list[RowError]
    rows_read: int  # data rows read (blank lines are never counted)


class RowPreparer:
    """Turns file rows into ImportRows, refusing bad rows and duplicates inside the file.

    Keeps the first row of every mobile and member number seen so far (about 100 bytes a row): a
    million-row file costs ~100 MB here, the only state that grows with the file.
    """

    def __init__(self, plan: ColumnPlan, today: dt.date | None = None) -> None:
        self.plan = plan
        self.today = today or dt.date.today()
        self._index = [(name, position) for name, position in plan.index.items()]
        self._names = tuple(plan.index)
        positions = tuple(plan.index.values())
        # itemgetter picks every mapped cell in one C call (a tuple even for a single column).
        self._pick = operator.itemgetter(*positions) if len(positions) > 1 else lambda row: (row[positions[0]],)
        self._width = max(positions) + 1
        self._mobiles: dict[int, int] = {}
        self._member_nos: dict[str, int] = {}

    @property
    def file_numbers(self) -> Container[str]:
        """The member numbers accepted from the file so far (a live view, read by the writer)."""
        return self._member_nos.keys()

    def prepare(self, rows: Sequence[tuple[int, Sequence[Any]]]) -> PreparedBatch:
        good: list[ImportRow] = []
        errors: list[RowError] = []
        for row_no, cells in rows:
            outcome = self._one(row_no, cells)
            if isinstance(outcome, RowError):
                errors.append(outcome)
            else:
                good.append(outcome)
        return PreparedBatch(good, errors, len(rows))

    def cells(self, cells: Sequence[Any]) -> dict[str, Any]:
        """Field → stripped text for the non-empty cells (a typed XLSX birthday stays a date or number)."""
        if len(cells) >= self._width:
            try:  # the CSV case, all text: strip and drop empties in one comprehension
                return {
                    name: cell
                    for name, cell in zip(self._names, map(str.strip, self._pick(cells)), strict=True)
                    if cell
                }
            except TypeError:
                pass  # a typed XLSX cell (number, date, None)
        width = len(cells)
        values: dict[str, Any] = {}
        for name, position in self._index:
            if position < width:
                cell = cells[position]
                if cell.__class__ is str:
                    cell = cell.strip()
                    if cell:
                        values[name] = cell
                elif cell is not None:
                    text = cell_text(cell)
                    if text:
                        values[name] = cell if name == "birthday" else text
        return values

    def _error(self, row_no: int, field_name: str, values: Mapping[str, Any], reason: str) -> RowError:
        if field_name in ("id_number", "id_type") and "resident_id_number" in self.plan.index:
            field_name = "resident_id_number"
        return RowError(row_no, self.plan.column_of(field_name), cell_text(values.get(field_name)), reason)

    def _one(self, row_no: int, cells: Sequence[Any]) -> ImportRow | RowError:
        values = self.cells(cells)
        try:
            payload, sources = build_payload(values)
        except InvalidField as exc:
            return self._error(row_no, exc.field, values, exc.reason)
        try:
            member = validate_member(payload, self.today)
        except InvalidField as exc:
            return self._error(row_no, field_for_path(exc.field, sources), values, exc.reason)
        member_no = payload_member_no(values)
        if isinstance(member_no, RowError):
            return RowError(row_no, self.plan.column_of("member_no"), member_no.value, member_no.reason)
        mobile_key = int(member.mobile[1:]) if member.mobile is not None else None
        if mobile_key is None and member_no is None:
            return self._error(row_no, "mobile", values, "required: a member needs a mobile (关键信息缺失)")
        if mobile_key is not None:
            first = self._mobiles.get(mobile_key)
            if first is not None:
                return self._error(row_no, "mobile", values, f"duplicate in file, first at row {first}")
        if member_no is not None:
            first = self._member_nos.get(member_no)
            if first is not None:
                return self._error(row_no, "member_no", values, f"duplicate in file, first at row {first}")
            self._member_nos[member_no] = row_no
        if mobile_key is not None:
            self._mobiles[mobile_key] = row_no
        given = _UPDATABLE.intersection(payload)
        if member.id_type == "resident_id" and member.birthday is not None:
            given |= _BIRTHDAY  # derived from the ID number, as MemberIn does
        return ImportRow(row_no, member, member_no, given)


def payload_member_no(values: Mapping[str, Any]) -> str | RowError | None:
    cell = values.get("member_no")
    if cell is None:
        return None
    text = cell_text(cell).upper()
    if not text:
        return None
    if not _MEMBER_NO.fullmatch(text):
        return RowError(0, "member_no", cell_text(cell), "member number must be 1-32 letters, digits or - _ / .")
    return text


def _lookup(vocabulary: Mapping[str, str], cell: Any, field_name: str, allowed: str) -> str:
    text = cell if cell.__class__ is str else cell_text(cell)
    found = vocabulary.get(text)
    if found is None:
        found = vocabulary.get(_key(text))
    if found is None:
        raise InvalidField(field_name, f"unknown value {text!r}; use {allowed}")
    return found


def build_payload(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Cells (from RowPreparer.cells: text, except a typed birthday) → the MemberIn payload, plus which
    file field each contact came from (for error columns).

    Only conversions happen here (男 → male, 金卡 → gold, dates); every rule is in validate_member.
    Empty cells are left out, so MemberIn defaults apply and `update` never blanks a stored value.
    """
    get = values.get
    payload: dict[str, Any] = {"name": get("name", ""), "source": "import"}
    for key in ("mobile", "email", "remark"):
        if key in values:
            payload[key] = values[key]
    if "gender" in values:
        payload["gender"] = _lookup(GENDERS, values["gender"], "gender", "男/女")
    if "member_type" in values:
        payload["member_type"] = _lookup(MEMBER_TYPES, values["member_type"], "member_type", "普通/金卡/钻石卡")
    if "birthday" in values:
        try:
            payload["birthday"] = cell_date(values["birthday"])
        except ValueError as exc:
            raise InvalidField("birthday", str(exc)) from exc
    if "resident_id_number" in values:
        payload["id_type"] = "resident_id"
        payload["id_number"] = values["resident_id_number"]
    else:
        if "id_type" in values:
            payload["id_type"] = _lookup(ID_TYPES, values["id_type"], "id_type", "身份证/护照/港澳通行证/台胞证/其他")
        if "id_number" in values:
            payload["id_number"] = values["id_number"]
    sources: list[str] = []
    if "home_phone" in values or "work_phone" in values or "contact_phone" in values or "contact_name" in values:
        contacts: list[dict[str, Any]] = []
        if "home_phone" in values:
            contacts.append({"kind": "home", "phone": values["home_phone"]})
            sources.append("home_phone")
        if "work_phone" in values:
            contacts.append({"kind": "work", "phone": values["work_phone"]})
            sources.append("work_phone")
        if "contact_phone" in values:
            person: dict[str, Any] = {"kind": "contact_person", "phone": values["contact_phone"]}
            if "contact_name" in values:
                person["contact_name"] = values["contact_name"]
            if "contact_relation" in values:
                person["relation"] = values["contact_relation"]
            contacts.append(person)
            sources.append("contact_phone")
        elif "contact_name" in values:
            raise InvalidField("contact_phone", "required for a contact person")
        payload["contacts"] = contacts
    elif "contact_relation" in values:
        raise InvalidField("contact_phone", "required for a contact person")
    if "province" in values or "city" in values or "address" in values or "district" in values or "postcode" in values:
        address: dict[str, Any] = {
            "kind": "home",
            "province": get("province", ""),
            "city": get("city", ""),
            "detail": get("address", ""),
            "is_default": True,
        }
        if "district" in values:
            address["district"] = values["district"]
        if "postcode" in values:
            address["postcode"] = values["postcode"]
        payload["addresses"] = [address]
    return payload, sources


_ADDRESS_FIELDS = {"detail": "address"}
_CONTACT_FIELDS = {"contact_name": "contact_name", "relation": "contact_relation"}


def field_for_path(path: str, contact_sources: Sequence[str]) -> str:
    """The import field behind a validator path such as "contacts.1.phone" or "addresses.0.detail"."""
    parts = path.split(".")
    if parts[0] == "contacts" and len(parts) == 3:
        if parts[2] == "phone":
            return contact_sources[int(parts[1])]
        return _CONTACT_FIELDS.get(parts[2], parts[2])
    if parts[0] == "addresses" and len(parts) == 3:
        return _ADDRESS_FIELDS.get(parts[2], parts[2])
    return parts[0]
