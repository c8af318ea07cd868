"""`cti export members`: every member a user may see, as that user may see it, in CSV or XLSX.

An export is one more exit for member data, so it goes through the same two gates as the API and the
screen pop: the user's data scope (`scope_filter`) picks the rows, the field policy picks and masks
the columns (`visible_columns` drops hidden ones; `apply_field_policy` masks, e.g. an agent gets
110***********1234 for an ID number and 138****8000 for a secondary phone).

Columns carry the importer's field names, so an export can be edited and imported back
(`status`, `card_no` and `created_at` are informational and ignored by the importer). Phones are
written in national form (13800138000, 01012345678), the way staff type them.

Memory stays flat whatever the member count: keyset pagination over members.id, one short read
transaction per page (on SQLite every transaction takes the write lock, so a long read would stop
the call centre's writes), and the file is written page by page from a worker thread (XLSX through
openpyxl's write-only mode). The file appears under its name only when complete.
"""

from __future__ import annotations

import asyncio
import csv
import os
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import make_engine, make_sessionmaker
from crm_core.importers.tabular import excel_safe
from crm_core.members.models import Address, Card, Member, MemberContact
from crm_core.phones import InvalidPhone, parse_phone
from crm_core.security.policy import Principal, apply_field_policy, visible_columns
from crm_core.security.service import AuthenticationFailed, principal_by_username, scope_filter
from crm_core.settings import Settings

PAGE_ROWS = 1_000

# (column header, policy entity, policy field), in file order.
EXPORT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("member_no", "member", "member_no"),
    ("name", "member", "name"),
    ("mobile", "member", "mobile"),
    ("gender", "member", "gender"),
    ("birthday", "member", "birthday"),
    ("id_type", "member", "id_type"),
    ("id_number", "member", "id_number"),
    ("email", "member", "email"),
    ("member_type", "member", "member_type"),
    ("status", "member", "status"),
    ("home_phone", "contact", "phone"),
    ("work_phone", "contact", "phone"),
    ("contact_name", "contact", "contact_name"),
    ("contact_phone", "contact", "phone"),
    ("province", "address", "province"),
    ("city", "address", "city"),
    ("district", "address", "district"),
    ("address", "address", "detail"),
    ("postcode", "address", "postcode"),
    ("card_no", "card", "card_no"),
    ("remark", "member", "remark"),
    ("created_at", "member", "created_at"),
)
# Free text a member or clerk typed: guarded against spreadsheet formula injection in CSV.
_FREE_TEXT = frozenset({"name", "email", "contact_name", "province", "city", "district", "address", "remark"})
_SECONDARY_KINDS = ("home", "work", "contact_person")
_LIST_SEPARATOR = "; "


class ExportRefused(ValueError):
    """The export cannot run for this user (unknown or inactive); nothing is written."""


def display_phone(e164: str | None) -> str | None:
    """National form for CN numbers (what staff type and Excel users expect), E.164 otherwise."""
    if not e164:
        return e164
    if e164.startswith("+861") and len(e164) == 14:
        return e164[3:]  # a mobile: no trunk prefix, no parsing needed
    try:
        phone = parse_phone(e164)
    except InvalidPhone:
        return e164
    return phone.national.replace(" ", "") if phone.region == "CN" else phone.e164


