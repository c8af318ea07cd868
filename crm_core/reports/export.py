"""Reports as CSV or XLSX files named for the report and its period.

Reports hold aggregates, agent names and queue names only (no member data), so no field policy
applies; text cells are still guarded against spreadsheet formula injection, as every export is.
CSV is UTF-8 with a BOM so Excel opens Chinese text correctly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any, Literal

from openpyxl import Workbook

from crm_core.importers.tabular import excel_safe
from crm_core.reports.table import ReportTable

Format = Literal["csv", "xlsx"]
FORMATS: tuple[Format, ...] = ("csv", "xlsx")
CONTENT_TYPES: dict[Format, str] = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def filename(table: ReportTable, fmt: Format) -> str:
    """e.g. agent-performance_2026-11-01_2026-11-07.xlsx (inclusive local dates)."""
    return f"{table.name}_{table.period.label()}.{fmt}"


def _cells(table: ReportTable, row: dict[str, Any]) -> list[Any]:
    values = []
    for column in table.columns:
        value = row.get(column.key)
        values.append(excel_safe(value) if isinstance(value, str) else value)
    return values


def _lines(table: ReportTable, translate: Callable[[str], str]) -> list[list[Any]]:
    lines = [[c.header(translate) for c in table.columns]]
    lines.extend(_cells(table, row) for row in table.rows)
    if table.totals is not None:
        total = _cells(table, table.totals)
        total[0] = translate("Total")
        lines.append(total)
    return lines


def to_csv(table: ReportTable, translate: Callable[[str], str] = str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for line in _lines(table, translate):
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue().encode("utf-8-sig")


def to_xlsx(table: ReportTable, translate: Callable[[str], str] = str) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=table.name[:31])
    for line in _lines(table, translate):
        sheet.append(line)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def render(table: ReportTable, fmt: Format, translate: Callable[[str], str] = str) -> bytes:
    """CPU work: call it in an executor from async code (`asyncio.to_thread`)."""
    return to_csv(table, translate) if fmt == "csv" else to_xlsx(table, translate)
