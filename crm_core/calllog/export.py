"""Export of a filtered call-log review as CSV (streamed) or XLSX (capped).

One more exit for call data, so it goes through the same gates as the review page: the visibility
clause picks the calls, `review.call_row` masks the numbers and names per the field policy, and a
column whose field the role has hidden is left out (`columns_for`), as in the members export. Times are
written in settings.timezone (what the reader's wall clock said), durations in whole seconds.

CSV is produced page by page (keyset pages of 1,000 rows, each in its own short read session), so
memory stays one page whatever the result size. XLSX has to be a finished zip before the first byte
can go out; it is written through openpyxl's write-only mode into a temporary file off the event
loop and capped at XLSX_MAX_ROWS rows (a spreadsheet of more calls than that is not read by anyone;
the CSV has no cap). A capped workbook says so in its last row.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import tempfile
import zoneinfo
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.review import CallFilter, iter_review_rows
from crm_core.importers.tabular import excel_safe
from crm_core.security.policy import Level, Principal

XLSX_MAX_ROWS = 100_000
PAGE_ROWS = 1_000
HEADER = (
    "call_id",
    "started_at",
    "direction",
    "caller",
    "callee",
    "dnis",
    "queue",
    "agent",
    "member_id",
    "member_name",
    "wait_s",
    "talk_s",
    "wrapup_s",
    "outcome",
    "disposition",
    "transfers",
    "has_recording",
    "linkedid",
)
# Text a person typed or chose: guarded against spreadsheet formula injection.
_FREE_TEXT = frozenset({"agent", "member_name", "disposition"})
# Columns that carry a policy field: left out (not blanked) for a role that has the field hidden.
_POLICY_FIELDS = {"caller": ("contact", "phone"), "callee": ("contact", "phone"), "member_name": ("member", "name")}


def columns_for(principal: Principal) -> tuple[str, ...]:
    """The export's columns for this reader, as the members export does with `visible_columns`."""
    return tuple(
        name for name in HEADER if name not in _POLICY_FIELDS or principal.level(*_POLICY_FIELDS[name]) > Level.HIDDEN
    )


def _seconds(value: float | None) -> int | None:
    return None if value is None else round(value)


def export_cells(row: dict[str, Any], zone: zoneinfo.ZoneInfo, columns: tuple[str, ...] = HEADER) -> list[Any]:
    """One call as the cells of an export line, in `columns` order."""
    from datetime import datetime

    started = datetime.fromisoformat(row["started_at"]).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    values: dict[str, Any] = {
        "call_id": row["id"],
        "started_at": started,
        "direction": row["direction"],
        "caller": row["caller"],
        "callee": row["callee"],
        "dnis": row["dnis"],
        "queue": row["queue"],
        "agent": row["agent_name"],
        "member_id": row["member_id"],
        "member_name": row["member_name"],
        "wait_s": _seconds(row["wait_s"]),
        "talk_s": _seconds(row["talk_s"]),
        "wrapup_s": _seconds(row["wrapup_s"]),
        "outcome": row["outcome"],
        "disposition": row["disposition"],
        "transfers": row["transfers"],
        "has_recording": "yes" if row["has_recording"] else "no",
        "linkedid": row["linkedid"],
    }
    return [values[name] for name in columns]


def _csv_text(rows: list[list[Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(
        [
            "" if v is None else excel_safe(v) if name in _FREE_TEXT else v
            for name, v in zip(columns, cells, strict=True)
        ]
        for cells in rows
    )
    return buffer.getvalue()


async def csv_chunks(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, spec: CallFilter, *, timezone: str
) -> AsyncIterator[bytes]:
    """The CSV as UTF-8 chunks, a BOM first (so Excel reads the Chinese), then one chunk per page."""
    zone = zoneinfo.ZoneInfo(timezone)
    columns = columns_for(principal)
    yield codecs.BOM_UTF8 + _csv_text([list(columns)], columns).encode()
    async for page in iter_review_rows(sessions, principal, spec, timezone=timezone, page_rows=PAGE_ROWS):
        yield _csv_text([export_cells(r, zone, columns) for r in page], columns).encode()


class _Workbook:
    """openpyxl write-only workbook; every cell is text, so a "=…" name is no formula and a number
    like 13800138000 stays as typed."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        self.path = path
        self.book = Workbook(write_only=True)
        self.sheet = self.book.create_sheet("calls")
        self.cell: Callable[..., Any] = WriteOnlyCell
        self.sheet.append(list(columns))

    def _text(self, value: Any) -> Any:
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        if value is None:
            return None
        cell = self.cell(self.sheet, value=ILLEGAL_CHARACTERS_RE.sub("", str(value)))
        cell.data_type = "s"
        return cell

    def write(self, rows: list[list[Any]]) -> None:
        for cells in rows:
            self.sheet.append([self._text(v) for v in cells])

    def close(self) -> None:
        self.book.save(self.path)


async def write_xlsx(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    spec: CallFilter,
    *,
    timezone: str,
    max_rows: int = XLSX_MAX_ROWS,
) -> tuple[Path, int, bool]:
    """Write the workbook to a temporary file; returns (path, rows written, whether capped). The
    caller streams the file and deletes it."""
    zone = zoneinfo.ZoneInfo(timezone)
    columns = columns_for(principal)
    path = await asyncio.to_thread(_temporary_path)
    try:
        book = await asyncio.to_thread(_Workbook, path, columns)
        count = fetched = 0
        # One row past the cap tells a capped export from one that has exactly max_rows calls.
        async for page in iter_review_rows(
            sessions, principal, spec, timezone=timezone, page_rows=PAGE_ROWS, max_rows=max_rows + 1
        ):
            fetched += len(page)
            kept = page[: max_rows - count]
            if kept:
                await asyncio.to_thread(book.write, [export_cells(r, zone, columns) for r in kept])
            count += len(kept)
        capped = fetched > max_rows
        if capped:
            await asyncio.to_thread(book.write, [[f"capped at {max_rows} rows: narrow the filter or export CSV"]])
        await asyncio.to_thread(book.close)
    except BaseException:
        await asyncio.to_thread(path.unlink, True)
        raise
    return path, count, capped


def _temporary_path() -> Path:
    with tempfile.NamedTemporaryFile(prefix="calls-", suffix=".xlsx", delete=False) as handle:
        return Path(handle.name)