class _Layout:
    """The columns this principal may see and how to fill them from one member's records."""

    def __init__(self, principal: Principal, timezone: str) -> None:
        self.principal = principal
        self.zone = zoneinfo.ZoneInfo(timezone)
        visible: dict[str, set[str]] = defaultdict(set)
        for entity in {entity for _, entity, _ in EXPORT_COLUMNS}:
            fields = [f for _, e, f in EXPORT_COLUMNS if e == entity]
            visible[entity] = set(visible_columns(principal, entity, fields))
        self.columns = [(header, entity, f) for header, entity, f in EXPORT_COLUMNS if f in visible[entity]]
        self.header = [header for header, _, _ in self.columns]

    def _shown(self, entity: str, values: dict[str, Any]) -> dict[str, Any]:
        return apply_field_policy(self.principal, entity, values)

    def row(
        self,
        member: Any,
        contacts: Sequence[Any],
        address: Any | None,
        card_no: str | None,
    ) -> dict[str, Any]:
        cells: dict[str, Any] = {}
        member_view = self._shown(
            "member",
            {
                "member_no": member.member_no,
                "name": member.name,
                "mobile": display_phone(member.mobile_e164),
                "gender": member.gender,
                "birthday": member.birthday.isoformat() if member.birthday else None,
                "id_type": member.id_type,
                "id_number": member.id_number,
                "email": member.email,
                "member_type": member.member_type,
                "status": member.status,
                "remark": member.remark,
                "created_at": member.created_at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        cells.update(member_view)
        phones: dict[str, list[str]] = {"home": [], "work": [], "contact_person": []}
        names: list[str] = []
        for contact in contacts:
            shown = self._shown("contact", {"phone": display_phone(contact.phone_e164)})
            phones[contact.kind].append(shown.get("phone") or "")
            if contact.kind == "contact_person":
                names.append(
                    self._shown("contact", {"contact_name": contact.contact_name or ""}).get("contact_name", "")
                )
        cells["home_phone"] = _LIST_SEPARATOR.join(phones["home"]) or None
        cells["work_phone"] = _LIST_SEPARATOR.join(phones["work"]) or None
        cells["contact_phone"] = _LIST_SEPARATOR.join(phones["contact_person"]) or None
        cells["contact_name"] = _LIST_SEPARATOR.join(names) or None
        if address is not None:
            shown_address = self._shown(
                "address",
                {
                    "province": address.province,
                    "city": address.city,
                    "district": address.district,
                    "detail": address.detail,
                    "postcode": address.postcode,
                },
            )
            cells.update({"address" if k == "detail" else k: v for k, v in shown_address.items()})
        if card_no is not None:
            cells.update(self._shown("card", {"card_no": card_no}))
        return {header: cells.get(header) for header in self.header}


async def _page(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, layout: _Layout, after_id: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of members after `after_id`, with their secondary phones, default address and card."""
    async with sessions() as session:
        members = (
            (
                await session.execute(
                    select(Member)
                    .where(Member.id > after_id, scope_filter(principal, Member.owner_user_id, Member.org_unit_id))
                    .order_by(Member.id)
                    .limit(PAGE_ROWS)
                )
            )
            .scalars()
            .all()
        )
        if not members:
            return [], after_id
        ids = [m.id for m in members]
        contacts: dict[int, list[Any]] = defaultdict(list)
        for contact in await session.execute(
            select(MemberContact.member_id, MemberContact.kind, MemberContact.phone_e164, MemberContact.contact_name)
            .where(
                MemberContact.member_id.in_(ids),
                MemberContact.is_primary.is_(False),
                MemberContact.kind.in_(_SECONDARY_KINDS),
            )
            .order_by(MemberContact.member_id, MemberContact.id)
        ):
            contacts[contact.member_id].append(contact)
        addresses: dict[int, Any] = {}
        for address in await session.execute(
            select(Address)
            .where(Address.member_id.in_(ids))
            .order_by(Address.member_id, Address.is_default.desc(), Address.id)
        ):
            addresses.setdefault(address[0].member_id, address[0])
        cards: dict[int, str] = {}
        for member_id, card_no in await session.execute(
            select(Card.member_id, Card.card_no)
            .where(Card.member_id.in_(ids), Card.status == "active")
            .order_by(Card.id)
        ):
            cards.setdefault(member_id, card_no)
    rows = [layout.row(m, contacts.get(m.id, ()), addresses.get(m.id), cards.get(m.id)) for m in members]
    return rows, ids[-1]


class _CsvSink:
    """UTF-8 with a BOM so Excel opens the Chinese correctly; free text guarded against formulas."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self._stream: IO[str] = path.open("w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._stream)
        self._writer.writerow(header)
        self._header = header

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._writer.writerows(
            [
                "" if value is None else excel_safe(value) if name in _FREE_TEXT else value
                for name, value in ((h, row[h]) for h in self._header)
            ]
            for row in rows
        )

    def close(self) -> None:
        self._stream.close()


class _XlsxSink:
    """openpyxl write-only workbook; every value is written as a text cell, so Excel neither runs a
    name starting with "=" as a formula nor turns an ID or phone number into 1.10101E+17."""

    def __init__(self, path: Path, header: list[str]) -> None:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        self._path = path
        self._book = Workbook(write_only=True)
        self._sheet = self._book.create_sheet("members")
        self._cell: Callable[..., Any] = WriteOnlyCell
        self._header = header
        self._sheet.append(header)

    def _text(self, value: Any) -> Any:
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        if value is None:
            return None
        cell = self._cell(self._sheet, value=ILLEGAL_CHARACTERS_RE.sub("", str(value)))
        cell.data_type = "s"
        return cell

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._sheet.append([self._text(row[h]) for h in self._header])

    def close(self) -> None:
        self._book.save(self._path)


async def export_members(
    settings: Settings, output: Path, *, fmt: Literal["csv", "xlsx"] | str = "csv", username: str
) -> int:
    """Write the members `username` may see to `output`; returns how many were written."""
    if fmt not in ("csv", "xlsx"):
        raise ValueError(f"format must be csv or xlsx, not {fmt!r}")
    output = Path(output)
    engine = make_engine(settings.database_url)
    try:
        sessions = make_sessionmaker(engine)
        try:
            async with sessions() as session:
                principal = await principal_by_username(session, username)
        except AuthenticationFailed as exc:
            raise ExportRefused(str(exc)) from exc
        layout = _Layout(principal, settings.timezone)
        partial = output.with_name(output.name + ".part")
        sink: _CsvSink | _XlsxSink
        if fmt == "xlsx":
            sink = await asyncio.to_thread(_XlsxSink, partial, layout.header)
        else:
            sink = await asyncio.to_thread(_CsvSink, partial, layout.header)
        count = 0
        try:
            after_id = 0
            while True:
                rows, after_id = await _page(sessions, principal, layout, after_id)
                if not rows:
                    break
                await asyncio.to_thread(sink.write, rows)
                count += len(rows)
            await asyncio.to_thread(sink.close)
        except BaseException:
            await asyncio.to_thread(_discard, sink, partial)
            raise
        await asyncio.to_thread(os.replace, partial, output)
        return count
    finally:
        await engine.dispose()


def _discard(sink: _CsvSink | _XlsxSink, partial: Path) -> None:
    try:
        sink.close()
    finally:
        partial.unlink(missing_ok=True)
