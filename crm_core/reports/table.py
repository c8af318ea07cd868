"""What every report returns: named columns and plain rows, so one renderer, one JSON shape and one
exporter serve them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from crm_core.reports.period import Period

Kind = Literal["text", "count", "seconds", "percent", "number"]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str  # English msgid; the panel translates it, exports keep it as written
    kind: Kind = "count"
    detail: str | None = None  # a qualifier shown after the label ("Pause: lunch"), also a msgid

    def header(self, translate: Callable[[str], str] = str) -> str:
        text = translate(self.label) + (f": {translate(self.detail)}" if self.detail else "")
        return text + (" (%)" if self.kind == "percent" else "")


@dataclass(slots=True)
class ReportTable:
    name: str
    period: Period
    columns: list[Column]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # report-specific parts (the heat map grid)

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "from": self.period.start.isoformat(),
            "to": self.period.end.isoformat(),
            "timezone": self.period.timezone,
            "columns": [{"key": c.key, "label": c.header(), "kind": c.kind} for c in self.columns],
            "rows": self.rows,
            "totals": self.totals,
            **self.extra,
        }


def ratio(part: float | None, whole: float | None, *, scale: float = 1.0) -> float | None:
    """part / whole × scale rounded to 0.1, or None when there is nothing to divide by."""
    if not whole or part is None:
        return None
    return round(part / whole * scale, 1)


def seconds(value: float | None) -> float:
    return round(float(value or 0.0), 1)
